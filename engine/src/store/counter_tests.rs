//! This device's version counters in the store (issue 10): time-based, never below a new
//! index's floor, never past what peers may claim, and outdating what a rebuilt index
//! forgot.

use peerfold_protocol::ShortId;
use peerfold_protocol::version::{CounterExhausted, VersionVector};

use super::*;
use crate::model::entry::FileEntry;
use crate::model::own_counters::CLOCK_SKEW_ALLOWANCE;

const ME: ShortId = ShortId(0x1111);
const PEER: DeviceId = DeviceId::from_bytes([2; 32]);
/// November 2023, in Unix seconds.
const NOW: u64 = 1_700_000_000;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("index.db")).unwrap();
    (dir, store)
}

fn blocks(content: &[u8]) -> Vec<Block> {
    vec![Block {
        offset: 0,
        size: content.len() as u32,
        hash: blake3::hash(content),
    }]
}

fn change(store: &Store, folder: FolderIdx, name: &str, content: &[u8]) -> LocalChange {
    let mut previous = None;
    store
        .for_each_local_row(folder, |row| {
            if row.name == name {
                previous = Some(row.id);
            }
            Ok(())
        })
        .unwrap();
    LocalChange {
        previous,
        name: name.into(),
        kind: FileKind::File,
        size: content.len() as u64,
        permissions: 0o644,
        modified: Timestamp::default(),
        deleted: false,
        invalid: false,
        symlink_target: String::new(),
        blocks: Some(blocks(content)),
        inode: 7,
    }
}

fn remote(name: &str, content: &[u8], version: &[(ShortId, u64)], sequence: u64) -> FileEntry {
    FileEntry {
        name: name.into(),
        kind: FileKind::File,
        size: content.len() as u64,
        permissions: 0o644,
        modified: Timestamp::default(),
        deleted: false,
        invalid: false,
        sequence,
        version: version.iter().copied().collect::<VersionVector>(),
        modified_by: PEER.short(),
        symlink_target: String::new(),
        blocks: blocks(content),
    }
}

fn local(store: &Store, folder: FolderIdx, name: &str) -> FileEntry {
    store.local_entry(folder, name).unwrap().unwrap()
}

fn mine(store: &Store, folder: FolderIdx, name: &str) -> u64 {
    local(store, folder, name).version.counter(ME)
}

#[test]
fn counters_follow_the_clock_and_a_new_index_starts_after_it_was_made() {
    let (_dir, mut store) = open();
    let folder = store.ensure_folder_at("f", NOW).unwrap();
    let x = change(&store, folder, "x", b"one");
    store.apply_local_changes_at(folder, ME, &[x], NOW).unwrap();
    // The index was made in this second: its counters start at the next one, past any
    // counter a lost index issued before it.
    assert_eq!(mine(&store, folder, "x"), NOW + 1);
    let x = change(&store, folder, "x", b"two");
    store.apply_local_changes_at(folder, ME, &[x], NOW).unwrap();
    assert_eq!(mine(&store, folder, "x"), NOW + 2);
    let x = change(&store, folder, "x", b"three");
    store
        .apply_local_changes_at(folder, ME, &[x], NOW + 100)
        .unwrap();
    assert_eq!(mine(&store, folder, "x"), NOW + 100);
    assert_eq!(store.counter_time(folder, NOW - 5).unwrap(), NOW + 1);
    assert_eq!(store.counter_time(folder, NOW + 7).unwrap(), NOW + 7);
}

