//! Glue between the store and the planner: what a folder needs, from what the store holds.

use std::ops::ControlFlow;

use peerfold_protocol::DeviceId;

use crate::config::FolderConfig;
use crate::model::entry::FileEntry;
use crate::model::planner::{self, Action, Announced};
use crate::model::{FolderType, PullOrder};
use crate::store::{FolderIdx, StoreError, StoreReader};

/// The folder settings that decide what it needs and in what order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Send-receive, send-only or receive-only.
    pub folder_type: FolderType,
    /// Peers' deletions are not carried out (`ignoreDelete`).
    pub ignore_delete: bool,
    /// The order files are fetched in.
    pub order: PullOrder,
}

impl Rules {
    /// The rules of a folder's settings.
    pub fn of(config: &FolderConfig) -> Self {
        Self {
            folder_type: config.folder_type,
            ignore_delete: config.ignore_delete,
            order: config.pull_order,
        }
    }
}

impl From<FolderType> for Rules {
    fn from(folder_type: FolderType) -> Self {
        Self {
            folder_type,
            ignore_delete: false,
            order: PullOrder::default(),
        }
    }
}

/// Every action this device needs to bring `folder` to the global version, in the order the
/// puller must carry them out. Names on which every device agrees cost one comparison each.
pub fn needed_actions(
    store: &StoreReader,
    folder: FolderIdx,
    rules: impl Into<Rules>,
    this_device: DeviceId,
) -> Result<Vec<Action>, StoreError> {
    Ok(needed_page(store, folder, rules, this_device, None, usize::MAX)?.actions)
}

/// How many actions a page of a whole-folder plan holds at most: memory stays flat however
/// much a folder needs (a million-file folder needs a million actions on its first pull).
#[cfg(not(test))]
pub(crate) const PLAN_PAGE: usize = 10_000;
/// In tests, every plan of more than a few names is paged.
#[cfg(test)]
pub(crate) const PLAN_PAGE: usize = 3;

/// One page of a whole-folder plan: what the names after a point need, up to a limit.
#[derive(Debug)]
pub struct PlanPage {
    /// The actions, in the order the puller carries them out.
    pub actions: Vec<Action>,
    /// The last name looked at, when the page filled up before the folder's end: the next
    /// page starts after it. `None`: the page reached the end.
    pub next: Option<String>,
}

/// The actions of the names after `after` (from the first when `None`) until `limit` of
/// them need one, in the puller's order (within the page: a folder needing more than a page
/// is pulled page by page in name order, each page in the folder's pull order).
pub fn needed_page(
    store: &StoreReader,
    folder: FolderIdx,
    rules: impl Into<Rules>,
    this_device: DeviceId,
    after: Option<&str>,
    limit: usize,
) -> Result<PlanPage, StoreError> {
    let rules = rules.into();
    let mut actions = Vec::new();
    let mut next = None;
    store.for_each_name_after(folder, this_device, after, |entries| {
        actions.extend(action_for(&entries, rules, this_device));
        if actions.len() < limit {
            return Ok::<_, StoreError>(ControlFlow::Continue(()));
        }
        next = entries.first().map(|(_, e)| e.name.clone());
        Ok(ControlFlow::Break(()))
    })?;
    planner::order(&mut actions, rules.order);
    Ok(PlanPage { actions, next })
}

/// Whether names after `last` may lie under `name` (a directory's contents sort after it,
/// between `name/` and `name0`): its deletion waits until the walk is past them.
pub(crate) fn subtree_continues_after(name: &str, last: &str) -> bool {
    let end = [name.as_bytes(), b"0"].concat();
    name <= last && last.as_bytes() < end.as_slice()
}

/// [`needed_actions`] for the given names only: what changed since the last plan.
pub fn needed_actions_for<'n>(
    store: &StoreReader,
    folder: FolderIdx,
    names: impl IntoIterator<Item = &'n str>,
    rules: impl Into<Rules>,
    this_device: DeviceId,
) -> Result<Vec<Action>, StoreError> {
    let rules = rules.into();
    let mut actions = Vec::new();
    store.for_names(folder, names, this_device, |entries| {
        actions.extend(action_for(&entries, rules, this_device));
        Ok::<(), StoreError>(())
    })?;
    planner::order(&mut actions, rules.order);
    Ok(actions)
}

