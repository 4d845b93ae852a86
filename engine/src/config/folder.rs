//! One shared folder's settings, with Syncthing's name for each in its doc.

use std::collections::BTreeMap;
use std::path::PathBuf;

use peerfold_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use super::{
    FolderType, Invalid, PullOrder, UnusedSettings, default_true, device_ids, is_false, is_true,
};

/// One shared folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    /// The ID, the same on every device.
    pub id: String,
    /// A human name.
    #[serde(default)]
    pub label: String,
    /// The folder's root on this device.
    pub path: PathBuf,
    /// Send-receive, send-only or receive-only.
    #[serde(default, rename = "type")]
    pub folder_type: FolderType,
    /// Devices the folder is shared with.
    #[serde(default, with = "device_ids")]
    pub devices: Vec<DeviceId>,
    /// Seconds between full rescans while the daemon runs (`rescanIntervalS`).
    #[serde(default = "default_rescan_interval")]
    pub rescan_interval_s: u64,
    /// Keep files that sync replaces or deletes in `.peerfold/versions/` (trash-can style).
    #[serde(default = "default_true")]
    pub versioning: bool,
    /// Days a kept version stays before it is cleaned out (0: forever); for staggered
    /// versioning, its maximum age.
    #[serde(default = "default_versions_max_age")]
    pub versions_max_age_days: u64,
    /// How versions are kept (Syncthing's versioning types).
    #[serde(default, skip_serializing_if = "VersioningType::is_default")]
    pub versioning_type: VersioningType,
    /// Versions kept per file by simple versioning (Syncthing's `keep`).
    #[serde(
        default = "default_versions_keep",
        skip_serializing_if = "is_default_keep"
    )]
    pub versions_keep: u32,
    /// Paused: not scanned, watched or synced, and not offered to peers, until resumed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Watch the folder for changes (`fsWatcherEnabled`); off, the periodic rescan alone
    /// notices them.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub watch: bool,
    /// Seconds the folder must be quiet after a change before it is rescanned
    /// (`fsWatcherDelayS`); unset: a quarter of a second, 40 ms after a finished change
    /// (`disk::watch::Quiet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_delay_s: Option<f64>,
    /// Permission bits are neither announced nor applied (`ignorePerms`): for file systems
    /// without them, or devices whose users should not share modes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_permissions: bool,
    /// Peers' deletions are not carried out here (`ignoreDelete`): the file stays, and so
    /// does this device's entry for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_delete: bool,
    /// The order files are pulled in (`order`).
    #[serde(default, skip_serializing_if = "PullOrder::is_default")]
    pub pull_order: PullOrder,
    /// Conflict copies kept per file (`maxConflicts`): -1 keeps all; beyond the limit the
    /// oldest copies move to `.peerfold/versions/`, and with 0 the losing version goes
    /// there directly. Nothing is deleted.
    #[serde(
        default = "default_max_conflicts",
        skip_serializing_if = "is_unlimited"
    )]
    pub max_conflicts: i64,
    /// Pulling waits while the folder's file system has less free space than this
    /// (`minDiskFree`).
    #[serde(default, skip_serializing_if = "MinDiskFree::is_default")]
    pub min_disk_free: MinDiskFree,
    /// Syncthing's folder settings peerfold keeps for its clients but does not use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unused_syncthing_settings: UnusedSettings,
}

impl FolderConfig {
    /// A send-receive folder with default settings, shared with nobody yet.
    pub fn new(id: String, label: String, path: PathBuf) -> Self {
        Self {
            id,
            label,
            path,
            folder_type: FolderType::SendReceive,
            devices: Vec::new(),
            rescan_interval_s: default_rescan_interval(),
            versioning: true,
            versions_max_age_days: default_versions_max_age(),
            versioning_type: VersioningType::default(),
            versions_keep: default_versions_keep(),
            paused: false,
            watch: true,
            watch_delay_s: None,
            ignore_permissions: false,
            ignore_delete: false,
            pull_order: PullOrder::default(),
            max_conflicts: default_max_conflicts(),
            min_disk_free: MinDiskFree::default(),
            unused_syncthing_settings: UnusedSettings::new(),
        }
    }

