//! The folder counters against a full walk: after any sequence of local changes, pulls,
//! peers' batches (checked or not, some refused), index resets and dropped slices, every
//! device's summary read from the counters equals the one a walk of the index computes.

use peerfold_protocol::ShortId;
use peerfold_protocol::version::VersionVector;
use proptest::prelude::*;

use super::*;
use crate::model::counts::{self, FolderSummary};
use crate::model::entry::FileEntry;
use crate::model::view::NameView;

const ME: DeviceId = DeviceId::from_bytes([1; 32]);
const PEERS: [DeviceId; 3] = [
    DeviceId::from_bytes([2; 32]),
    DeviceId::from_bytes([3; 32]),
    DeviceId::from_bytes([4; 32]),
];
/// Shares the folder but never announced anything.
const SILENT: DeviceId = DeviceId::from_bytes([5; 32]);
const NAMES: [&str; 4] = ["a", "b", "d", "d/c"];
/// November 2023, in Unix seconds.
const NOW: u64 = 1_700_000_000;

/// What an entry is: a file with one of a few contents, a directory, a symlink, deleted.
#[derive(Clone, Copy, Debug)]
enum Shape {
    File(u8),
    Directory,
    Symlink,
    Deleted,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (0..3u8).prop_map(Shape::File),
        Just(Shape::Directory),
        Just(Shape::Symlink),
        Just(Shape::Deleted),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    /// A scan saw `name` change to `shape` (ignored when `invalid`).
    Local {
        name: usize,
        shape: Shape,
        invalid: bool,
    },
    /// This device pulled what `peer` announced for `name`.
    Pulled { name: usize, peer: usize },
    /// `peer` announced `name` with a version of small counters (equal, older, newer or
    /// concurrent to the others by chance), through the checks (`checked`) or not.
    Remote {
        peer: usize,
        name: usize,
        shape: Shape,
        invalid: bool,
        counters: [u64; 3],
        claims_mine: Option<u64>,
        checked: bool,
    },
    /// `peer` rebuilt its index: a batch under a new index ID.
    Reset {
        peer: usize,
        name: usize,
        shape: Shape,
    },
    /// Up to `limit` rows of `peer`'s index dropped.
    ForgetSlice { peer: usize, limit: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let name = 0..NAMES.len();
    let peer = 0..PEERS.len();
    prop_oneof![
        (name.clone(), shape(), proptest::bool::weighted(0.15)).prop_map(
            |(name, shape, invalid)| Step::Local {
                name,
                shape,
                invalid
            }
        ),
        (name.clone(), peer.clone()).prop_map(|(name, peer)| Step::Pulled { name, peer }),
        (
            peer.clone(),
            name.clone(),
            shape(),
            proptest::bool::weighted(0.15),
            [0..3u64, 0..3u64, 0..3u64],
            proptest::option::weighted(
                0.3,
                // Below this device's counters, past them (a rebuilt index forgot them), or
                // never issued (refused).
                prop_oneof![Just(1u64), Just(NOW + 10), Just(u64::MAX / 2)],
            ),
            any::<bool>(),
        )
            .prop_map(
                |(peer, name, shape, invalid, counters, claims_mine, checked)| Step::Remote {
                    peer,
                    name,
                    shape,
                    invalid,
                    counters,
                    claims_mine,
                    checked,
                },
            ),
        (peer.clone(), name.clone(), shape()).prop_map(|(peer, name, shape)| Step::Reset {
            peer,
            name,
            shape
        }),
        (peer, 1..3usize).prop_map(|(peer, limit)| Step::ForgetSlice { peer, limit }),
    ]
}

fn entry(name: &str, shape: Shape, invalid: bool) -> FileEntry {
    let (kind, deleted, content): (FileKind, bool, &[u8]) = match shape {
        Shape::File(0) => (FileKind::File, false, b"one"),
        Shape::File(1) => (FileKind::File, false, b"second content"),
        Shape::File(_) => (FileKind::File, false, b"a third, longer content"),
        Shape::Directory => (FileKind::Directory, false, b""),
        Shape::Symlink => (FileKind::Symlink, false, b""),
        Shape::Deleted => (FileKind::File, true, b""),
    };
    let blocks = if kind == FileKind::File && !deleted {
        vec![Block {
            offset: 0,
            size: content.len() as u32,
            hash: blake3::hash(content),
        }]
    } else {
        Vec::new()
    };
    FileEntry {
        name: name.into(),
        kind,
        size: content.len() as u64,
        permissions: 0o644,
        modified: Timestamp {
            seconds: content.len() as i64,
            nanos: 0,
        },
        deleted,
        invalid,
        sequence: 0,
        version: VersionVector::new(),
        modified_by: ShortId(7),
        symlink_target: if kind == FileKind::Symlink {
            "target".into()
        } else {
            String::new()
        },
        blocks,
    }
}

fn change_from(store: &Store, folder: FolderIdx, e: &FileEntry) -> LocalChange {
    let mut previous = None;
    store
        .for_each_local_row(folder, |row| {
            if row.name == e.name {
                previous = Some(row.id);
            }
            Ok(())
        })
        .unwrap();
    LocalChange {
        previous,
        name: e.name.clone(),
        kind: e.kind,
        size: e.size,
        permissions: e.permissions,
        modified: e.modified,
        deleted: e.deleted,
        invalid: e.invalid,
        symlink_target: e.symlink_target.clone(),
        blocks: Some(e.blocks.clone()),
        inode: 1,
    }
}

struct Peers {
    index_ids: [u64; 3],
    sequences: [u64; 3],
}

fn apply(store: &mut Store, folder: FolderIdx, peers: &mut Peers, step: &Step) {
    match *step {
        Step::Local {
            name,
            shape,
            invalid,
        } => {
            let change = change_from(store, folder, &entry(NAMES[name], shape, invalid));
            store
                .apply_local_changes_at(folder, ME.short(), &[change], NOW)
                .unwrap();
        }
        Step::Pulled { name, peer } => {
            if let Some(e) = held_of(store, folder, PEERS[peer], NAMES[name]) {
                let change = change_from(store, folder, &e);
                store
                    .record_pulled(folder, &change, &e.version, e.modified_by)
                    .unwrap();
            }
        }
        Step::Remote {
            peer,
            name,
            shape,
            invalid,
            counters,
            claims_mine,
            checked,
        } => {
            let mut e = entry(NAMES[name], shape, invalid);
            for (i, counter) in counters.iter().enumerate() {
                if *counter > 0 {
                    e.version = e.version.incremented(PEERS[i].short(), *counter).unwrap();
                }
            }
            if let Some(mine) = claims_mine {
                e.version = e.version.incremented(ME.short(), mine).unwrap();
            }
            peers.sequences[peer] += 1;
            e.sequence = peers.sequences[peer];
            let index_id = peers.index_ids[peer];
            if checked {
                store
                    .receive_remote_index_at(folder, PEERS[peer], index_id, &[e], ME.short(), NOW)
                    .unwrap();
            } else {
                store
                    .apply_remote_index(folder, PEERS[peer], index_id, &[e])
                    .unwrap();
            }
        }
        Step::Reset { peer, name, shape } => {
            peers.index_ids[peer] += 1;
            peers.sequences[peer] = 1;
            let mut e = entry(NAMES[name], shape, false);
            e.version = VersionVector::new()
                .incremented(PEERS[peer].short(), 1)
                .unwrap();
            e.sequence = 1;
            store
                .apply_remote_index(folder, PEERS[peer], peers.index_ids[peer], &[e])
                .unwrap();
        }
        Step::ForgetSlice { peer, limit } => {
            store
                .forget_remote_slice(folder, PEERS[peer], limit)
                .unwrap();
        }
    }
}

/// Every device's summary by a walk of the whole index.
fn walked(store: &Store, folder: FolderIdx, devices: &[DeviceId]) -> Vec<FolderSummary> {
    let mut summaries = vec![FolderSummary::default(); devices.len()];
    store
        .for_each_name(folder, ME, |entries| {
            counts::add_name(&NameView::new(&entries, ME), devices, &mut summaries);
            Ok::<(), StoreError>(())
        })
        .unwrap();
    summaries
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_counters_match_a_walk_after_any_changes(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("index.db")).unwrap();
        let folder = store.ensure_folder_at("docs", NOW).unwrap();
        let mut peers = Peers { index_ids: [1; 3], sequences: [0; 3] };
        let devices = [ME, PEERS[0], PEERS[1], PEERS[2], SILENT];
        for (i, step) in steps.iter().enumerate() {
            apply(&mut store, folder, &mut peers, step);
            let counted = store.summaries(folder, &devices, ME).unwrap();
            let walked = walked(&store, folder, &devices);
            prop_assert_eq!(counted, walked, "after step {} ({:?})", i, step);
        }
        // A store reopened keeps them (and one from before the counters gets them built).
        drop(store);
        let store = Store::open(&dir.path().join("index.db")).unwrap();
        prop_assert_eq!(store.summaries(folder, &devices, ME).unwrap(), walked(&store, folder, &devices));
    }
}

