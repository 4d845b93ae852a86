//! Blocks taken from local files for a pulled version: copied in the kernel from a file
//! that still matches its entry, read and hashed from one that does not, and checked
//! either way.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use peerfold_protocol::chunking::Chunker;

use super::{Missing, fill_from_disk};
use crate::model::entry::FileEntry;
use crate::testing::Node;

/// 6 MiB that chunk into many blocks, none alike.
fn content() -> Vec<u8> {
    let mut data = vec![0; 6 << 20];
    blake3::Hasher::new()
        .update(b"reuse tests")
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Writes `data` over the file at `path` with a modification time a minute from now:
/// the coarse kernel clock can give two writes in a row the same time.
fn rewrite(path: &std::path::Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
}

/// The entry a peer announces for `name` with `data`.
fn target(node: &Node, name: &str, data: &[u8]) -> FileEntry {
    let idx = node.folder().idx;
    let mut entry = node
        .context
        .store
        .read_blocking(|r| r.local_entry(idx, name))
        .map_err(|e: crate::store::StoreError| e)
        .unwrap()
        .expect("the local entry");
    entry.blocks = Chunker::new().blocks(data, data.len() as u64).unwrap();
    entry.size = data.len() as u64;
    entry
}

/// Fills a temp file for `wanted` from the node's disk; returns it and the indexes of the
/// blocks left to fetch.
fn fill(node: &Node, wanted: &FileEntry) -> (File, Vec<usize>) {
    let (temp, missing) = fill_missing(node, wanted);
    (temp, missing.into_iter().map(|m| m.index).collect())
}

fn fill_missing(node: &Node, wanted: &FileEntry) -> (File, Vec<Missing>) {
    let temp_path = node.root().join(".peerfold.temp.tmp");
    let temp = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp_path)
        .unwrap();
    let folder = node.folder();
    let root = node.root();
    let lookup = move |id: &str| (id == "docs").then(|| (folder.idx, root.clone()));
    let missing = fill_from_disk(&node.context.store, &lookup, "docs", wanted, &temp).unwrap();
    (temp, missing)
}

/// Every block of `wanted` not in `missing` is in `temp` as the target has it.
fn assert_filled(temp: &File, wanted: &FileEntry, data: &[u8], missing: &[usize]) {
    for (i, block) in wanted.blocks.iter().enumerate() {
        if missing.contains(&i) {
            continue;
        }
        let mut buf = vec![0; block.size as usize];
        temp.read_exact_at(&mut buf, block.offset).unwrap();
        let at = block.offset as usize;
        assert_eq!(buf, data[at..at + buf.len()], "block {i}");
    }
}

#[test]
fn an_overwrite_and_an_insert_take_every_unchanged_block_from_the_old_version() {
    let node = Node::new(&[]);
    let old = content();
    node.write_file("big.bin", &old);

    let mut overwritten = old.clone();
    overwritten[3 << 20] ^= 0xff;
    let wanted = target(&node, "big.bin", &overwritten);
    let (temp, missing) = fill(&node, &wanted);
    assert_eq!(
        missing.len(),
        1,
        "only the changed block is fetched: {missing:?}"
    );
    assert_filled(&temp, &wanted, &overwritten, &missing);

    // One byte in front: every offset moves (no 4 KiB alignment left), still copied.
    let mut inserted = vec![7u8];
    inserted.extend_from_slice(&old);
    let wanted = target(&node, "big.bin", &inserted);
    let (temp, missing) = fill(&node, &wanted);
    assert!(missing.len() <= 2, "the first block or two: {missing:?}");
    assert_filled(&temp, &wanted, &inserted, &missing);
}

#[test]
fn a_source_changed_since_its_scan_is_read_and_hashed() {
    let node = Node::new(&[]);
    let old = content();
    node.write_file("big.bin", &old);
    let wanted = target(&node, "big.bin", &old);
    // Changed on disk after the scan (new time): its blocks are not trusted unread.
    let mut changed = old.clone();
    changed[1 << 20] ^= 0xff;
    rewrite(&node.root().join("big.bin"), &changed);
    let (temp, missing) = fill(&node, &wanted);
    assert_eq!(
        missing.len(),
        1,
        "the changed block is fetched: {missing:?}"
    );
    assert_filled(&temp, &wanted, &old, &missing);
}

#[test]
fn the_edges_of_a_copied_range_are_read_back() {
    let node = Node::new(&[]);
    let old = content();
    node.write_file("big.bin", &old);
    let wanted = target(&node, "big.bin", &old);
    // Its first byte changed and its time put back: the file still looks as scanned, and
    // the copied range's first block fails its hash as read back.
    let path = node.root().join("big.bin");
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let file = File::options().write(true).open(&path).unwrap();
    file.write_all_at(&[old[0] ^ 0xff], 0).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    assert!(modified > SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    let (temp, missing) = fill(&node, &wanted);
    assert_eq!(missing, vec![0], "the first block is fetched");
    assert_filled(&temp, &wanted, &old, &missing);
}

#[test]
fn after_an_append_the_grown_last_block_is_fetched_past_what_was_there() {
    let node = Node::new(&[]);
    let old = content();
    node.write_file("big.bin", &old);
    let mut appended = old.clone();
    appended.extend_from_slice(&content()[..1 << 20]);
    let wanted = target(&node, "big.bin", &appended);
    let (temp, missing) = fill_missing(&node, &wanted);
    let indexes: Vec<usize> = missing.iter().map(|m| m.index).collect();
    assert_filled(&temp, &wanted, &appended, &indexes);
    // The block the old end falls in: its start is held, from the old file's last block.
    let spanning: Vec<&Missing> = missing
        .iter()
        .filter(|m| m.block.offset < old.len() as u64)
        .collect();
    assert_eq!(spanning.len(), 1, "one block spans the old end");
    let m = spanning[0];
    assert_eq!(m.held, old[m.block.offset as usize..]);
    // The new blocks past the old end hold nothing.
    assert!(
        missing
            .iter()
            .filter(|m| m.block.offset >= old.len() as u64)
            .all(|m| m.held.is_empty())
    );
}
