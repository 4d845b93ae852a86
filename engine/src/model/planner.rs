//! The sync planner: what this device must do about one name to reach the global version.
//!
//! Pure: entries in, an [`Action`] out. The puller carries actions out against disk and
//! network; nothing here touches either. Every device applies the same rules to the same
//! entries, so they all pick the same global version and the same conflict-copy names.
//!
//! - The **global version** of a name is the newest among all devices' valid entries. When
//!   several are concurrent, the winner is: a modification over a deletion, then the newer
//!   modification time, then the higher device short ID of the last modifier, then the
//!   content (block hashes), then the version vector in a fixed total order (so the choice
//!   never depends on the order the entries arrived in).
//! - A device **needs** the name when its own entry is older than the global one. When its
//!   entry is concurrent with the global one and lost, the local version is kept as a
//!   conflict copy before the global one replaces it; the entry then recorded carries the
//!   merge of both version vectors, since it has seen both lines of history.
//! - Send-only folders never take remote changes: they report them as out of sync.
//!   Receive-only folders never take their own changes as the truth: the global version is
//!   chosen among the other devices only, and a local change is kept and reported until the
//!   user reverts it.

use std::cmp::Ordering as CmpOrdering;

use peerfold_protocol::DeviceId;
use peerfold_protocol::version::Ordering;

use crate::model::FolderType;
use crate::model::entry::{FileEntry, FileKind, Timestamp};

/// One device's entry for a name.
#[derive(Clone, Copy, Debug)]
pub struct Announced<'a> {
    /// The device that announced it.
    pub device: DeviceId,
    /// Its entry.
    pub entry: &'a FileEntry,
}

/// What to do about one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The local entry already is the global version.
    Nothing,
    /// Write the file's content (blocks from local files where possible, else from peers).
    Fetch {
        /// The version to reach.
        target: FileEntry,
        /// Devices that announced exactly this version.
        sources: Vec<DeviceId>,
    },
    /// The content is already here; only permissions or modification time change.
    UpdateMetadata {
        /// The version to reach.
        target: FileEntry,
    },
    /// Create (or replace with) a directory.
    CreateDirectory {
        /// The version to reach.
        target: FileEntry,
    },
    /// Create (or replace with) a symlink.
    CreateSymlink {
        /// The version to reach.
        target: FileEntry,
    },
    /// Remove the local file, directory or symlink.
    Delete {
        /// The tombstone to record.
        target: FileEntry,
    },
    /// The local version lost a conflict: move it to `copy_name`, then carry out `then`.
    Conflict {
        /// Where the local version goes.
        copy_name: String,
        /// What reaches the global version afterwards.
        then: Box<Action>,
    },
    /// A send-only folder holds an older or conflicting version than its peers: reported,
    /// never applied.
    OutOfSync,
    /// A receive-only folder holds a local change: kept and reported until reverted.
    LocallyChanged,
}

impl Action {
    /// The name the action is about, if it changes anything.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Fetch { target, .. }
            | Self::UpdateMetadata { target }
            | Self::CreateDirectory { target }
            | Self::CreateSymlink { target }
            | Self::Delete { target } => Some(&target.name),
            Self::Conflict { then, .. } => then.name(),
            Self::Nothing | Self::OutOfSync | Self::LocallyChanged => None,
        }
    }

    /// The version the action reaches, if it changes anything.
    pub fn target(&self) -> Option<&FileEntry> {
        match self {
            Self::Fetch { target, .. }
            | Self::UpdateMetadata { target }
            | Self::CreateDirectory { target }
            | Self::CreateSymlink { target }
            | Self::Delete { target } => Some(target),
            Self::Conflict { then, .. } => then.target(),
            Self::Nothing | Self::OutOfSync | Self::LocallyChanged => None,
        }
    }

    /// Whether it downloads content.
    pub fn fetches(&self) -> bool {
        match self {
            Self::Fetch { .. } => true,
            Self::Conflict { then, .. } => then.fetches(),
            _ => false,
        }
    }

    /// Whether it removes the local file (after keeping a conflict copy, maybe).
    pub fn is_delete(&self) -> bool {
        match self {
            Self::Delete { .. } => true,
            Self::Conflict { then, .. } => then.is_delete(),
            _ => false,
        }
    }
}