#[test]
fn a_folder_indexed_before_the_counters_gets_them_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let mut store = Store::open(&path).unwrap();
    let folder = store.ensure_folder_at("docs", NOW).unwrap();
    let mut peers = Peers {
        index_ids: [1; 3],
        sequences: [0; 3],
    };
    for step in [
        Step::Local {
            name: 0,
            shape: Shape::File(2),
            invalid: false,
        },
        Step::Remote {
            peer: 0,
            name: 1,
            shape: Shape::File(1),
            invalid: false,
            counters: [1, 0, 0],
            claims_mine: None,
            checked: true,
        },
    ] {
        apply(&mut store, folder, &mut peers, &step);
    }
    let devices = [ME, PEERS[0], SILENT];
    let expected = walked(&store, folder, &devices);
    assert_eq!(expected[0].global.files, 2);
    assert_eq!(expected[0].need.files, 1);
    // As an index from before the counters: none kept, the folder not marked.
    store
        .reads
        .conn
        .execute_batch("DELETE FROM tallies; UPDATE folders SET tallied = 0;")
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.summaries(folder, &devices, ME).unwrap(), expected);
}

/// What is held of `peer` for `name`.
fn held_of(store: &Store, folder: FolderIdx, peer: DeviceId, name: &str) -> Option<FileEntry> {
    let mut held = None;
    store
        .for_names(folder, [name], ME, |entries| {
            held = entries
                .into_iter()
                .find(|(d, _)| *d == peer)
                .map(|(_, e)| e);
            Ok::<(), StoreError>(())
        })
        .unwrap();
    held
}

