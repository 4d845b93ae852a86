//! Pulled versions that end together share a transaction, and each caller still gets its
//! own outcome: real SQLite files.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use peerfold_protocol::ShortId;
use peerfold_protocol::version::VersionVector;

use super::{PulledRecords, SyncDir};
use crate::model::entry::{FileKind, Timestamp};
use crate::store::{FolderIdx, LocalChange, StoreError, StoreHandle};

const PEER: ShortId = ShortId(7);

fn pulled_file(name: &str) -> LocalChange {
    LocalChange {
        previous: None,
        name: name.into(),
        kind: FileKind::File,
        size: 0,
        permissions: 0o644,
        modified: Timestamp {
            seconds: 1,
            nanos: 0,
        },
        deleted: false,
        invalid: false,
        symlink_target: String::new(),
        blocks: Some(Vec::new()),
        inode: 1,
    }
}

fn version(counter: u64) -> VersionVector {
    [(PEER, counter)].into_iter().collect()
}

fn open() -> (tempfile::TempDir, StoreHandle, FolderIdx) {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::open(&dir.path().join("index.db")).unwrap();
    let folder = store.write_blocking(|s| s.ensure_folder("f")).unwrap();
    (dir, store, folder)
}

/// Directory syncs that succeed and do nothing.
fn no_sync() -> SyncDir {
    Arc::new(|_: &Path| Ok(()))
}

/// The directory a test name's file is in (`d1/f` is in `/pulled/d1`).
fn dir_of(name: &str) -> Option<PathBuf> {
    let (dir, _) = name.rsplit_once('/')?;
    Some(Path::new("/pulled").join(dir))
}