mod order;
pub use order::order;

/// The global version among `candidates` (invalid entries do not count).
pub fn global<'a>(candidates: &[Announced<'a>]) -> Option<Announced<'a>> {
    let valid: Vec<Announced<'a>> = candidates
        .iter()
        .copied()
        .filter(|c| !c.entry.invalid)
        .collect();
    // The maximal entries: those no other entry is newer than.
    let maximal = valid.iter().copied().filter(|c| {
        !valid
            .iter()
            .any(|other| other.entry.version.compare(&c.entry.version) == Ordering::Newer)
    });
    maximal.max_by(|a, b| conflict_order(a.entry, b.entry))
}

/// Decides what this device does about one name, given its own entry (if any) and the
/// entries other devices announced for it.
pub fn plan(
    folder_type: FolderType,
    local: Option<&FileEntry>,
    remote: &[Announced<'_>],
    this_device: DeviceId,
) -> Action {
    let mut candidates: Vec<Announced<'_>> = remote.to_vec();
    if folder_type != FolderType::ReceiveOnly
        && let Some(entry) = local
    {
        candidates.push(Announced {
            device: this_device,
            entry,
        });
    }
    // Names ignored here are not synced at all.
    if local.is_some_and(|l| l.invalid) {
        return Action::Nothing;
    }
    let Some(global) = global(&candidates) else {
        return Action::Nothing;
    };
    if folder_type == FolderType::SendOnly {
        let in_sync = match local {
            Some(l) => matches!(
                l.version.compare(&global.entry.version),
                Ordering::Equal | Ordering::Newer
            ),
            None => global.entry.deleted,
        };
        return if in_sync {
            Action::Nothing
        } else {
            Action::OutOfSync
        };
    }
    let sources = || -> Vec<DeviceId> {
        remote
            .iter()
            .filter(|c| !c.entry.invalid)
            .filter(|c| c.entry.version == global.entry.version)
            .map(|c| c.device)
            .collect()
    };
    let Some(local) = local else {
        return reach(global.entry, None, sources);
    };
    match local.version.compare(&global.entry.version) {
        Ordering::Equal => Action::Nothing,
        // Only possible in receive-only folders, whose local entry is not a candidate.
        Ordering::Newer => Action::LocallyChanged,
        Ordering::Older => reach(global.entry, Some(local), sources),
        Ordering::Concurrent => match folder_type {
            FolderType::ReceiveOnly => Action::LocallyChanged,
            // Returned above; kept so the match stays exhaustive.
            FolderType::SendOnly => Action::OutOfSync,
            FolderType::SendReceive => {
                // The result has seen both versions: recording the merged vector keeps
                // stale copies of the losing line from resurfacing as new conflicts.
                let mut resolved = global.entry.clone();
                resolved.version = global.entry.version.merge(&local.version);
                let then = reach(&resolved, Some(local), sources);
                if local.deleted || same_content(local, global.entry) {
                    // Nothing of the local version is lost by replacing it.
                    then
                } else {
                    Action::Conflict {
                        copy_name: conflict_copy_name(local),
                        then: Box::new(then),
                    }
                }
            }
        },
    }
}

/// The action that turns `local` into `target` on disk.
fn reach(
    target: &FileEntry,
    local: Option<&FileEntry>,
    sources: impl FnOnce() -> Vec<DeviceId>,
) -> Action {
    let local = local.filter(|l| !l.deleted);
    let target_owned = || target.clone();
    if target.deleted {
        return match local {
            Some(_) => Action::Delete {
                target: target_owned(),
            },
            None => Action::Nothing,
        };
    }
    match target.kind {
        FileKind::Directory => match local {
            Some(l) if l.kind == FileKind::Directory => Action::UpdateMetadata {
                target: target_owned(),
            },
            _ => Action::CreateDirectory {
                target: target_owned(),
            },
        },
        FileKind::Symlink => Action::CreateSymlink {
            target: target_owned(),
        },
        FileKind::File => match local {
            Some(l) if same_content(l, target) => Action::UpdateMetadata {
                target: target_owned(),
            },
            _ => Action::Fetch {
                target: target_owned(),
                sources: sources(),
            },
        },
    }
}

fn same_content(a: &FileEntry, b: &FileEntry) -> bool {
    a.kind == b.kind
        && a.deleted == b.deleted
        && a.size == b.size
        && a.symlink_target == b.symlink_target
        && a.blocks.len() == b.blocks.len()
        && a.blocks
            .iter()
            .zip(&b.blocks)
            .all(|(x, y)| x.hash == y.hash)
}

/// A total order in which the greater entry wins a conflict (see the module doc).
fn conflict_order(a: &FileEntry, b: &FileEntry) -> CmpOrdering {
    (!a.deleted)
        .cmp(&!b.deleted)
        .then(a.modified.cmp(&b.modified))
        .then(a.modified_by.cmp(&b.modified_by))
        // Content before version vectors: a resolved conflict records a merged vector, and
        // the choice must not flip because of it.
        .then_with(|| {
            a.blocks
                .iter()
                .map(|b| b.hash.as_bytes())
                .cmp(b.blocks.iter().map(|b| b.hash.as_bytes()))
        })
        .then_with(|| a.kind.code().cmp(&b.kind.code()))
        .then_with(|| a.symlink_target.cmp(&b.symlink_target))
        .then_with(|| {
            a.version
                .counters()
                .map(|(id, v)| (id.0, v))
                .cmp(b.version.counters().map(|(id, v)| (id.0, v)))
        })
}

/// `dir/NAME.sync-conflict-YYYYMMDD-HHMMSS-SHORTID.EXT`, from the losing version's own
/// modification time and modifier, so every device names the copy alike.
pub fn conflict_copy_name(loser: &FileEntry) -> String {
    let (dir, stem, ext) = conflict_name_parts(&loser.name);
    let copy = format!(
        "{stem}{CONFLICT_MARK}{}-{}{ext}",
        utc_stamp(loser.modified),
        loser.modified_by
    );
    match dir {
        Some(dir) => format!("{dir}/{copy}"),
        None => copy,
    }
}

/// What sits between a conflict copy's stem and its time stamp.
pub const CONFLICT_MARK: &str = ".sync-conflict-";

/// A name's directory (if any), stem and extension (with its dot), as conflict copies of it
/// are named: `dir/stem.sync-conflict-...ext`.
pub fn conflict_name_parts(name: &str) -> (Option<&str>, &str, &str) {
    let (dir, base) = match name.rsplit_once('/') {
        Some((dir, base)) => (Some(dir), base),
        None => (None, name),
    };
    // A leading dot starts a hidden name, not an extension.
    let (stem, ext) = match base.rfind('.') {
        Some(i) if i > 0 => (&base[..i], &base[i..]),
        _ => (base, ""),
    };
    (dir, stem, ext)
}

fn utc_stamp(time: Timestamp) -> String {
    jiff::Timestamp::from_second(time.seconds)
        .map(|ts| ts.strftime("%Y%m%d-%H%M%S").to_string())
        .unwrap_or_else(|_| "00000000-000000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfold_protocol::ShortId;
    use peerfold_protocol::chunking::Block;
    use peerfold_protocol::version::VersionVector;
    use proptest::prelude::*;

    const ME: DeviceId = DeviceId::from_bytes([1; 32]);
    const PEER: DeviceId = DeviceId::from_bytes([2; 32]);
    const OTHER: DeviceId = DeviceId::from_bytes([3; 32]);

    fn file(name: &str, version: &[(u64, u64)], content: u8, seconds: i64) -> FileEntry {
        FileEntry {
            name: name.into(),
            kind: FileKind::File,
            size: 1,
            permissions: 0o644,
            modified: Timestamp { seconds, nanos: 0 },
            deleted: false,
            invalid: false,
            sequence: 1,
            version: version.iter().map(|&(id, v)| (ShortId(id), v)).collect(),
            modified_by: ShortId(version.last().map_or(0, |c| c.0)),
            symlink_target: String::new(),
            blocks: vec![Block {
                offset: 0,
                size: 1,
                hash: blake3::hash(&[content]),
            }],
        }
    }

    fn deleted(mut entry: FileEntry) -> FileEntry {
        entry.deleted = true;
        entry.blocks.clear();
        entry.size = 0;
        entry
    }

    fn from(device: DeviceId, entry: &FileEntry) -> Announced<'_> {
        Announced { device, entry }
    }

    #[test]
    fn newer_remote_file_is_fetched_from_the_devices_that_have_it() {
        let local = file("a", &[(1, 1)], 1, 10);
        let newer = file("a", &[(1, 1), (2, 1)], 2, 20);
        let action = plan(
            FolderType::SendReceive,
            Some(&local),
            &[from(PEER, &newer), from(OTHER, &newer), from(OTHER, &local)],
            ME,
        );
        assert_eq!(
            action,
            Action::Fetch {
                target: newer.clone(),
                sources: vec![PEER, OTHER]
            }
        );
        // New to this device: fetched as well.
        let action = plan(FolderType::SendReceive, None, &[from(PEER, &newer)], ME);
        assert!(matches!(action, Action::Fetch { .. }));
    }

    #[test]
    fn same_content_with_a_new_version_only_updates_metadata() {
        let local = file("a", &[(1, 1)], 1, 10);
        let mut chmod = file("a", &[(1, 1), (2, 1)], 1, 10);
        chmod.permissions = 0o600;
        let action = plan(
            FolderType::SendReceive,
            Some(&local),
            &[from(PEER, &chmod)],
            ME,
        );
        assert_eq!(action, Action::UpdateMetadata { target: chmod });
    }

    #[test]
    fn local_newer_or_equal_needs_nothing() {
        let local = file("a", &[(1, 2)], 1, 10);
        let older = file("a", &[(1, 1)], 0, 5);
        assert_eq!(
            plan(
                FolderType::SendReceive,
                Some(&local),
                &[from(PEER, &older)],
                ME
            ),
            Action::Nothing
        );
        assert_eq!(
            plan(
                FolderType::SendReceive,
                Some(&local),
                &[from(PEER, &local)],
                ME
            ),
            Action::Nothing
        );
    }

    #[test]
    fn concurrent_edits_keep_the_loser_as_a_conflict_copy() {
        let base = [(1, 1)];
        let mine = file("dir/photo.jpg", &[base[0], (1, 2)], 1, 100);
        let mine = FileEntry {
            version: VersionVector::from_iter([(ShortId(1), 2)]),
            modified_by: ShortId(1),
            ..mine
        };
        let theirs = FileEntry {
            version: VersionVector::from_iter([(ShortId(1), 1), (ShortId(2), 1)]),
            modified_by: ShortId(2),
            ..file("dir/photo.jpg", &[], 2, 200)
        };
        // Theirs is newer by modification time: mine becomes the copy.
        let action = plan(
            FolderType::SendReceive,
            Some(&mine),
            &[from(PEER, &theirs)],
            ME,
        );
        let Action::Conflict { copy_name, then } = action else {
            panic!("{action:?}")
        };
        assert_eq!(
            copy_name,
            format!("dir/photo.sync-conflict-19700101-000140-{}.jpg", ShortId(1))
        );
        assert!(matches!(*then, Action::Fetch { .. }));
        // On the other device the same entries make mine lose too: nothing to do there
        // until the copy arrives as a new file.
        assert_eq!(
            plan(
                FolderType::SendReceive,
                Some(&theirs),
                &[from(ME, &mine)],
                PEER
            ),
            Action::Nothing
        );
    }

    #[test]
    fn modification_beats_concurrent_deletion() {
        let mine = file("a", &[(1, 2)], 1, 100);
        let gone = deleted(file("a", &[(1, 1), (2, 1)], 0, 500));
        assert_eq!(
            plan(
                FolderType::SendReceive,
                Some(&mine),
                &[from(PEER, &gone)],
                ME
            ),
            Action::Nothing
        );
        // And the deleting device takes the modification back.
        let action = plan(
            FolderType::SendReceive,
            Some(&gone),
            &[from(ME, &mine)],
            PEER,
        );
        assert!(matches!(action, Action::Fetch { .. }), "{action:?}");
    }

    #[test]
    fn remote_deletion_of_an_unchanged_file_deletes_it() {
        let local = file("a", &[(1, 1)], 1, 10);
        let gone = deleted(file("a", &[(1, 1), (2, 1)], 0, 10));
        assert_eq!(
            plan(
                FolderType::SendReceive,
                Some(&local),
                &[from(PEER, &gone)],
                ME
            ),
            Action::Delete { target: gone }
        );
    }

    #[test]
    fn send_only_reports_and_receive_only_keeps_local_changes() {
        let local = file("a", &[(1, 1)], 1, 10);
        let newer = file("a", &[(1, 1), (2, 1)], 2, 20);
        assert_eq!(
            plan(
                FolderType::SendOnly,
                Some(&local),
                &[from(PEER, &newer)],
                ME
            ),
            Action::OutOfSync
        );
        let changed_here = file("a", &[(1, 2)], 3, 30);
        let remote = file("a", &[(1, 1)], 1, 10);
        assert_eq!(
            plan(
                FolderType::ReceiveOnly,
                Some(&changed_here),
                &[from(PEER, &remote)],
                ME
            ),
            Action::LocallyChanged
        );
        assert!(matches!(
            plan(
                FolderType::ReceiveOnly,
                Some(&local),
                &[from(PEER, &newer)],
                ME
            ),
            Action::Fetch { .. }
        ));
    }

    #[test]
    fn conflict_copy_names() {
        let mut entry = file("notes", &[(1, 1)], 0, 1_764_459_061);
        assert_eq!(
            conflict_copy_name(&entry),
            format!("notes.sync-conflict-20251129-233101-{}", ShortId(1))
        );
        entry.name = "a.b/.hidden".into();
        assert!(conflict_copy_name(&entry).starts_with("a.b/.hidden.sync-conflict-"));
        entry.name = "archive.tar.gz".into();
        assert!(conflict_copy_name(&entry).ends_with(".gz"));
        assert!(conflict_copy_name(&entry).starts_with("archive.tar.sync-conflict-"));
    }

    /// Arbitrary entries for one name. A version identifies one state of the name on every
    /// device (the protocol's rule), so the entry's content, time, modifier and deletion are
    /// derived from its version vector.
    fn any_entry() -> impl Strategy<Value = FileEntry> {
        (
            proptest::collection::vec((1u64..4, 1u64..4), 0..3),
            any::<bool>(),
        )
            .prop_map(|(counters, invalid)| {
                let version: VersionVector = counters
                    .into_iter()
                    .map(|(id, v)| (ShortId(id), v))
                    .collect();
                let digest = blake3::hash(format!("{version:?}").as_bytes());
                let d = digest.as_bytes();
                let mut entry = file("x", &[], d[0] % 3, i64::from(d[1] % 3));
                entry.version = version;
                entry.modified_by = ShortId(1 + u64::from(d[2] % 3));
                entry.invalid = invalid;
                if d[3].is_multiple_of(4) {
                    deleted(entry)
                } else {
                    entry
                }
            })
    }

    fn devices() -> [DeviceId; 3] {
        [ME, PEER, OTHER]
    }

    proptest! {
        #[test]
        fn the_global_version_does_not_depend_on_arrival_order(
            entries in proptest::collection::vec(any_entry(), 1..5),
            rotate in 0usize..5,
        ) {
            let announced: Vec<Announced<'_>> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| from(devices()[i % 3], e))
                .collect();
            let mut shuffled = announced.clone();
            shuffled.rotate_left(rotate % announced.len());
            shuffled.reverse();
            let a = global(&announced).map(|g| g.entry.clone());
            let b = global(&shuffled).map(|g| g.entry.clone());
            prop_assert_eq!(&a, &b);
            if let Some(g) = a {
                prop_assert!(!g.invalid);
                for e in entries.iter().filter(|e| !e.invalid) {
                    prop_assert_ne!(e.version.compare(&g.version), Ordering::Newer);
                }
            }
        }

        #[test]
        fn a_local_change_is_never_lost(
            local in any_entry(),
            remote in proptest::collection::vec(any_entry(), 0..4),
            folder_type in prop_oneof![
                Just(FolderType::SendReceive),
                Just(FolderType::SendOnly),
                Just(FolderType::ReceiveOnly),
            ],
        ) {
            let announced: Vec<Announced<'_>> =
                remote.iter().map(|e| from(PEER, e)).collect();
            let action = plan(folder_type, Some(&local), &announced, ME);
            let unseen_by_target = |target: &FileEntry| {
                matches!(local.version.compare(&target.version), Ordering::Newer | Ordering::Concurrent)
            };
            match &action {
                // Overwriting or deleting a live local version the target has not seen
                // must go through a conflict copy.
                Action::Fetch { target, .. }
                | Action::Delete { target }
                | Action::CreateDirectory { target }
                | Action::CreateSymlink { target } => {
                    prop_assert!(
                        local.deleted || !unseen_by_target(target)
                            || same_content(&local, target),
                        "{action:?} would lose {local:?}"
                    );
                }
                _ => {}
            }
            if folder_type == FolderType::SendOnly || local.invalid {
                prop_assert!(
                    matches!(action, Action::Nothing | Action::OutOfSync),
                    "applied {action:?} to a send-only folder or an ignored name"
                );
            }
        }

        #[test]
        fn of_two_concurrent_edits_exactly_one_device_makes_the_copy(
            base in proptest::collection::vec((1u64..4, 1u64..4), 0..3),
            content in 0u8..3,
            (seconds_a, seconds_b) in (0i64..3, 0i64..3),
        ) {
            let base: VersionVector =
                base.into_iter().map(|(id, v)| (ShortId(id), v)).collect();
            let edit = |by: u64, content: u8, seconds: i64| FileEntry {
                version: base.clone().incremented(ShortId(by), 1).unwrap(),
                modified_by: ShortId(by),
                ..file("x", &[], content, seconds)
            };
            let a = edit(7, content, seconds_a);
            let b = edit(8, (content + 1) % 3, seconds_b);
            let on_me = plan(FolderType::SendReceive, Some(&a), &[from(PEER, &b)], ME);
            let on_peer = plan(FolderType::SendReceive, Some(&b), &[from(ME, &a)], PEER);
            let copies = [&on_me, &on_peer]
                .iter()
                .filter(|action| matches!(action, Action::Conflict { .. }))
                .count();
            prop_assert_eq!(copies, 1, "{:?} / {:?}", on_me, on_peer);
            prop_assert!(on_me == Action::Nothing || on_peer == Action::Nothing);
        }

        #[test]
        fn applying_the_plan_converges_without_new_conflicts(
            local in any_entry(),
            remote in proptest::collection::vec(any_entry(), 1..4),
        ) {
            let announced: Vec<Announced<'_>> =
                remote.iter().enumerate().map(|(i, e)| from(devices()[1 + i % 2], e)).collect();
            let action = plan(FolderType::SendReceive, Some(&local), &announced, ME);
            let target = match &action {
                Action::Conflict { then, .. } => match then.as_ref() {
                    Action::Fetch { target, .. } | Action::Delete { target }
                    | Action::UpdateMetadata { target } | Action::CreateDirectory { target }
                    | Action::CreateSymlink { target } => Some(target.clone()),
                    _ => None,
                },
                Action::Fetch { target, .. } | Action::Delete { target }
                | Action::UpdateMetadata { target } | Action::CreateDirectory { target }
                | Action::CreateSymlink { target } => Some(target.clone()),
                _ => None,
            };
            // The puller records each target as the new local entry. After the first round
            // only version merges of identical content may remain, and they settle.
            let mut next = target;
            let mut rounds = 0;
            while let Some(local) = next {
                rounds += 1;
                prop_assert!(rounds <= 4, "no convergence");
                let again = plan(FolderType::SendReceive, Some(&local), &announced, ME);
                next = match again {
                    Action::Nothing => None,
                    Action::UpdateMetadata { target } => {
                        prop_assert!(same_content(&target, &local));
                        Some(target)
                    }
                    other => {
                        prop_assert!(false, "round {rounds} planned {other:?}");
                        None
                    }
                };
            }
        }
    }
}