#[test]
fn a_peer_entry_never_goes_back_to_an_older_one_of_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("index.db")).unwrap();
    let folder = store.ensure_folder_at("docs", NOW).unwrap();
    let peer = PEERS[0];
    let devices = [ME, peer];
    let announced = |shape, sequence: u64, counter| {
        let mut e = entry("a", shape, false);
        e.sequence = sequence;
        e.version = VersionVector::new()
            .incremented(peer.short(), counter)
            .unwrap();
        e
    };
    let (older, newer) = (
        announced(Shape::File(0), 1, 1),
        announced(Shape::File(1), 2, 2),
    );
    let receive = |store: &mut Store, index_id, e: &FileEntry| {
        store
            .receive_remote_index_at(
                folder,
                peer,
                index_id,
                std::slice::from_ref(e),
                ME.short(),
                NOW,
            )
            .unwrap();
    };
    receive(&mut store, 1, &newer);
    // A batch of the same index that the newer entry overtook (stored late by a session
    // that a better link replaced).
    receive(&mut store, 1, &older);
    let held = held_of(&store, folder, peer, "a").unwrap();
    assert_eq!((held.sequence, held.size), (2, newer.size));
    let counted = store.summaries(folder, &devices, ME).unwrap();
    assert_eq!(counted, walked(&store, folder, &devices));
    // The same entry again is stored again; a new index starts over from its own first.
    receive(&mut store, 1, &newer);
    let reset = announced(Shape::File(2), 1, 3);
    receive(&mut store, 2, &reset);
    let held = held_of(&store, folder, peer, "a").unwrap();
    assert_eq!((held.sequence, held.size), (1, reset.size));
    let counted = store.summaries(folder, &devices, ME).unwrap();
    assert_eq!(counted, walked(&store, folder, &devices));
}