/// Holds the writer on a thread of its own until the returned sender is used (or dropped).
fn hold_writer(store: &StoreHandle) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let store = store.clone();
    let holder = std::thread::spawn(move || {
        let _writer = store.lock_writer_blocking();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();
    (release_tx, holder)
}

/// Records `names` at once (one task each) while the writer is held, waits until all of
/// them queued, then lets the writer go; their outcomes, in order.
async fn record_together(
    store: &StoreHandle,
    records: &PulledRecords,
    names: &[&str],
) -> Vec<Result<u64, StoreError>> {
    let (release, holder) = hold_writer(store);
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (records, change) = (records.clone(), pulled_file(name));
            let dir = dir_of(name);
            tokio::spawn(async move {
                records
                    .record(change, version(i as u64 + 1), PEER, dir)
                    .await
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while records.lock_queue().pending.len() < names.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the records never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    release.send(()).unwrap();
    holder.join().unwrap();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queued_while_the_writer_is_busy_commit_together_each_with_its_sequence() {
    let (_dir, store, folder) = open();
    let records = PulledRecords::new(store.clone(), folder, no_sync());
    let names: Vec<String> = (0..20).map(|i| format!("file-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    let outcomes = record_together(&store, &records, &names).await;

    let mut sequences: Vec<u64> = outcomes.into_iter().map(Result::unwrap).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=20).collect::<Vec<u64>>());
    assert!(records.lock_queue().pending.is_empty());
    let reader = store.reader().unwrap();
    assert_eq!(reader.sequence(folder).unwrap(), 20);
    for (i, name) in names.iter().enumerate() {
        let entry = reader.local_entry(folder, name).unwrap().expect(name);
        assert_eq!(entry.version, version(i as u64 + 1), "{name}");
        assert_eq!(entry.modified_by, PEER, "{name}");
    }
    // The next record, alone, gets the next sequence number.
    let alone = records
        .record(pulled_file("later"), version(1), PEER, None)
        .await
        .unwrap();
    assert_eq!(alone, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_fails_does_not_take_the_others_of_its_transaction_with_it() {
    let (_dir, store, folder) = open();
    let records = PulledRecords::new(store.clone(), folder, no_sync());
    records
        .record(pulled_file("damaged"), version(1), PEER, None)
        .await
        .unwrap();
    // Its stored version no longer decodes: recording over it fails.
    store
        .write_blocking(|s| {
            s.reads.conn.execute(
                "UPDATE files SET version = x'ff' WHERE name = 'damaged'",
                [],
            )?;
            Ok::<_, StoreError>(())
        })
        .unwrap();

    let outcomes = record_together(&store, &records, &["first", "damaged", "last"]).await;

    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_err(), "the damaged entry was recorded over");
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    let reader = store.reader().unwrap();
    for name in ["first", "last"] {
        assert!(
            reader.local_entry(folder, name).unwrap().is_some(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_caller_went_away_before_its_transaction_is_never_written() {
    let (_dir, store, folder) = open();
    let records = PulledRecords::new(store.clone(), folder, no_sync());
    let (release, holder) = hold_writer(&store);
    let gone = {
        let records = records.clone();
        tokio::spawn(async move {
            records
                .record(pulled_file("gone"), version(1), PEER, None)
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while records.lock_queue().pending.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    assert!(records.lock_queue().pending.is_empty(), "taken back out");
    let kept = {
        let records = records.clone();
        tokio::spawn(async move {
            records
                .record(pulled_file("kept"), version(1), PEER, None)
                .await
        })
    };
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(kept.await.unwrap().unwrap(), 1);
    let reader = store.reader().unwrap();
    assert!(reader.local_entry(folder, "gone").unwrap().is_none());
    assert!(reader.local_entry(folder, "kept").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_directory_of_a_batch_is_synced_once_before_its_records_are_written() {
    let (_dir, store, folder) = open();
    let synced: Arc<Mutex<Vec<(PathBuf, bool)>>> = Arc::default();
    let sync: SyncDir = {
        let (synced, store) = (synced.clone(), store.clone());
        Arc::new(move |dir: &Path| {
            // What the index holds of this directory's files when it is synced.
            let reader = store.reader().unwrap();
            let any_recorded = ["d1/a", "d1/b", "d1/c", "d2/a", "d2/b"]
                .iter()
                .any(|name| reader.local_entry(folder, name).unwrap().is_some());
            synced.lock().unwrap().push((dir.to_owned(), any_recorded));
            Ok(())
        })
    };
    let records = PulledRecords::new(store.clone(), folder, sync);

    let outcomes = record_together(
        &store,
        &records,
        &["d1/a", "d1/b", "d2/a", "d1/c", "d2/b", "top"],
    )
    .await;

    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let mut synced = synced.lock().unwrap().clone();
    synced.sort();
    assert_eq!(
        synced,
        vec![
            (PathBuf::from("/pulled/d1"), false),
            (PathBuf::from("/pulled/d2"), false),
        ],
        "each directory once, before any record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_cannot_be_synced_fails_only_the_records_of_its_files() {
    let (_dir, store, folder) = open();
    let sync: SyncDir = Arc::new(|dir: &Path| {
        if dir.ends_with("broken") {
            Err(io::Error::other("injected: the disk said no"))
        } else {
            Ok(())
        }
    });
    let records = PulledRecords::new(store.clone(), folder, sync);

    let outcomes = record_together(
        &store,
        &records,
        &["fine/a", "broken/a", "broken/b", "fine/b"],
    )
    .await;

    assert!(outcomes[0].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
    for failed in &outcomes[1..3] {
        match failed {
            Err(StoreError::DirectorySync { dir, source }) => {
                assert_eq!(dir, Path::new("/pulled/broken"));
                assert!(source.to_string().contains("injected"), "{source}");
            }
            other => panic!("expected a directory-sync failure, got {other:?}"),
        }
    }
    let reader = store.reader().unwrap();
    assert!(reader.local_entry(folder, "fine/a").unwrap().is_some());
    assert!(reader.local_entry(folder, "fine/b").unwrap().is_some());
    assert!(reader.local_entry(folder, "broken/a").unwrap().is_none());
    assert!(reader.local_entry(folder, "broken/b").unwrap().is_none());
}