#[test]
fn entries_claiming_counters_this_device_never_issued_are_refused_and_the_rest_kept() {
    let (_dir, mut store) = open();
    let folder = store.ensure_folder_at("f", NOW - 1000).unwrap();
    let earlier = remote("poisoned", b"p", &[(PEER.short(), 1)], 1);
    store
        .receive_remote_index_at(folder, PEER, 9, &[earlier], ME, NOW)
        .unwrap();
    let batch = vec![
        remote("poisoned", b"p", &[(ME, u64::MAX)], 1),
        remote("ahead", b"a", &[(ME, NOW + CLOCK_SKEW_ALLOWANCE + 1)], 2),
        // What a lost index of this device issued: at most the time it was issued.
        remote("old", b"o", &[(ME, NOW - 5_000), (PEER.short(), 3)], 3),
        remote("theirs", b"t", &[(PEER.short(), u64::MAX)], 4),
    ];
    let received = store
        .receive_remote_index_at(folder, PEER, 9, &batch, ME, NOW)
        .unwrap();
    let refused: Vec<(&str, u64)> = received
        .refused
        .iter()
        .map(|(n, why)| (n.as_str(), why.claimed))
        .collect();
    assert_eq!(
        refused,
        [
            ("poisoned", u64::MAX),
            ("ahead", NOW + CLOCK_SKEW_ALLOWANCE + 1)
        ]
    );
    assert_eq!(received.refused[0].1.ceiling, NOW + CLOCK_SKEW_ALLOWANCE);
    let mut stored = Vec::new();
    store
        .for_each_name(folder, DeviceId::from_bytes([1; 32]), |entries| {
            stored.extend(entries.into_iter().map(|(_, e)| e.name));
            Ok::<(), StoreError>(())
        })
        .unwrap();
    // What the peer said of "poisoned" before is dropped with the refused entry.
    assert_eq!(stored, ["old", "theirs"]);
    // The refused ones count as seen, so the peer does not send them again.
    assert_eq!(
        store.remote_index_state(folder, PEER).unwrap(),
        Some((9, 4))
    );
}

#[test]
fn counters_this_device_gave_past_the_clock_stay_accepted() {
    let (_dir, mut store) = open();
    let folder = store.ensure_folder_at("f", NOW - 10).unwrap();
    // A burst of edits of one name runs its counter ahead of the clock.
    let burst = CLOCK_SKEW_ALLOWANCE + 10;
    for i in 0..burst {
        let x = change(&store, folder, "x", format!("{i}").as_bytes());
        store.apply_local_changes_at(folder, ME, &[x], NOW).unwrap();
    }
    let last = mine(&store, folder, "x");
    assert_eq!(last, NOW + burst - 1);
    // A peer that pulled the last one and edited it after.
    let theirs = remote("x", b"edited there", &[(ME, last), (PEER.short(), NOW)], 1);
    let received = store
        .receive_remote_index_at(folder, PEER, 9, &[theirs], ME, NOW)
        .unwrap();
    assert_eq!(received, ReceivedBatch::default());
}

#[test]
fn a_rebuilt_index_outdates_the_counters_peers_hold_of_it() {
    let (_dir, mut store) = open();
    // The index is rebuilt at NOW; before it was lost, this device issued counters up to
    // NOW + 5 for "burst" (edits faster than one a second) and NOW for "same".
    let folder = store.ensure_folder_at("f", NOW - 1).unwrap();
    let changes: Vec<LocalChange> = [
        ("burst", &b"written here"[..]),
        ("same", b"written here"),
        ("agreed", b"agreed"),
        ("behind", b"written here"),
    ]
    .iter()
    .map(|(n, c)| change(&store, folder, n, c))
    .collect();
    store
        .apply_local_changes_at(folder, ME, &changes, NOW)
        .unwrap();
    assert_eq!(mine(&store, folder, "same"), NOW);
    let sequence = store.sequence(folder).unwrap();
    let batch = vec![
        remote("burst", b"older", &[(ME, NOW + 5), (PEER.short(), 2)], 1),
        remote("same", b"older", &[(ME, NOW)], 2),
        // Same content: nothing to lose whichever wins.
        remote("agreed", b"agreed", &[(ME, NOW + 5)], 3),
        // An older counter: the local entry outdates it already.
        remote("behind", b"older", &[(ME, NOW - 60)], 4),
    ];
    let received = store
        .receive_remote_index_at(folder, PEER, 9, &batch, ME, NOW)
        .unwrap();
    assert_eq!(received.outdated, ["burst", "same"]);
    assert!(received.refused.is_empty() && received.stuck.is_empty());
    // Past the peer's claim, without taking its other counters (that stays a conflict).
    let burst = local(&store, folder, "burst");
    assert_eq!(burst.version.counter(ME), NOW + 6);
    assert_eq!(burst.version.counter(PEER.short()), 0);
    assert_eq!(burst.blocks, blocks(b"written here"));
    assert_eq!(mine(&store, folder, "same"), NOW + 1);
    assert_eq!(mine(&store, folder, "agreed"), NOW);
    assert_eq!(mine(&store, folder, "behind"), NOW);
    // New sequence numbers, so the index senders send them.
    assert_eq!(store.sequence(folder).unwrap(), sequence + 2);
    assert_eq!(local(&store, folder, "same").sequence, sequence + 2);
    // And what was given counts as issued.
    let echo = remote("burst", b"written here", &[(ME, NOW + 6)], 5);
    let later = NOW - CLOCK_SKEW_ALLOWANCE;
    let received = store
        .receive_remote_index_at(folder, PEER, 9, &[echo], ME, later)
        .unwrap();
    assert!(received.refused.is_empty(), "{received:?}");
}

