//! The store's own tests: real SQLite files in temporary directories.

use super::*;
use peerfold_protocol::ShortId;

fn change(name: &str, previous: Option<i64>, blocks: Vec<Block>) -> LocalChange {
    LocalChange {
        previous,
        name: name.into(),
        kind: FileKind::File,
        size: blocks.iter().map(|b| u64::from(b.size)).sum::<u64>(),
        permissions: 0o644,
        modified: Timestamp {
            seconds: 1,
            nanos: 2,
        },
        deleted: false,
        invalid: false,
        symlink_target: String::new(),
        blocks: Some(blocks),
        inode: 7,
    }
}

fn block(offset: u64, data: &[u8]) -> Block {
    Block {
        offset,
        size: data.len() as u32,
        hash: blake3::hash(data),
    }
}

fn rows(store: &Store, folder: FolderIdx) -> Vec<LocalRow> {
    let mut out = Vec::new();
    store
        .reader()
        .unwrap()
        .for_each_local_row(folder, |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn changes_get_sequences_versions_and_block_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("index.db")).unwrap();
    let folder = store.ensure_folder("f").unwrap();
    assert_eq!(store.ensure_folder("f").unwrap(), folder);
    let me = ShortId(42);
    let (a, b) = (block(0, b"aaaa"), block(4, b"bbbb"));
    store
        .apply_local_changes(folder, me, &[change("x", None, vec![a, b])])
        .unwrap();
    assert_eq!(store.sequence(folder).unwrap(), 1);
    assert_eq!(store.local_files_with_block(&a.hash).unwrap(), 1);
    let id = rows(&store, folder)[0].id;
    // Replace block b by c: b leaves the block index, c enters it.
    let c = block(4, b"cccc");
    store
        .apply_local_changes(folder, me, &[change("x", Some(id), vec![a, c])])
        .unwrap();
    assert_eq!(store.local_files_with_block(&b.hash).unwrap(), 0);
    assert_eq!(store.local_files_with_block(&c.hash).unwrap(), 1);
    let mut entries = Vec::new();
    store
        .for_each_local_entry(folder, |e| {
            entries.push(e);
            Ok::<(), StoreError>(())
        })
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].sequence, 2);
    // Time-based counters (see counter_tests.rs): past the first one by at least one.
    assert!(entries[0].version.counter(me) > 1_600_000_000);
    assert_eq!(entries[0].blocks, vec![a, c]);
}

#[test]
fn reopening_keeps_data_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let mut store = Store::open(&path).unwrap();
        let folder = store.ensure_folder("f").unwrap();
        store
            .apply_local_changes(folder, ShortId(1), &[change("y", None, vec![])])
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let folder = store.folder("f").unwrap().unwrap();
    assert_eq!(rows(&store, folder).len(), 1);
}

#[test]
fn garbage_and_foreign_files_are_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&garbage).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("peerfold scan"));

    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let err = Store::open(&foreign).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    drop(Store::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

#[test]
fn a_block_is_listed_only_at_its_offset_with_its_size_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("index.db")).unwrap();
    let folder = store.ensure_folder("f").unwrap();
    let (a, b) = (block(0, b"aaaa"), block(4, b"bbbbbb"));
    store
        .apply_local_changes(folder, ShortId(1), &[change("x", None, vec![a, b])])
        .unwrap();
    // What serving checks a request against: the block, exactly, in the file's list.
    let listed = |store: &Store, name: &str, block: Block| {
        store
            .local_block_list(folder, name, None)
            .unwrap()
            .and_then(|listed| listed.blocks)
            .is_some_and(|blocks| blocks.contains(&block))
    };
    assert!(listed(&store, "x", a) && listed(&store, "x", b));
    // A caller that holds this version's list gets the sequence alone.
    let sequence = store
        .local_block_list(folder, "x", None)
        .unwrap()
        .unwrap()
        .sequence;
    let again = store
        .local_block_list(folder, "x", Some(sequence))
        .unwrap()
        .unwrap();
    assert_eq!(again.sequence, sequence);
    assert!(again.blocks.is_none());
    assert!(!listed(&store, "y", a), "another name");
    assert!(
        !listed(&store, "x", Block { offset: 0, ..b }),
        "another offset"
    );
    assert!(
        !listed(
            &store,
            "x",
            Block {
                size: 16 << 20,
                ..b
            }
        ),
        "another size"
    );
    assert!(!listed(&store, "x", block(4, b"cccccc")), "another hash");
    assert!(
        !listed(&store, "x", Block { offset: 10, ..b }),
        "past the end"
    );
    let mut gone = change("x", Some(rows(&store, folder)[0].id), vec![]);
    gone.deleted = true;
    store
        .apply_local_changes(folder, ShortId(1), &[gone])
        .unwrap();
    assert!(!listed(&store, "x", a), "a deleted file lists nothing");
}

#[test]
fn every_connection_keeps_its_query_plans_whatever_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("index.db")).unwrap();
    let qpsg = rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG;
    assert!(store.reads.conn.db_config(qpsg).unwrap(), "the writer");
    assert!(
        store.reader().unwrap().conn.db_config(qpsg).unwrap(),
        "a reader"
    );
}

#[test]
fn readers_keep_smaller_page_caches_than_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("index.db")).unwrap();
    let cache = |conn: &Connection| -> i64 {
        conn.pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(cache(&store.reads.conn), WRITER_CACHE_KIB);
    assert_eq!(cache(&store.reader().unwrap().conn), READER_CACHE_KIB);
}
