//! A folder's counts as status and the REST API show them: what one device has, what the
//! global version holds, and what that device still needs, from every device's entries.

use peerfold_protocol::DeviceId;

use super::entry::{FileEntry, FileKind};
use super::view::NameView;

/// Entries by kind, and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Deletions (tombstones).
    pub deleted: u64,
    /// Bytes of the files.
    pub bytes: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, entry: &FileEntry) {
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
    pub fn items(&self) -> u64 {
        self.files + self.directories + self.symlinks
    }
}

/// One folder's counts from one device's point of view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FolderSummary {
    /// What the device has (deletions counted apart).
    pub local: Counts,
    /// The global version of every name.
    pub global: Counts,
    /// What the device lacks of the global version; `deleted` counts deletions it has
    /// not carried out yet.
    pub need: Counts,
}

impl FolderSummary {
    /// Syncthing's completion percentage: the share of global bytes the device has.
    pub fn completion(&self) -> f64 {
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

/// Adds one name to the summaries of `devices` (same order): the full walk the counters
/// are checked against.
#[cfg(test)]
pub(crate) fn add_name(view: &NameView<'_>, devices: &[DeviceId], summaries: &mut [FolderSummary]) {
    let global = view.global();
    for (device, summary) in devices.iter().zip(summaries) {
        let theirs = view.of(*device);
        if let Some(e) = theirs.filter(|e| !e.invalid) {
            summary.local.add(e);
        }
        let Some(g) = &global else { continue };
        summary.global.add(g.entry);
        if let Some(needed) = needs(view, *device) {
            if needed.deleted {
                summary.need.deleted += 1;
            } else {
                summary.need.add(needed);
            }
        }
    }
}

/// Signed changes to [`Counts`], summed as entries change and added to the counters the
/// store keeps (`store::tally`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountsDelta {
    /// Regular files.
    pub files: i64,
    /// Directories.
    pub directories: i64,
    /// Symlinks.
    pub symlinks: i64,
    /// Deletions.
    pub deleted: i64,
    /// Bytes of the files.
    pub bytes: i64,
}

impl CountsDelta {
    /// Adds (`sign` 1) or takes away (`sign` -1) `counts`.
    pub fn add(&mut self, counts: &Counts, sign: i64) {
        self.files += sign * counts.files as i64;
        self.directories += sign * counts.directories as i64;
        self.symlinks += sign * counts.symlinks as i64;
        self.deleted += sign * counts.deleted as i64;
        self.bytes += sign * counts.bytes as i64;
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) another delta.
    pub fn merge(&mut self, other: &CountsDelta, sign: i64) {
        self.files += sign * other.files;
        self.directories += sign * other.directories;
        self.symlinks += sign * other.symlinks;
        self.deleted += sign * other.deleted;
        self.bytes += sign * other.bytes;
    }

    /// Whether it changes nothing.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// What one name adds to a folder's counters. A device with no entry for a name needs its
/// global version unless that is a deletion, so the counters keep the global counts and,
/// per device that has an entry, its local counts and how its need differs from that
/// default (`need_fix`): a device's need is then the global counts without deletions plus
/// its fix, and a name costs the counters only the devices that announced it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTally {
    /// The global version's counts.
    pub global: Counts,
    /// Per device with an entry: (device, local counts, need minus the default need).
    pub devices: Vec<(DeviceId, Counts, CountsDelta)>,
}

/// The tally of one name, from every device's entry for it.
pub fn name_tally(entries: &[(DeviceId, FileEntry)]) -> NameTally {
    // `me` does not matter: the global version and needs depend on the entries alone.
    let me = entries
        .first()
        .map_or(DeviceId::from_bytes([0; 32]), |(d, _)| *d);
    let view = NameView::new(entries, me);
    let mut tally = NameTally::default();
    let mut default_need = Counts::default();
    // Once per name, not per device: this runs twice for every row written.
    let global = view.global().map(|g| g.entry);
    if let Some(g) = global {
        tally.global.add(g);
        if !g.deleted {
            default_need.add(g);
        }
    }
    for (device, entry) in entries {
        let mut local = Counts::default();
        if !entry.invalid {
            local.add(entry);
        }
        let mut need = Counts::default();
        if let Some(g) = global.filter(|g| lacks(g, Some(entry))) {
            if g.deleted {
                need.deleted += 1;
            } else {
                need.add(g);
            }
        }
        let mut fix = CountsDelta::default();
        fix.add(&need, 1);
        fix.add(&default_need, -1);
        tally.devices.push((*device, local, fix));
    }
    tally
}

/// A device's summary from the folder's counters: `global`, its own `local` counts and
/// `need_fix` (both zero for a device that announced nothing).
pub fn summary_from_counters(
    global: Counts,
    local: Counts,
    need_fix: CountsDelta,
) -> FolderSummary {
    let need = |default: u64, fix: i64| default.saturating_add_signed(fix);
    FolderSummary {
        local,
        global,
        need: Counts {
            files: need(global.files, need_fix.files),
            directories: need(global.directories, need_fix.directories),
            symlinks: need(global.symlinks, need_fix.symlinks),
            deleted: need(0, need_fix.deleted),
            bytes: need(global.bytes, need_fix.bytes),
        },
    }
}

/// The global version of the name, if `device` lacks it: a file, directory or symlink it
/// does not have at that version, or a deletion it has not carried out.
pub fn needs<'a>(view: &NameView<'a>, device: DeviceId) -> Option<&'a FileEntry> {
    let global = view.global()?.entry;
    lacks(global, view.of(device)).then_some(global)
}

/// Whether a device whose entry is `theirs` lacks `global`.
fn lacks(global: &FileEntry, theirs: Option<&FileEntry>) -> bool {
    let has_it = theirs.is_some_and(|t| t.version == global.version);
    if global.deleted {
        theirs.is_some_and(|t| !t.deleted && !has_it)
    } else {
        !has_it
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::Timestamp;
    use peerfold_protocol::version::VersionVector;

    const A: DeviceId = DeviceId::from_bytes([1; 32]);
    const B: DeviceId = DeviceId::from_bytes([2; 32]);

    fn file(size: u64, version: VersionVector) -> FileEntry {
        FileEntry {
            name: "f".into(),
            kind: FileKind::File,
            size,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            sequence: 1,
            version,
            modified_by: A.short(),
            symlink_target: String::new(),
            blocks: Vec::new(),
        }
    }

    #[test]
    fn a_device_behind_needs_the_newer_version() {
        let old = VersionVector::new().incremented(A.short(), 1).unwrap();
        let new = old.clone().incremented(B.short(), 1).unwrap();
        let entries = vec![(A, file(10, old)), (B, file(20, new))];
        let view = NameView::new(&entries, A);
        let mut summaries = [FolderSummary::default(); 2];
        add_name(&view, &[A, B], &mut summaries);
        assert_eq!(summaries[0].need.files, 1);
        assert_eq!(summaries[0].need.bytes, 20);
        assert_eq!(summaries[1].need, Counts::default());
        assert_eq!(summaries[1].completion(), 100.0);
        assert_eq!(summaries[0].completion(), 0.0);
        assert_eq!(summaries[0].global.bytes, 20);
        assert_eq!(summaries[0].local.bytes, 10);
    }
}
