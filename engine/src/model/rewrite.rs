//! What the user's two ways out of a one-way folder's differences rewrite (Syncthing's
//! "Override Changes" and "Revert Local Changes"), decided one name at a time.
//!
//! - **Override** (send-only): what is on disk here becomes the newest version everywhere.
//!   A local entry that is out of sync is re-recorded with a version that has seen the
//!   global one plus one change by this device; a name only others have gets a tombstone of
//!   the same kind, so peers delete it.
//! - **Revert** (receive-only): local changes give way to the global version. A changed
//!   local entry gets an empty version, so the puller replaces it (keeping the local file
//!   as a version); a file that exists only here leaves the disk (to the versions
//!   directory).

use peerfold_protocol::DeviceId;
use peerfold_protocol::version::{CounterExhausted, Ordering, VersionVector};

use super::entry::FileEntry;
use super::view::NameView;

/// Which of the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderAction {
    /// Send-only: this device's state wins everywhere.
    Override,
    /// Receive-only: local changes give way.
    Revert,
}

/// What happens to one name.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    /// The entry to record.
    pub entry: FileEntry,
    /// Its new version.
    pub version: VersionVector,
    /// The file leaves the disk (to the versions directory) before the entry is recorded.
    pub remove_from_disk: bool,
}

/// An override that cannot outdate the global version of a name: this device's counter in
/// it is at the end of its range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot override {name:?}: {source}")]
pub struct CannotOutdate {
    /// The name.
    pub name: String,
    /// The counter that cannot advance.
    pub source: CounterExhausted,
}

/// The rewrite `action` makes of one name, if any. `me` is this device; `now` is the time
/// (Unix seconds) its version counters advance to.
pub fn rewrite(
    action: FolderAction,
    view: &NameView<'_>,
    me: DeviceId,
    now: u64,
) -> Result<Option<Rewrite>, CannotOutdate> {
    match action {
        FolderAction::Override => override_name(view, me, now),
        FolderAction::Revert => Ok(revert_name(view)),
    }
}

fn override_name(
    view: &NameView<'_>,
    me: DeviceId,
    now: u64,
) -> Result<Option<Rewrite>, CannotOutdate> {
    let Some(global) = view.remote_global() else {
        return Ok(None);
    };
    let (entry, seen) = match view.local() {
        Some(local)
            if !local.invalid
                && !matches!(
                    local.version.compare(&global.entry.version),
                    Ordering::Equal | Ordering::Newer
                ) =>
        {
            (local.clone(), local.version.merge(&global.entry.version))
        }
        // Only others have it: it goes, everywhere.
        None if !global.entry.deleted => (tombstone_of(global.entry), global.entry.version.clone()),
        _ => return Ok(None),
    };
    match seen.incremented(me.short(), now) {
        Ok(version) => Ok(Some(Rewrite {
            entry,
            version,
            remove_from_disk: false,
        })),
        Err(source) => Err(CannotOutdate {
            name: entry.name,
            source,
        }),
    }
}

fn revert_name(view: &NameView<'_>) -> Option<Rewrite> {
    let local = view.local().filter(|l| !l.invalid)?;
    match view.remote_global() {
        Some(global)
            if !matches!(
                local.version.compare(&global.entry.version),
                Ordering::Equal | Ordering::Older
            ) =>
        {
            Some(Rewrite {
                entry: local.clone(),
                version: VersionVector::new(),
                remove_from_disk: false,
            })
        }
        Some(_) => None,
        None if !local.deleted => Some(Rewrite {
            entry: tombstone_of(local),
            version: VersionVector::new(),
            remove_from_disk: true,
        }),
        None => None,
    }
}

/// The deletion of `entry`'s name.
pub fn tombstone_of(entry: &FileEntry) -> FileEntry {
    FileEntry {
        deleted: true,
        size: 0,
        blocks: Vec::new(),
        ..entry.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::{FileKind, Timestamp};

    const ME: DeviceId = DeviceId::from_bytes([1; 32]);
    const PEER: DeviceId = DeviceId::from_bytes([2; 32]);
    const NOW: u64 = 1_700_000_000;

    fn entry(version: VersionVector) -> FileEntry {
        FileEntry {
            name: "f".into(),
            kind: FileKind::File,
            size: 3,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            sequence: 1,
            version,
            modified_by: ME.short(),
            symlink_target: String::new(),
            blocks: Vec::new(),
        }
    }

    #[test]
    fn override_outdates_the_peers_version_and_deletes_what_only_they_have() {
        let theirs = VersionVector::new().incremented(PEER.short(), 1).unwrap();
        let mine = VersionVector::new().incremented(ME.short(), 1).unwrap();
        let both = vec![(ME, entry(mine.clone())), (PEER, entry(theirs.clone()))];
        let r = rewrite(FolderAction::Override, &NameView::new(&both, ME), ME, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(r.version.compare(&theirs), Ordering::Newer);
        assert_eq!(r.version.compare(&mine), Ordering::Newer);
        let only_theirs = vec![(PEER, entry(theirs.clone()))];
        let r = rewrite(
            FolderAction::Override,
            &NameView::new(&only_theirs, ME),
            ME,
            NOW,
        )
        .unwrap()
        .unwrap();
        assert!(r.entry.deleted && !r.remove_from_disk);
        assert_eq!(r.version.compare(&theirs), Ordering::Newer);
        // The counter follows the clock.
        assert_eq!(r.version.counter(ME.short()), NOW);
        let agreed = vec![(ME, entry(theirs.clone())), (PEER, entry(theirs))];
        assert_eq!(
            rewrite(FolderAction::Override, &NameView::new(&agreed, ME), ME, NOW),
            Ok(None)
        );
    }

    #[test]
    fn an_override_past_the_end_of_the_counters_is_an_error() {
        let theirs: VersionVector = [(PEER.short(), 1), (ME.short(), u64::MAX)]
            .into_iter()
            .collect();
        let mine = VersionVector::new().incremented(ME.short(), 1).unwrap();
        let both = vec![(ME, entry(mine)), (PEER, entry(theirs))];
        assert_eq!(
            rewrite(FolderAction::Override, &NameView::new(&both, ME), ME, NOW),
            Err(CannotOutdate {
                name: "f".into(),
                source: CounterExhausted { device: ME.short() }
            })
        );
    }

    #[test]
    fn revert_empties_local_changes_and_removes_local_only_files() {
        let theirs = VersionVector::new().incremented(PEER.short(), 1).unwrap();
        let changed = theirs.clone().incremented(ME.short(), 1).unwrap();
        let both = vec![(ME, entry(changed)), (PEER, entry(theirs.clone()))];
        let r = rewrite(FolderAction::Revert, &NameView::new(&both, ME), ME, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(r.version, VersionVector::new());
        assert!(!r.remove_from_disk);
        let only_mine = vec![(
            ME,
            entry(VersionVector::new().incremented(ME.short(), 1).unwrap()),
        )];
        let r = rewrite(
            FolderAction::Revert,
            &NameView::new(&only_mine, ME),
            ME,
            NOW,
        )
        .unwrap()
        .unwrap();
        assert!(r.entry.deleted && r.remove_from_disk);
        let behind = vec![(ME, entry(VersionVector::new())), (PEER, entry(theirs))];
        assert_eq!(
            rewrite(FolderAction::Revert, &NameView::new(&behind, ME), ME, NOW),
            Ok(None)
        );
    }
}