    /// Rules the types alone do not hold.
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(delay) = self.watch_delay_s
            && !(delay > 0.0 && delay <= 3600.0)
        {
            return Err(Invalid(format!(
                "folder {:?}: the watch delay must be more than 0 and at most 3600 seconds, not {delay}",
                self.id
            )));
        }
        if self.versions_keep == 0 {
            return Err(Invalid(format!(
                "folder {:?}: simple versioning must keep at least one version",
                self.id
            )));
        }
        if self.max_conflicts < -1 {
            return Err(Invalid(format!(
                "folder {:?}: maxConflicts must be -1 (keep all), 0 or more, not {}",
                self.id, self.max_conflicts
            )));
        }
        self.min_disk_free
            .check()
            .map_err(|Invalid(e)| Invalid(format!("folder {:?}: {e}", self.id)))
    }

    /// Whether the two differ in anything the engine acts on (not only in
    /// [`Self::unused_syncthing_settings`]).
    pub(crate) fn differs_in_effect(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.unused_syncthing_settings.clear();
        let mut b = other.clone();
        b.unused_syncthing_settings.clear();
        a != b
    }
}

/// The free space a folder's file system must keep (Syncthing's `minDiskFree`): a
/// percentage of its size, or an amount in kB, MB, GB or TB (powers of 1000, as Syncthing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinDiskFree {
    /// How much.
    pub value: f64,
    /// `%`, `kB`, `MB`, `GB` or `TB`.
    pub unit: String,
}

impl Default for MinDiskFree {
    fn default() -> Self {
        Self {
            value: 1.0,
            unit: "%".to_owned(),
        }
    }
}

impl MinDiskFree {
    const UNITS: [(&'static str, f64); 5] = [
        ("%", 0.0),
        ("kB", 1e3),
        ("MB", 1e6),
        ("GB", 1e9),
        ("TB", 1e12),
    ];

    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn check(&self) -> Result<(), Invalid> {
        if !self.value.is_finite() || self.value < 0.0 {
            return Err(Invalid(format!(
                "minDiskFree must be 0 or more, not {}",
                self.value
            )));
        }
        if self.unit == "%" && self.value > 100.0 {
            return Err(Invalid(format!(
                "minDiskFree of {}% is more than the whole disk",
                self.value
            )));
        }
        if !Self::UNITS.iter().any(|(unit, _)| *unit == self.unit) {
            return Err(Invalid(format!(
                "minDiskFree unit {:?} is not one of %, kB, MB, GB, TB",
                self.unit
            )));
        }
        Ok(())
    }

    /// The bytes that must stay free on a file system of `total` bytes.
    pub fn required_bytes(&self, total: u64) -> u64 {
        let bytes = match Self::UNITS.iter().find(|(unit, _)| *unit == self.unit) {
            Some(("%", _)) => total as f64 * self.value / 100.0,
            Some((_, factor)) => self.value * factor,
            None => 0.0,
        };
        // `as` saturates: a huge value asks for everything, never wraps.
        bytes.ceil() as u64
    }
}

fn default_versions_max_age() -> u64 {
    30
}

fn default_versions_keep() -> u32 {
    5
}

fn is_default_keep(keep: &u32) -> bool {
    *keep == default_versions_keep()
}

/// How a folder keeps the versions sync replaces or deletes (when it keeps them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersioningType {
    /// The last version of each file (`.peerfold/versions/NAME`).
    #[default]
    Trashcan,
    /// The newest `versions_keep` versions of each file, tagged with when they were kept.
    Simple,
    /// Versions thinned out with age (one per 30 s in the first hour, per hour in the first
    /// day, per day in the first 30 days, then per week), up to the maximum age.
    Staggered,
}

impl VersioningType {
    /// Syncthing's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trashcan => "trashcan",
            Self::Simple => "simple",
            Self::Staggered => "staggered",
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_rescan_interval() -> u64 {
    3600
}

fn default_max_conflicts() -> i64 {
    -1
}

fn is_unlimited(value: &i64) -> bool {
    *value == -1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_rules() {
        let percent = MinDiskFree::default();
        assert_eq!(percent.required_bytes(1_000_000), 10_000);
        let gb = MinDiskFree {
            value: 2.5,
            unit: "GB".into(),
        };
        assert_eq!(gb.required_bytes(0), 2_500_000_000);
        assert!(gb.check().is_ok());
        for bad in [(-1.0, "%"), (101.0, "%"), (1.0, "GiB"), (f64::NAN, "MB")] {
            let rule = MinDiskFree {
                value: bad.0,
                unit: bad.1.into(),
            };
            assert!(rule.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_used_settings_make_a_difference() {
        let a = FolderConfig::new("f".into(), String::new(), "/f".into());
        let mut b = a.clone();
        b.unused_syncthing_settings
            .insert("copiers".into(), "2".into());
        assert!(!a.differs_in_effect(&b));
        b.ignore_delete = true;
        assert!(a.differs_in_effect(&b));
    }
}
