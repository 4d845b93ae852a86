//! The running folders, by ID. Starting a folder's tasks is the engine's job; this only
//! keeps the map.

use std::collections::HashMap;
use std::sync::RwLock;

use peerfold_protocol::DeviceId;

use super::FolderHandle;

/// The running folders.
#[derive(Debug, Default)]
pub(crate) struct FolderRegistry {
    // Held for map lookups and updates only; a poisoned lock still holds a whole map.
    folders: RwLock<HashMap<String, FolderHandle>>,
}

impl FolderRegistry {
    /// The running folder `id`.
    pub(crate) fn get(&self, id: &str) -> Option<FolderHandle> {
        self.folders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every running folder, in ID order.
    pub(crate) fn all(&self) -> Vec<FolderHandle> {
        let mut all: Vec<FolderHandle> = self
            .folders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Running folders shared with `device`, in ID order.
    pub(crate) fn shared_with(&self, device: DeviceId) -> Vec<FolderHandle> {
        self.all()
            .into_iter()
            .filter(|f| f.shares_with(device))
            .collect()
    }

    /// Registers a started folder (replacing one with the same ID, which must be stopped).
    pub(crate) fn insert(&self, folder: FolderHandle) {
        self.folders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(folder.id.clone(), folder);
    }

    /// Stops the folder's tasks and forgets it; its files and index stay.
    pub(crate) fn stop(&self, id: &str) {
        let removed = self
            .folders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(folder) = removed {
            folder.stop.cancel();
        }
    }

    /// Stops every folder (shutdown).
    pub(crate) fn stop_all(&self) {
        let all: Vec<FolderHandle> = self
            .folders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, f)| f)
            .collect();
        for folder in all {
            folder.stop.cancel();
        }
    }
}
