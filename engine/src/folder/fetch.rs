//! Fetching one file's content: blocks already in the temp file (an interrupted earlier
//! attempt) are kept, blocks held by local files are copied, the rest are requested from
//! the peers that have this version, many at a time, spread over them; then the file is
//! installed (disk/assemble).

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;
use tokio::sync::RwLockReadGuard;
use tracing::{debug, warn};

use super::FolderHandle;
use super::pull::{Expected, OnDisk, PullContext, PullError, disk_version, prepare};
use crate::config::MinDiskFree;
use crate::disk::{assemble, fsutil, reuse, versions};
use crate::model::entry::FileEntry;
use crate::model::names;
use crate::peers::{BlockData, BlockError, BlockRequest, Peers};

/// Block requests in flight per file being pulled.
const REQUESTS_IN_FLIGHT: usize = 128;

/// What a file's download starts from, made on one blocking thread.
struct Started {
    /// What the file at the target's path must still be when the download is installed.
    expected: Expected,
    /// The version as it will be written (`ignorePerms` keeps the local mode).
    on_disk: FileEntry,
    /// The temp file, holding what an earlier attempt and local files had.
    file: fs::File,
    /// The blocks still to fetch.
    missing: Vec<reuse::Missing>,
}

/// Assembles `target` in its temp file, then, under the folder's `busy` lock and only if
/// the file at its path is still as expected, renames it over that path; returns the
/// path, what is there now and the lock (held until the caller recorded what it installed). On a
/// full disk the temp file is removed, so the space it took serves other files; any other
/// failure keeps it for the next attempt to resume from. `after_conflict`: the local file
/// was moved aside as a conflict copy, so nothing may be at the path.
pub(super) async fn fetch<'a>(
    folder: &'a FolderHandle,
    context: &PullContext,
    target: &FileEntry,
    sources: &[DeviceId],
    after_conflict: bool,
) -> Result<(PathBuf, OnDisk, RwLockReadGuard<'a, ()>), PullError> {
    let path = names::join(&folder.path(), &target.name)?;
    let temp = assemble::temp_path(&path);
    let result = assemble_file(
        folder,
        context,
        target,
        sources,
        after_conflict,
        &path,
        &temp,
    )
    .await;
    if let Err(PullError::Io(e)) = &result
        && e.kind() == std::io::ErrorKind::StorageFull
    {
        let _ = fs::remove_file(&temp);
    }
    result.map(|(on_disk, busy)| (path, on_disk, busy))
}

/// Refuses to start a file that would leave the folder's file system (at `root`) with
/// less free space than its `minDiskFree`.
fn check_free_space(root: &Path, rule: MinDiskFree, size: u64) -> Result<(), PullError> {
    let space = fsutil::space(root)?;
    let required = rule.required_bytes(space.total);
    let left = space.available.saturating_sub(size);
    if left < required {
        return Err(PullError::InsufficientSpace {
            size,
            left,
            required,
        });
    }
    Ok(())
}

