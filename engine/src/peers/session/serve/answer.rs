//! One block request: checked, then checked against the index, then read. Nothing is read
//! from disk for a block the local index does not list in that file at that offset with that
//! size and hash, and nothing beyond the connection's byte budget. A block of a file changed
//! since it was indexed is hashed before it goes out (`read_block`).

use std::sync::Arc;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::{Block, MAX_BLOCK_SIZE};
use peerfold_protocol::wire;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::lists::{BlockLists, holds};
use crate::disk::scanner::walk_timestamp;
use crate::folder::registry::FolderRegistry;
use crate::model::entry::Timestamp;
use crate::model::names;
use crate::peers::flow::Allowance;
use crate::store::StoreHandle;

/// What a request gets.
pub(super) enum Answer {
    /// The block's bytes, holding their share of the connection's budget until sent.
    Data(Vec<u8>, OwnedSemaphorePermit),
    /// Refused: no well-behaved peer asks this (unknown or unshared folder, bad name, size
    /// or hash).
    Malformed(wire::ErrorCode),
    /// Refused: not here, or not any more (a file can change under a pull).
    Missing,
}

/// Answers `request` from `peer`; `budget` holds the bytes read for this peer and not yet
/// sent, `disk_reads` the turns to read from disk, `lists` the block lists its requests
/// were checked against lately.
pub(super) async fn answer(
    folders: &FolderRegistry,
    store: &StoreHandle,
    (budget, disk_reads): (&Allowance, &Semaphore),
    lists: &BlockLists,
    peer: DeviceId,
    request: &wire::Request,
) -> Answer {
    let Some(folder) = folders.get(&request.folder) else {
        return Answer::Malformed(wire::ErrorCode::Generic);
    };
    if !folder.shares_with(peer)
        || names::validate(&request.name).is_err()
        || request.size == 0
        || request.size > MAX_BLOCK_SIZE
        || request.skip >= request.size
    {
        return Answer::Malformed(wire::ErrorCode::InvalidFile);
    }
    let Ok(hash) = <[u8; 32]>::try_from(request.hash.as_slice()) else {
        return Answer::Malformed(wire::ErrorCode::InvalidFile);
    };
    let Ok(path) = names::join(&folder.path(), &request.name) else {
        return Answer::Malformed(wire::ErrorCode::InvalidFile);
    };
    let block = Block {
        offset: request.offset,
        size: request.size,
        hash: blake3::Hash::from_bytes(hash),
    };
    // Only blocks the index lists (never ignored or unindexed files, never a made-up size),
    // asked before the disk: a peer learns nothing it does not already know the hash of,
    // and a wrong guess costs an index lookup, not a read.
    let idx = folder.idx;
    // The list kept for this file, held here: while the store answers, other files'
    // requests can push it out of the cache (four lists per connection), which answered
    // their blocks "no such file" (hundreds per 20,000 small files, each retried later).
    let cached = lists.get(idx, &request.name);
    let Some(held) = budget.hold(block.size).await else {
        return Answer::Missing;
    };
    let Ok(_reading) = disk_reads.acquire().await else {
        return Answer::Missing;
    };
    // The lookup and the read in one blocking turn: a thread woken per request, not two
    // (small files are one block each, so one request each).
    let (store, name, skip) = (store.clone(), request.name.clone(), request.skip as usize);
    let served = tokio::task::spawn_blocking(move || {
        look_up_and_read(&store, idx, &name, cached, &path, &block, skip)
    })
    .await;
    match served {
        Ok(Ok(Some(served))) => {
            if let Some(blocks) = served.fresh_list {
                lists.keep(idx, &request.name, served.sequence, blocks);
            }
            match served.data {
                Some(data) => Answer::Data(data, held),
                None => Answer::Missing,
            }
        }
        Ok(Ok(None)) | Err(_) => Answer::Missing,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot look up a requested block");
            Answer::Missing
        }
    }
}

/// What one blocking turn found for a request whose file the index lists.
struct Served {
    /// The version of the file the index holds.
    sequence: u64,
    /// Its block list, when the store had to read it (not the kept one): to keep.
    fresh_list: Option<Arc<Vec<Block>>>,
    /// The block's bytes, if the list holds the block and the disk still has it.
    data: Option<Vec<u8>>,
}

