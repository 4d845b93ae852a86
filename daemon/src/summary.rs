//! A folder's counts as `peerfold status` and the REST API show them: what one device has,
//! what the global version holds, and what that device still needs.

use peerfold_protocol::DeviceId;

use crate::daemon::{Folder, Shared};
use crate::index::{FileEntry, FileKind};
use crate::planner::{self, Announced};
use crate::store::StoreError;

/// Entries by kind, and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) files: u64,
    pub(crate) directories: u64,
    pub(crate) symlinks: u64,
    pub(crate) deleted: u64,
    pub(crate) bytes: u64,
}

impl Counts {
    fn add(&mut self, entry: &FileEntry) {
        if entry.deleted {
            self.deleted += 1;
            return;
        }
        match entry.kind {
            FileKind::File => self.files += 1,
            FileKind::Directory => self.directories += 1,
            FileKind::Symlink => self.symlinks += 1,
        }
        self.bytes += entry.size;
    }

    /// Files, directories and symlinks (not deletions).
    pub(crate) fn items(&self) -> u64 {
        self.files + self.directories + self.symlinks
    }
}

/// One folder's counts from one device's point of view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FolderSummary {
    /// What the device has (deletions counted apart).
    pub(crate) local: Counts,
    /// The global version of every name.
    pub(crate) global: Counts,
    /// What the device lacks of the global version; `deleted` counts deletions it has
    /// not carried out yet.
    pub(crate) need: Counts,
}

impl FolderSummary {
    /// Syncthing's completion percentage: the share of global bytes the device has.
    pub(crate) fn completion(&self) -> f64 {
        if self.global.bytes == 0 {
            if self.need.items() + self.need.deleted == 0 {
                100.0
            } else {
                95.0
            }
        } else {
            100.0 * (1.0 - self.need.bytes as f64 / self.global.bytes as f64)
        }
    }
}

/// This device's view of the folder.
pub(crate) fn folder_summary(
    shared: &Shared,
    folder: &Folder,
) -> Result<FolderSummary, StoreError> {
    device_summary(shared, folder, shared.me)
}

/// `device`'s view of the folder, from what it announced (this device's own entries for
/// `shared.me`). Walks the index on a read-only connection of its own, so the walk does
/// not hold up the writer.
pub(crate) fn device_summary(
    shared: &Shared,
    folder: &Folder,
    device: DeviceId,
) -> Result<FolderSummary, StoreError> {
    let mut summary = FolderSummary::default();
    let reader = shared.store().reader()?;
    reader.for_each_name(folder.idx, shared.me, |entries| {
        let theirs = entries.iter().find(|(d, _)| *d == device).map(|(_, e)| e);
        if let Some(e) = theirs.filter(|e| !e.invalid) {
            summary.local.add(e);
        }
        let candidates: Vec<Announced<'_>> = entries
            .iter()
            .map(|(device, entry)| Announced {
                device: *device,
                entry,
            })
            .collect();
        if let Some(g) = planner::global(&candidates) {
            summary.global.add(g.entry);
            let has_it = theirs.is_some_and(|t| t.version == g.entry.version);
            if g.entry.deleted {
                if theirs.is_some_and(|t| !t.deleted && !has_it) {
                    summary.need.deleted += 1;
                }
            } else if !has_it {
                summary.need.add(g.entry);
            }
        }
        Ok::<(), StoreError>(())
    })?;
    Ok(summary)
}