#[test]
fn a_change_whose_counter_cannot_advance_is_left_out_and_returned() {
    let (_dir, mut store) = open();
    let folder = store.ensure_folder_at("f", NOW - 1).unwrap();
    // Recorded from a peer before such counters were refused.
    let poisoned: VersionVector = [(ME, u64::MAX)].into_iter().collect();
    let x = change(&store, folder, "x", b"one");
    store
        .record_pulled(folder, &x, &poisoned, PEER.short())
        .unwrap();
    let sequence = store.sequence(folder).unwrap();
    let changes = [
        change(&store, folder, "x", b"two"),
        change(&store, folder, "y", b"new"),
    ];
    let stuck = store
        .apply_local_changes_at(folder, ME, &changes, NOW)
        .unwrap();
    assert_eq!(
        stuck,
        [StuckChange {
            name: "x".into(),
            source: CounterExhausted { device: ME }
        }]
    );
    assert_eq!(local(&store, folder, "x").blocks, blocks(b"one"));
    assert_eq!(mine(&store, folder, "y"), NOW);
    assert_eq!(store.sequence(folder).unwrap(), sequence + 1);
}

#[test]
fn an_index_from_before_the_counters_migrates_and_accepts_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        // Schema 4, with a folder whose counters counted changes from 1.
        let conn = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute(
            "INSERT INTO folders (id, index_id, sequence) VALUES ('f', 5, 0)",
            [],
        )
        .unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    let folder = store.folder("f").unwrap().unwrap();
    let x = change(&store, folder, "x", b"one");
    let three: VersionVector = [(ME, 3)].into_iter().collect();
    store.record_pulled(folder, &x, &three, ME).unwrap();
    // What peers hold of the old counters is taken.
    let theirs = remote("x", b"edited there", &[(ME, 3), (PEER.short(), 1)], 1);
    let received = store
        .receive_remote_index_at(folder, PEER, 9, &[theirs], ME, NOW)
        .unwrap();
    assert_eq!(received, ReceivedBatch::default());
    // A change here jumps to the clock.
    let x = change(&store, folder, "x", b"two");
    store.apply_local_changes_at(folder, ME, &[x], NOW).unwrap();
    assert_eq!(mine(&store, folder, "x"), NOW);
}

#[test]
fn a_rebuilt_index_gets_a_new_index_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let old = {
        let mut store = Store::open(&path).unwrap();
        let folder = store.ensure_folder("f").unwrap();
        store.index_id(folder).unwrap()
    };
    std::fs::remove_file(&path).unwrap();
    let mut store = Store::open(&path).unwrap();
    let folder = store.ensure_folder("f").unwrap();
    // Peers that held the old one take the new index whole instead of going on from the
    // old sequence numbers.
    assert_ne!(store.index_id(folder).unwrap(), old);
}

#[test]
fn a_new_index_gives_no_counter_in_the_second_it_was_made() {
    let (_dir, mut store) = open();
    let made = clock::unix_now();
    let folder = store.ensure_folder("f").unwrap();
    let x = change(&store, folder, "x", b"one");
    store.apply_local_changes(folder, ME, &[x]).unwrap();
    let counter = mine(&store, folder, "x");
    // An index rebuilt in that second then gives higher counters than this one did.
    assert!(counter > made, "{counter} in the second {made}");
    assert!(counter <= clock::unix_now(), "{counter} is from the future");
}
