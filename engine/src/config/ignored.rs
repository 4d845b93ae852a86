//! What the user chose to ignore: devices that knock, folders a device offers.

use peerfold_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use super::device_id;

/// A device whose connections are turned away without being recorded as pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoredDevice {
    /// Its device ID.
    #[serde(with = "device_id")]
    pub id: DeviceId,
    /// The name it gave when it was ignored.
    #[serde(default)]
    pub name: String,
    /// Where it connected from.
    #[serde(default)]
    pub address: String,
    /// When it was ignored (RFC 3339).
    #[serde(default)]
    pub time: String,
}

/// A folder a device offers that is not recorded as pending (Syncthing's `ignoredFolders`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoredFolder {
    /// The folder ID.
    pub id: String,
    /// Its label as offered.
    #[serde(default)]
    pub label: String,
    /// When it was ignored (RFC 3339).
    #[serde(default)]
    pub time: String,
}