/// Everything a download does before the network, in one hand-off to a blocking thread
/// (each hand-off is a wake-up of another thread; 20,000 small files made five each):
/// the checks every change starts with, the free space, the temp file, and the blocks
/// this device already has (an earlier attempt's, local files').
async fn start(
    folder: &FolderHandle,
    context: &PullContext,
    target: &FileEntry,
    after_conflict: bool,
    temp: &Path,
) -> Result<Started, PullError> {
    let config = folder.config();
    let (ignore_permissions, min_disk_free) = (config.ignore_permissions, config.min_disk_free);
    let (store, folders, folder_id, idx, root, target, temp) = (
        folder.store.clone(),
        context.folders.clone(),
        folder.id.clone(),
        folder.idx,
        folder.path(),
        target.clone(),
        temp.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let prepared = prepare(&store, idx, &root, &target.name, false, after_conflict)?;
        let on_disk = match disk_version(&target, &prepared.path, ignore_permissions) {
            Cow::Owned(changed) => changed,
            Cow::Borrowed(_) => target,
        };
        check_free_space(&root, min_disk_free, on_disk.size)?;
        let file = assemble::open_temp(&temp)?;
        let lookup = |id: &str| folders.get(id).map(|f| (f.idx, f.path()));
        let missing = reuse::fill_from_disk(&store, &lookup, &folder_id, &on_disk, &file)?;
        Ok(Started {
            expected: prepared.expected,
            on_disk,
            file,
            missing,
        })
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn assemble_file<'a>(
    folder: &'a FolderHandle,
    context: &PullContext,
    target: &FileEntry,
    sources: &[DeviceId],
    after_conflict: bool,
    path: &Path,
    temp: &Path,
) -> Result<(OnDisk, RwLockReadGuard<'a, ()>), PullError> {
    let Started {
        expected,
        on_disk,
        file,
        missing,
    } = start(folder, context, target, after_conflict, temp).await?;
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
    // Each fetched block: written where it belongs, counted, flushed now and then.
    let mut land = |fetched: Option<Fetched>| -> Result<(), PullError> {
        let written = write_fetched(&file, fetched)?;
        progress.add(written);
        flusher.wrote(written);
        Ok(())
    };
    let mut requests = tokio::task::JoinSet::new();
    // A file missing one block (most small files) waits for it here: a task of its own
    // would cost a spawn and a wake-up with nothing to overlap.
    let alone = missing.len() == 1;
    for reuse::Missing { index, block, held } in missing {
        while requests.len() >= REQUESTS_IN_FLIGHT {
            land(requests.join_next().await)?;
        }
        let request = BlockRequest {
            folder: folder.id.clone(),
            name: target.name.clone(),
            block,
            skip: held.len() as u32,
        };
        let fetching = from_peers(
            context.peers.clone(),
            (request, held),
            sources.clone(),
            index,
        );
        if alone {
            land(Some(Ok(fetching.await)))?;
        } else {
            requests.spawn(fetching);
        }
    }
    while let Some(result) = requests.join_next().await {
        land(Some(result))?;
    }
    flusher.finish().await;
    // The download took a while: a scan may have seen the file change meanwhile, so the
    // file is checked again under `busy` before it is installed.
    // Shared: installs of other names go on beside it (their fsyncs overlap); a scan or
    // any other change to the folder waits for all of them.
    let busy = folder.busy.read().await;
    // The check and the install (fsync blocks for milliseconds) on one blocking thread,
    // so the network goes on and the fsyncs of files pulled side by side overlap.
    let (store, idx, root) = (folder.store.clone(), folder.idx, folder.path());
    let settings = versions::Settings::of(&folder.config());
    let (path, temp) = (path.to_owned(), temp.to_owned());
    let installed = tokio::task::spawn_blocking(move || -> Result<OnDisk, PullError> {
        expected.check_blocking(&store, idx, &on_disk.name, &path)?;
        assemble::install(file, &on_disk, &temp, &path, || {
            versions::keep(&root, settings, &on_disk.name, &path).map_err(|e| match e {
                versions::KeepError::Io(e) => e,
                other => std::io::Error::other(other),
            })
        })?;
        Ok(OnDisk::read(&path))
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
            match ask(&*peers, *device, &request).await {
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
                Err(BlockError::Moved) => {
                    debug!(device = %device.short(), name = %request.name, offset = block.offset, "the connection kept moving; asking later");
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

/// Times a request is asked again at once when the device's connection moved under it.
const MOVES_FOLLOWED: usize = 4;

/// Asks `device` for a block, again at once on the link that took the old one's place when
/// the connection moved while the request waited (a move is no failure of the peer's).
async fn ask(
    peers: &dyn Peers,
    device: DeviceId,
    request: &BlockRequest,
) -> Result<BlockData, BlockError> {
    let mut moves = 0;
    loop {
        match peers.request_block(device, request).await {
            Err(BlockError::Moved) if moves < MOVES_FOLLOWED => {
                moves += 1;
                debug!(device = %device.short(), name = %request.name, "the connection moved; asking again on the new link");
            }
            result => return result,
        }
    }
}
