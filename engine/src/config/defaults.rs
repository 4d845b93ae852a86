//! Syncthing's `defaults` section: what new folders and devices start with, and where
//! auto-accepted folders go.

use std::path::PathBuf;

use peerfold_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use super::{DeviceConfig, FolderConfig, expand_tilde};

/// Defaults for new items (Syncthing's `defaults` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Where auto-accepted folders go: each one in a directory named after its label (or
    /// ID) under this path. `~` is the user's home directory.
    #[serde(default = "default_folder_path")]
    pub folder_path: String,
    /// The settings a new folder starts with (Syncthing's `defaults.folder`; its ID, label,
    /// path and devices are not used). None: peerfold's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<FolderConfig>,
    /// Ignore patterns a folder added through the API starts with (`defaults.ignores`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignores: Vec<String>,
    /// The settings a new device starts with (Syncthing's `defaults.device`; its ID is
    /// not used). None: peerfold's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceConfig>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            folder_path: default_folder_path(),
            folder: None,
            ignores: Vec::new(),
            device: None,
        }
    }
}

impl Defaults {
    /// The folder path with `~` expanded.
    pub fn folder_root(&self) -> Option<PathBuf> {
        expand_tilde(&self.folder_path)
    }

    /// A new folder: the default folder's settings with this ID, label and path, shared
    /// with nobody yet.
    pub fn new_folder(&self, id: String, label: String, path: PathBuf) -> FolderConfig {
        match &self.folder {
            Some(template) => FolderConfig {
                id,
                label,
                path,
                devices: Vec::new(),
                ..template.clone()
            },
            None => FolderConfig::new(id, label, path),
        }
    }

    /// A new device: the default device's settings with this ID (nobody introduced it).
    pub fn new_device(&self, id: DeviceId) -> Option<DeviceConfig> {
        self.device.as_ref().map(|template| DeviceConfig {
            id,
            introduced_by: None,
            ..template.clone()
        })
    }
}

fn default_folder_path() -> String {
    "~".to_owned()
}
