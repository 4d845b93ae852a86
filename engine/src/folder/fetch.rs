//! Fetching one file's content: blocks already in the temp file (an interrupted earlier
//! attempt) are kept, blocks held by local files are copied, the rest are requested from
//! the peers that have this version, many at a time, spread over them; then the file is
//! installed (disk/assemble).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;
use tokio::sync::RwLockReadGuard;
use tracing::{debug, warn};

use super::Folder;
use super::pull::{Expected, PullContext, PullError};
use crate::disk::{assemble, fsutil, reuse, versions};
use crate::model::entry::FileEntry;
use crate::peers::{BlockData, BlockError, BlockRequest, Peers};

/// Block requests in flight per file being pulled.
const REQUESTS_IN_FLIGHT: usize = 128;

/// Assembles `target` in its temp file, then, under the folder's `busy` lock and only if
/// the file at `path` is still as `expected`, renames it over `path`; returns the inode and
/// the lock (held until the caller recorded what it installed). On a full disk the temp
/// file is removed, so the space it took serves other files; any other failure keeps it
/// for the next attempt to resume from.
pub(super) async fn fetch<'a>(
    folder: &'a Folder,
    context: &PullContext,
    target: &FileEntry,
    sources: &[DeviceId],
    path: &Path,
    expected: &Expected,
) -> Result<(u64, RwLockReadGuard<'a, ()>), PullError> {
    check_free_space(folder, target)?;
    let temp = assemble::temp_path(path);
    let result = assemble_file(folder, context, target, sources, path, &temp, expected).await;
    if let Err(PullError::Io(e)) = &result
        && e.kind() == std::io::ErrorKind::StorageFull
    {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Refuses to start a file that would leave the folder's file system with less free space
/// than its `minDiskFree`.
fn check_free_space(folder: &Folder, target: &FileEntry) -> Result<(), PullError> {
    let rule = folder.config().min_disk_free;
    let space = fsutil::space(&folder.path())?;
    let required = rule.required_bytes(space.total);
    let left = space.available.saturating_sub(target.size);
    if left < required {
        return Err(PullError::InsufficientSpace {
            size: target.size,
            left,
            required,
        });
    }
    Ok(())
}

async fn assemble_file<'a>(
    folder: &'a Folder,
    context: &PullContext,
    target: &FileEntry,
    sources: &[DeviceId],
    path: &Path,
    temp: &Path,
    expected: &Expected,
) -> Result<(u64, RwLockReadGuard<'a, ()>), PullError> {
    let file = assemble::open_temp(temp)?;
    let missing = {
        let (store, folders, folder_id, target, temp_file) = (
            folder.store.clone(),
            context.folders.clone(),
            folder.id.clone(),
            target.clone(),
            file.try_clone()?,
        );
        tokio::task::spawn_blocking(move || {
            let lookup = |id: &str| folders.get(id).map(|f| (f.idx, f.path()));
            reuse::fill_from_disk(&store, &lookup, &folder_id, &target, &temp_file)
        })
        .await
        .map_err(std::io::Error::other)??
    };
    let to_fetch: u64 = missing.iter().map(|m| u64::from(m.block.size)).sum();
    let progress = folder.transfers.download(
        &target.name,
        target.size,
        target.size.saturating_sub(to_fetch),
        sources,
    );
    let sources: Arc<[DeviceId]> = sources.into();
    let file = Arc::new(file);
    let mut flusher = assemble::EarlyFlush::new(file.clone());
    let mut requests = tokio::task::JoinSet::new();
    for reuse::Missing { index, block, held } in missing {
        while requests.len() >= REQUESTS_IN_FLIGHT {
            let written = write_fetched(&file, requests.join_next().await)?;
            progress.add(written);
            flusher.wrote(written);
        }
        let request = BlockRequest {
            folder: folder.id.clone(),
            name: target.name.clone(),
            block,
            skip: held.len() as u32,
        };
        requests.spawn(from_peers(
            context.peers.clone(),
            (request, held),
            sources.clone(),
            index,
        ));
    }
    while let Some(result) = requests.join_next().await {
        let written = write_fetched(&file, Some(result))?;
        progress.add(written);
        flusher.wrote(written);
    }
    flusher.finish().await;
    // The download took a while: a scan may have seen the file change meanwhile.
    // Shared: installs of other names go on beside it (their fsyncs overlap); a scan or
    // any other change to the folder waits for all of them.
    let busy = folder.busy.read().await;
    expected.check(folder, &target.name, path).await?;
    // fsync blocks for milliseconds: on a blocking thread, so the network goes on and the
    // fsyncs of files pulled side by side share journal commits.
    let (root, settings) = (folder.path(), versions::Settings::of(&folder.config()));
    let (target, path, temp) = (target.clone(), path.to_owned(), temp.to_owned());
    let installed = tokio::task::spawn_blocking(move || {
        assemble::install(file, &target, &temp, &path, || {
            versions::keep(&root, settings, &target.name, &path).map_err(|e| match e {
                versions::KeepError::Io(e) => e,
                other => std::io::Error::other(other),
            })
        })
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok((installed, busy))
}

/// What a block request task ends with.
type Fetched = Result<Result<(Block, BlockData), PullError>, tokio::task::JoinError>;

/// Writes a fetched block where it belongs; returns the bytes written.
fn write_fetched(file: &fs::File, result: Option<Fetched>) -> Result<u64, PullError> {
    match result {
        // Written, the data is dropped and its room in the peer's window freed.
        Some(Ok(Ok((block, data)))) => Ok(assemble::write_block(file, block.offset, &data.data)?),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(PullError::Io(std::io::Error::other(e))),
        None => Ok(0),
    }
}

/// A block from the connected peers that have this version, checked against its hash; a
/// peer whose data fails the check, or that is too slow, is not asked again for it. Block
/// `index` picks the peer to ask first, so requests spread over all sources. `held` is the
/// start of the block this device has (the request skips it): put before what the peer
/// sends, and dropped (the whole block asked for) if the two do not make the block.
async fn from_peers(
    peers: Arc<dyn Peers>,
    (mut request, mut held): (BlockRequest, Vec<u8>),
    sources: Arc<[DeviceId]>,
    index: usize,
) -> Result<(Block, BlockData), PullError> {
    let block = request.block;
    let count = sources.len().max(1);
    let mut bad = Vec::new();
    // A request that fails in transit is tried again (a few times, briefly) before the file
    // is given up until the next pull.
    for attempt in 0..3u64 {
        for device in sources
            .iter()
            .cycle()
            .skip(index % count)
            .take(sources.len())
        {
            if bad.contains(device) || !peers.is_connected(*device) {
                continue;
            }
            match peers.request_block(*device, &request).await {
                Ok(mut data) => {
                    if !held.is_empty() && held.len() + data.data.len() == block.size as usize {
                        let mut whole = std::mem::take(&mut held);
                        whole.extend_from_slice(&data.data);
                        data.data = whole.into();
                    }
                    if blake3::hash(&data.data) == block.hash {
                        return Ok((block, data));
                    }
                    if request.skip > 0 {
                        debug!(name = %request.name, offset = block.offset, "the start held here is not this block's; asking for all of it");
                        (request.skip, held) = (0, Vec::new());
                        continue;
                    }
                    warn!(device = %device.short(), name = %request.name, offset = block.offset, "block failed its hash; discarded");
                    bad.push(*device);
                }
                // Asked again at once, on the link that took the old one's place.
                Err(BlockError::Moved) => {
                    debug!(device = %device.short(), name = %request.name, offset = block.offset, "the connection moved; asking again");
                }
                Err(e @ (BlockError::Slow | BlockError::Overdue)) => {
                    warn!(device = %device.short(), name = %request.name, offset = block.offset, error = %e, "block request given up; other peers are asked");
                    bad.push(*device);
                }
                Err(e) => {
                    warn!(device = %device.short(), name = %request.name, offset = block.offset, attempt, error = %e, "block request failed");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    Err(PullError::Unavailable(block.offset))
}
