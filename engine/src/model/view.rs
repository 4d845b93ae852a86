//! One name as every device announced it: this device's entry, the others', and the
//! global version among them. The planner, the counts, the folder actions and the file
//! info all start from this view.

use peerfold_protocol::DeviceId;

use super::entry::FileEntry;
use super::planner::{self, Announced};

/// Every device's entry for one name (this device's among them, if it has one).
#[derive(Clone, Copy, Debug)]
pub struct NameView<'a> {
    entries: &'a [(DeviceId, FileEntry)],
    me: DeviceId,
}

impl<'a> NameView<'a> {
    /// The entries of one name; `me` is this device.
    pub fn new(entries: &'a [(DeviceId, FileEntry)], me: DeviceId) -> Self {
        Self { entries, me }
    }

    /// This device's entry.
    pub fn local(&self) -> Option<&'a FileEntry> {
        self.of(self.me)
    }

    /// `device`'s entry.
    pub fn of(&self, device: DeviceId) -> Option<&'a FileEntry> {
        self.entries
            .iter()
            .find(|(d, _)| *d == device)
            .map(|(_, e)| e)
    }

    /// The other devices' entries.
    pub fn remote(&self) -> Vec<Announced<'a>> {
        self.announced(|d| d != self.me)
    }

    /// Every device's entry, this device's included.
    pub fn all(&self) -> Vec<Announced<'a>> {
        self.announced(|_| true)
    }

    /// The global version among every device's entries.
    pub fn global(&self) -> Option<Announced<'a>> {
        planner::global(&self.all())
    }

    /// The global version among the other devices' entries only.
    pub fn remote_global(&self) -> Option<Announced<'a>> {
        planner::global(&self.remote())
    }

    /// Whether every other device announced exactly this device's version.
    pub fn all_agree(&self) -> bool {
        self.local().is_some_and(|local| {
            self.remote()
                .iter()
                .all(|r| r.entry.version == local.version)
        })
    }

    /// Devices other than this one that announced exactly `entry`'s version.
    pub fn holders_of(&self, entry: &FileEntry) -> Vec<DeviceId> {
        self.remote()
            .iter()
            .filter(|r| r.entry.version == entry.version)
            .map(|r| r.device)
            .collect()
    }

    fn announced(&self, keep: impl Fn(DeviceId) -> bool) -> Vec<Announced<'a>> {
        self.entries
            .iter()
            .filter(|(device, _)| keep(*device))
            .map(|(device, entry)| Announced {
                device: *device,
                entry,
            })
            .collect()
    }
}
