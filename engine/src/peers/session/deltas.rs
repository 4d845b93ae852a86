//! Block lists as changes (`model::block_delta`) on the index exchange. The sender gives a
//! large file's list as a change to the entry the peer announced for the same name (for a
//! file both hold, the list before the edit); the receiver makes it whole again from its own
//! entry before the batch is checked and stored.
//!
//! The receiver's entry can move on after it announced it (it changed the file too): the
//! sender's delta then names a base that is gone. The receiver stores the batch up to that
//! entry and ends the session; the next one resends from there, and by then the sender holds
//! the receiver's newer entry (or sends the whole list when they share nothing). Entries
//! held of an index the peer has replaced are never bases (their sequence numbers name
//! another list), and a base's digest catches any other list under the same number.

use std::collections::HashMap;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;
use peerfold_protocol::wire;
use tracing::warn;

use crate::folder::FolderHandle;
use crate::model::block_delta::{self, DeltaError};
use crate::model::entry::FileEntry;
use crate::store::StoreError;

/// The peer's announced entries (sequence number, block list) for the large files of
/// `batch`, by name: the bases their lists can be sent as changes to. None while what is
/// held of the peer is an index it has since replaced (`index_id` is the one it has now):
/// its entries there would name sequence numbers of a list it no longer holds, and a peer
/// whose new index is still empty would never let them go.
pub(super) async fn bases(
    folder: &FolderHandle,
    (peer, index_id): (DeviceId, u64),
    batch: &[FileEntry],
) -> HashMap<String, (u64, Vec<Block>)> {
    let names: Vec<String> = batch
        .iter()
        .filter(|e| e.blocks.len() >= block_delta::MIN_BLOCKS)
        .map(|e| e.name.clone())
        .collect();
    if names.is_empty() {
        return HashMap::new();
    }
    let idx = folder.idx;
    let read = folder
        .store
        .read(move |r| match r.remote_index_state(idx, peer)? {
            Some((held, _)) if held == index_id => r.block_lists(idx, Some(peer), &names),
            _ => Ok(HashMap::new()),
        });
    read.await.unwrap_or_else(|e: StoreError| {
        // Whole lists then: they cost bytes, not correctness.
        warn!(error = %e, "cannot read the peer's block lists");
        HashMap::new()
    })
}

/// `info` (the wire form of `entry`) with its block list as a change to `base`, when they
/// share blocks.
pub(super) fn shorten(
    info: &mut wire::FileInfo,
    entry: &FileEntry,
    base: Option<&(u64, Vec<Block>)>,
) {
    if let Some((sequence, base)) = base
        && let Some(shared) = block_delta::shared(base, &entry.blocks)
    {
        block_delta::shorten(info, (*sequence, base), shared);
    }
}

/// Makes the block lists of a received batch whole from this device's entries. Returns the
/// batch up to (not including) the first entry whose base is gone, with that entry's
/// sequence number; the rest must come again. A delta that does not fit its base stays on
/// its entry, which `FileEntry::from_wire` then refuses. A store that cannot be read ends
/// the session as itself (taking it for "every base gone" would name the wrong cause).
pub(super) async fn expand(
    folder: &FolderHandle,
    mut files: Vec<wire::FileInfo>,
) -> Result<(Vec<wire::FileInfo>, Option<u64>), StoreError> {
    let names: Vec<String> = files
        .iter()
        .filter(|f| f.blocks_delta.is_some())
        .map(|f| f.name.clone())
        .collect();
    if names.is_empty() {
        return Ok((files, None));
    }
    let idx = folder.idx;
    let bases = folder
        .store
        .read(move |r| r.block_lists(idx, None, &names))
        .await?;
    let mut gone: Option<u64> = None;
    for info in &mut files {
        let base = bases.get(&info.name).map(|(s, b)| (*s, b.as_slice()));
        match block_delta::expand(info, base) {
            Ok(()) | Err(DeltaError::OutOfRange) => {}
            Err(DeltaError::BaseGone) => {
                gone = Some(gone.map_or(info.sequence, |g| g.min(info.sequence)));
            }
        }
    }
    if let Some(first_gone) = gone {
        files.retain(|f| f.sequence < first_gone);
    }
    Ok((files, gone))
}