/// The action for one name, given every device's entry for it. Under `ignoreDelete` a
/// peer's deletion is left undone (the file and this device's entry stay).
fn action_for(
    entries: &[(DeviceId, FileEntry)],
    rules: Rules,
    this_device: DeviceId,
) -> Option<Action> {
    let local = entries
        .iter()
        .find(|(device, _)| *device == this_device)
        .map(|(_, entry)| entry);
    let remote: Vec<Announced<'_>> = entries
        .iter()
        .filter(|(device, _)| *device != this_device)
        .map(|(device, entry)| Announced {
            device: *device,
            entry,
        })
        .collect();
    if let Some(local) = local
        && remote.iter().all(|r| r.entry.version == local.version)
    {
        return None;
    }
    Some(planner::plan(
        rules.folder_type,
        local,
        &remote,
        this_device,
    ))
    .filter(|a| *a != Action::Nothing)
    .filter(|a| !(rules.ignore_delete && a.is_delete()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::{FileEntry, FileKind, Timestamp};
    use crate::store::{LocalChange, Store};
    use peerfold_protocol::chunking::Block;
    use peerfold_protocol::version::VersionVector;

    const ME: DeviceId = DeviceId::from_bytes([1; 32]);
    const PEER: DeviceId = DeviceId::from_bytes([2; 32]);

    fn local_file(name: &str, content: &[u8]) -> LocalChange {
        LocalChange {
            previous: None,
            name: name.into(),
            kind: FileKind::File,
            size: content.len() as u64,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            symlink_target: String::new(),
            blocks: Some(vec![Block {
                offset: 0,
                size: content.len() as u32,
                hash: blake3::hash(content),
            }]),
            inode: 1,
        }
    }

    fn remote_file(name: &str, content: &[u8], version: VersionVector, seq: u64) -> FileEntry {
        FileEntry {
            name: name.into(),
            kind: FileKind::File,
            size: content.len() as u64,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            sequence: seq,
            version,
            modified_by: PEER.short(),
            symlink_target: String::new(),
            blocks: vec![Block {
                offset: 0,
                size: content.len() as u32,
                hash: blake3::hash(content),
            }],
        }
    }

    fn local_entries(store: &Store, folder: FolderIdx) -> Vec<FileEntry> {
        let mut out = Vec::new();
        store
            .for_each_local_entry(folder, |e| {
                out.push(e);
                Ok::<(), StoreError>(())
            })
            .unwrap();
        out
    }

    #[test]
    fn remote_index_drives_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("index.db")).unwrap();
        let folder = store.ensure_folder("f").unwrap();
        store
            .apply_local_changes(
                folder,
                ME.short(),
                &[local_file("same", b"same"), local_file("old", b"old")],
            )
            .unwrap();
        let mine = local_entries(&store, folder);
        let same = mine.iter().find(|e| e.name == "same").unwrap().clone();
        let old = mine.iter().find(|e| e.name == "old").unwrap().clone();

        // The peer has: the same "same", a newer "old", and a "new" file.
        let batch = vec![
            FileEntry {
                sequence: 1,
                ..same.clone()
            },
            remote_file(
                "old",
                b"newer",
                old.version.clone().incremented(PEER.short(), 1).unwrap(),
                2,
            ),
            remote_file(
                "new",
                b"new",
                VersionVector::new().incremented(PEER.short(), 1).unwrap(),
                3,
            ),
        ];
        store.apply_remote_index(folder, PEER, 77, &batch).unwrap();
        assert_eq!(
            store.remote_index_state(folder, PEER).unwrap(),
            Some((77, 3))
        );

        let actions = needed_actions(
            &store.reader().unwrap(),
            folder,
            FolderType::SendReceive,
            ME,
        )
        .unwrap();
        let names: Vec<&str> = actions.iter().filter_map(Action::name).collect();
        assert_eq!(names, vec!["new", "old"]);
        assert!(
            actions
                .iter()
                .all(|a| matches!(a, Action::Fetch { sources, .. } if sources == &[PEER]))
        );
        // Planning some names only: the others are not looked at.
        let some = needed_actions_for(
            &store.reader().unwrap(),
            folder,
            ["new", "same", "unknown"],
            FolderType::SendReceive,
            ME,
        )
        .unwrap();
        let names: Vec<&str> = some.iter().filter_map(Action::name).collect();
        assert_eq!(names, vec!["new"]);
        // Send-only: the same differences are only reported.
        let actions =
            needed_actions(&store.reader().unwrap(), folder, FolderType::SendOnly, ME).unwrap();
        assert!(actions.iter().all(|a| *a == Action::OutOfSync));
        assert_eq!(actions.len(), 2);

        // A new index ID replaces what we held from the device.
        store
            .apply_remote_index(
                folder,
                PEER,
                78,
                &[FileEntry {
                    sequence: 1,
                    ..same
                }],
            )
            .unwrap();
        assert_eq!(
            store.remote_index_state(folder, PEER).unwrap(),
            Some((78, 1))
        );
        assert!(
            needed_actions(
                &store.reader().unwrap(),
                folder,
                FolderType::SendReceive,
                ME
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn updates_with_the_same_index_id_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("index.db")).unwrap();
        let folder = store.ensure_folder("f").unwrap();
        let v = VersionVector::new().incremented(PEER.short(), 1).unwrap();
        store
            .apply_remote_index(folder, PEER, 5, &[remote_file("a", b"a", v.clone(), 1)])
            .unwrap();
        store
            .apply_remote_index(folder, PEER, 5, &[remote_file("b", b"b", v.clone(), 2)])
            .unwrap();
        assert_eq!(
            store.remote_index_state(folder, PEER).unwrap(),
            Some((5, 2))
        );
        let actions = needed_actions(
            &store.reader().unwrap(),
            folder,
            FolderType::SendReceive,
            ME,
        )
        .unwrap();
        assert_eq!(actions.len(), 2);
        assert_eq!(store.remote_index_state(folder, ME).unwrap(), None);
    }

    #[test]
    fn a_whole_folder_plan_comes_in_pages_that_resume_after_their_last_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("index.db")).unwrap();
        let folder = store.ensure_folder("f").unwrap();
        store
            .apply_local_changes(folder, ME.short(), &[local_file("c-same", b"same")])
            .unwrap();
        let same = local_entries(&store, folder).remove(0);
        let v = VersionVector::new().incremented(PEER.short(), 1).unwrap();
        let mut batch: Vec<FileEntry> = ["a", "b", "d", "e", "f", "g", "h"]
            .iter()
            .zip(1..)
            .map(|(name, seq)| remote_file(name, name.as_bytes(), v.clone(), seq))
            .collect();
        batch.push(FileEntry {
            sequence: 8,
            ..same
        });
        store.apply_remote_index(folder, PEER, 1, &batch).unwrap();
        let reader = store.reader().unwrap();
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = needed_page(
                &reader,
                folder,
                FolderType::SendReceive,
                ME,
                after.as_deref(),
                3,
            )
            .unwrap();
            let names: Vec<String> = page
                .actions
                .iter()
                .filter_map(Action::name)
                .map(str::to_owned)
                .collect();
            pages.push(names);
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        // The name every device agrees on takes no room in a page; the last page is short.
        assert_eq!(pages, [vec!["a", "b", "d"], vec!["e", "f", "g"], vec!["h"]]);
        assert_eq!(
            needed_actions(&reader, folder, FolderType::SendReceive, ME)
                .unwrap()
                .len(),
            7
        );
    }

    #[test]
    fn a_directory_deletion_waits_while_its_contents_may_come_in_a_later_page() {
        // The walk stopped at "d-x": "d/..." sorts after it, so "d" may still hold files.
        assert!(subtree_continues_after("d", "d-x"));
        assert!(subtree_continues_after("d", "d"));
        assert!(subtree_continues_after("d", "d/a"));
        // Past "d0" every name under "d/" has been looked at.
        assert!(!subtree_continues_after("d", "d0"));
        assert!(!subtree_continues_after("d", "e"));
        assert!(!subtree_continues_after("d/a", "d"));
    }
}
