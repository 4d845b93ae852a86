//! One block request: checked, then checked against the index, then read. Nothing is read
//! from disk for a block the local index does not list in that file at that offset with that
//! size and hash, and nothing beyond the connection's byte budget.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::{Block, MAX_BLOCK_SIZE};
use peerfold_protocol::wire;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::lists::BlockLists;
use crate::folder::registry::FolderRegistry;
use crate::model::names;
use crate::store::{ListedFile, StoreHandle};

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
    (budget, disk_reads): (&Arc<Semaphore>, &Semaphore),
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
    let (idx, name) = (folder.idx, request.name.clone());
    let known = lists.sequence(idx, &name);
    let sequence = match store
        .read(move |r| r.local_block_list(idx, &name, known))
        .await
    {
        Ok(Some(ListedFile {
            sequence,
            blocks: None,
        })) => sequence,
        Ok(Some(ListedFile {
            sequence,
            blocks: Some(blocks),
        })) => {
            lists.keep(idx, &request.name, sequence, blocks);
            sequence
        }
        Ok(None) => return Answer::Missing,
        Err(e) => {
            warn!(error = %e, "cannot look up a requested block");
            return Answer::Missing;
        }
    };
    if !lists.lists(idx, &request.name, sequence, &block) {
        return Answer::Missing;
    }
    let Ok(held) = budget.clone().acquire_many_owned(block.size).await else {
        return Answer::Missing;
    };
    // The file may have changed since it was indexed: what does not hash right is not sent.
    // A `skip` leaves out the start the requester holds (the whole block is checked here).
    let skip = request.skip as usize;
    let Ok(_reading) = disk_reads.acquire().await else {
        return Answer::Missing;
    };
    let data = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path).ok()?;
        let mut data = vec![0u8; block.size as usize];
        file.read_exact_at(&mut data, block.offset).ok()?;
        let mut data = Some(data).filter(|data| blake3::hash(data) == block.hash)?;
        data.drain(..skip);
        Some(data)
    })
    .await
    .ok()
    .flatten();
    match data {
        Some(data) => Answer::Data(data, held),
        None => Answer::Missing,
    }
}