/// On a blocking thread: checks `block` against the index's list for `name` (the `cached`
/// one while its version is current) and reads it if listed. `None` when the index lists
/// no such file or the cached list is stale and the store did not return one.
fn look_up_and_read(
    store: &StoreHandle,
    idx: crate::store::FolderIdx,
    name: &str,
    cached: Option<(u64, Arc<Vec<Block>>)>,
    path: &std::path::Path,
    block: &Block,
    skip: usize,
) -> Result<Option<Served>, crate::store::StoreError> {
    let known = cached.as_ref().map(|(sequence, _)| *sequence);
    let Some(listed) = store.read_blocking(|r| r.local_block_list(idx, name, known))? else {
        return Ok(None);
    };
    let (fresh_list, blocks) = match (listed.blocks, cached) {
        (Some(blocks), _) => {
            let blocks = Arc::new(blocks);
            (Some(blocks.clone()), blocks)
        }
        (None, Some((kept, blocks))) if kept == listed.sequence => (None, blocks),
        _ => return Ok(None),
    };
    let indexed = (listed.size, listed.modified);
    let data = holds(&blocks, block)
        .then(|| read_block(path, block, indexed, skip))
        .flatten();
    Ok(Some(Served {
        sequence: listed.sequence,
        fresh_list,
        data,
    }))
}

/// Reads `block` of the file at `path`, without the first `skip` bytes (the requester holds
/// them). A file whose size and time are still those it was indexed with holds what was
/// indexed: its blocks go out unhashed, as the requester checks every hash anyway. A file
/// changed since is checked here, so a stale block is never sent.
fn read_block(
    path: &std::path::Path,
    block: &Block,
    (size, modified): (u64, Timestamp),
    skip: usize,
) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let len = block.size as usize;
    // Read into spare capacity: zeroing 128 KiB per block first cost as much as a copy.
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        let at = block.offset + data.len() as u64;
        // Extends `data` by what was read.
        let read = rustix::io::pread(&file, rustix::buffer::spare_capacity(&mut data), at).ok()?;
        if read == 0 {
            return None;
        }
    }
    let unchanged = file
        .metadata()
        .is_ok_and(|m| m.len() == size && walk_timestamp(&m) == modified);
    if !unchanged && blake3::hash(&data) != block.hash {
        return None;
    }
    data.drain(..skip);
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of 8 KiB and its one block, with the size and time it has now.
    fn indexed_file(dir: &std::path::Path) -> (std::path::PathBuf, Block, (u64, Timestamp)) {
        let path = dir.join("file");
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let block = Block {
            offset: 0,
            size: 8192,
            hash: blake3::hash(&data),
        };
        let meta = std::fs::metadata(&path).unwrap();
        (path, block, (meta.len(), walk_timestamp(&meta)))
    }

    fn touch(path: &std::path::Path, when: std::time::SystemTime) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(when).unwrap();
    }

    #[test]
    fn an_unchanged_file_serves_its_block_past_the_skip() {
        let dir = tempfile::tempdir().unwrap();
        let (path, block, indexed) = indexed_file(dir.path());
        let data = read_block(&path, &block, indexed, 100).unwrap();
        assert_eq!(data.len(), 8192 - 100);
        assert_eq!(data[0], 100, "the first byte past the skip");
    }

    #[test]
    fn a_file_changed_since_indexed_is_checked_before_it_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let (path, block, indexed) = indexed_file(dir.path());
        // Same size, other bytes, another time: the hash no longer matches.
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        touch(&path, later);
        assert_eq!(read_block(&path, &block, indexed, 0), None);
        // Touched but not changed: the hash still matches, so it is served.
        let (path, block, indexed) = indexed_file(dir.path());
        touch(&path, later);
        assert_eq!(
            read_block(&path, &block, indexed, 0).map(|d| d.len()),
            Some(8192)
        );
        // Shorter than the block: nothing.
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(read_block(&path, &block, indexed, 0), None);
    }
}
