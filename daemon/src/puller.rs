//! Carries out the planner's actions against disk and network for one folder.
//!
//! A fetched file is assembled in `.peerfold.NAME.tmp` beside its target: blocks come from
//! local files that hold them (any folder) before peers are asked, every block is checked
//! against its BLAKE3 hash, the temp file is fsynced, the local file is checked to still be
//! what the index says (else the change waits for the next scan), then renamed over it and
//! the directory fsynced. Names are validated and parents that are symlinks are refused, so
//! nothing is written outside the folder root.

use futures_util::StreamExt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;
use tracing::{debug, info, warn};

use crate::daemon::{Folder, FolderState, Replan, Shared};
use crate::net::session::request_block;
use peerfold_engine::disk::scanner::walk_timestamp;
use peerfold_engine::folder::needs::{needed_actions, needed_actions_for};
use peerfold_engine::model::entry::{FileEntry, FileKind};
use peerfold_engine::model::names;
use peerfold_engine::model::planner::Action;
use peerfold_engine::store::LocalChange;

mod reuse;

/// How often the puller looks again on its own (peers that came and went, failed blocks).
const RETRY_EVERY: Duration = Duration::from_secs(10);
/// How often the whole folder is planned again although nothing asked for it.
const FULL_PLAN_EVERY: Duration = Duration::from_secs(600);
/// Block requests in flight per file being pulled.
const REQUESTS_IN_FLIGHT: usize = 128;
/// Files pulled at once.
const FILES_IN_FLIGHT: usize = 32;
/// Where replaced and deleted files are kept, inside the folder's marker directory.
pub(crate) const VERSIONS_DIR: &str = "versions";

/// Why one action failed; the puller goes on with the others and retries later.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("a parent directory of {0:?} is a symlink or a file")]
    Escapes(String),
    #[error("no peer could provide block at offset {0}")]
    Unavailable(u64),
    #[error("{0:?} changed locally since it was indexed; it will be rescanned first")]
    ChangedLocally(String),
    #[error(transparent)]
    Store(#[from] peerfold_engine::store::StoreError),
}

/// Pulls whenever the folder's remote state changes, and now and then.
pub(crate) async fn run(shared: Arc<Shared>, folder: Arc<Folder>) {
    let folder_id = folder.id.clone();
    let folder = &*folder;
    let mut last_full_plan = std::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = folder.pull.notified() => {}
            () = tokio::time::sleep(RETRY_EVERY) => {
                // Retry what failed; now and then look at everything, as a safety net.
                if !folder.pull_errors().is_empty() || last_full_plan.elapsed() > FULL_PLAN_EVERY {
                    folder.replan_everything();
                }
            }
        }
        let _busy = folder.busy.lock().await;
        let replan = folder.take_replan();
        // On a read-only connection of its own: a whole-folder plan takes seconds at 200,000
        // names, and the writer (records, block serving) must not wait for it.
        let reader = shared.store().reader();
        let actions = reader.and_then(|store| match &replan {
            Replan::Everything => {
                last_full_plan = std::time::Instant::now();
                needed_actions(&store, folder.idx, folder.folder_type(), shared.me)
            }
            Replan::Names(names) => needed_actions_for(
                &store,
                folder.idx,
                names.iter().map(String::as_str),
                folder.folder_type(),
                shared.me,
            ),
        });
        let actions = match actions {
            Ok(actions) => actions,
            Err(e) => {
                warn!(folder = %folder_id, error = %e, "cannot plan");
                folder.replan_everything();
                continue;
            }
        };
        let mut rescan = false;
        let round_started = std::time::Instant::now();
        if !actions.is_empty() {
            folder.set_state(FolderState::Syncing);
        }
        // Three phases keep the planner's order where it matters: directories, symlinks,
        // metadata and conflicts in order; then file contents, several files at once
        // (distinct names, parents created as needed); then deletions, children first.
        let (deletes, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Delete { .. }));
        let (fetches, ordered): (Vec<Action>, Vec<Action>) = rest
            .into_iter()
            .partition(|a| matches!(a, Action::Fetch { .. }));
        rescan |= ordered.iter().any(|a| matches!(a, Action::Conflict { .. }));
        let errors = std::sync::Mutex::new(std::collections::BTreeMap::new());
        let report_result = |name: String, result: Result<(), PullError>| match result {
            Ok(()) => false,
            Err(PullError::ChangedLocally(_)) => {
                folder.replan_names([name.as_str()]);
                true
            }
            Err(e) => {
                warn!(folder = %folder_id, %name, error = %e, "pull failed");
                errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, e.to_string());
                false
            }
        };
        let report = |name: String, deleted: bool, result: Result<(), PullError>| {
            let error = result.as_ref().err().map(ToString::to_string);
            if result.is_ok() {
                folder.note_synced(&name, deleted);
            }
            shared.events.emit(
                "ItemFinished",
                serde_json::json!({ "folder": folder_id, "item": name, "error": error, "type": "file" }),
            );
            report_result(name, result)
        };
        for action in ordered {
            if folder.stop.is_cancelled() {
                return;
            }
            let name = action.name().unwrap_or_default().to_owned();
            rescan |= report(name, false, execute(&shared, folder, action).await);
        }
        let mut concurrent = futures_util::stream::iter(fetches.into_iter().map(|action| {
            let shared = &shared;
            async move {
                let name = action.name().unwrap_or_default().to_owned();
                (name, execute(shared, folder, action).await)
            }
        }))
        .buffer_unordered(FILES_IN_FLIGHT);
        while let Some((name, result)) = concurrent.next().await {
            rescan |= report(name, false, result);
            if folder.stop.is_cancelled() {
                return;
            }
        }
        drop(concurrent);
        for action in deletes {
            if folder.stop.is_cancelled() {
                return;
            }
            let name = action.name().unwrap_or_default().to_owned();
            rescan |= report(name, true, execute(&shared, folder, action).await);
        }
        let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        if !errors.is_empty() {
            shared.events.emit(
                "FolderErrors",
                serde_json::json!({
                    "folder": folder_id,
                    "errors": errors
                        .iter()
                        .map(|(path, error)| serde_json::json!({ "path": path, "error": error }))
                        .collect::<Vec<_>>(),
                }),
            );
        }
        // Failed names are planned again with the next round.
        folder.replan_names(errors.keys().map(String::as_str));
        folder.set_pull_errors(errors);
        if folder.state() == FolderState::Syncing {
            folder.note_pull_round(round_started.elapsed());
            folder.set_state(FolderState::Idle);
            folder.counts_changed.notify_one();
        }
        if rescan {
            folder.rescan.notify_one();
        }
    }
}

async fn execute(shared: &Arc<Shared>, folder: &Folder, action: Action) -> Result<(), PullError> {
    if let Some(target) = action.target() {
        shared.events.emit(
            "ItemStarted",
            serde_json::json!({
                "folder": folder.id,
                "item": target.name,
                "type": "file",
                "action": if target.deleted { "delete" } else { "update" },
            }),
        );
    }
    let root = folder.path();
    let root = root.as_path();
    // The folder must still be there: a missing root or marker is never written into.
    if !root
        .join(peerfold_engine::disk::scanner::MARKER_DIR)
        .is_dir()
    {
        return Err(PullError::Io(std::io::Error::other(
            "folder root or marker missing; not pulling",
        )));
    }
    match action {
        Action::Nothing | Action::OutOfSync | Action::LocallyChanged => Ok(()),
        Action::Conflict { copy_name, then } => {
            let from = names::join(root, action_name(&then))?;
            let to = names::join(root, &copy_name)?;
            if peerfold_engine::disk::fsutil::parent_escapes(root, &copy_name) {
                return Err(PullError::Escapes(copy_name));
            }
            if fs::symlink_metadata(&from).is_ok() && fs::symlink_metadata(&to).is_err() {
                fs::rename(&from, &to)?;
                info!(folder = %folder.id, copy = %copy_name, "kept the losing version as a conflict copy");
            }
            Box::pin(execute_target(shared, folder, *then, true)).await
        }
        other => execute_target(shared, folder, other, false).await,
    }
}

fn action_name(action: &Action) -> &str {
    action.name().unwrap_or_default()
}

async fn execute_target(
    shared: &Arc<Shared>,
    folder: &Folder,
    action: Action,
    after_conflict: bool,
) -> Result<(), PullError> {
    let root = folder.path();
    let (target, sources) = match action {
        Action::Fetch { target, sources } => (target, Some(sources)),
        Action::UpdateMetadata { target }
        | Action::CreateDirectory { target }
        | Action::CreateSymlink { target }
        | Action::Delete { target } => (target, None),
        _ => return Ok(()),
    };
    let path = names::join(&root, &target.name)?;
    if peerfold_engine::disk::fsutil::parent_escapes(&root, &target.name) {
        return Err(PullError::Escapes(target.name));
    }
    // Replacing or deleting: the local file must still be what the index says.
    if !after_conflict {
        let local = shared.store().local_entry(folder.idx, &target.name)?;
        check_unchanged(&path, local.as_ref())?;
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let inode = if target.deleted {
        keep_version(folder, &target.name, &path)?;
        remove(&path)?;
        0
    } else {
        match target.kind {
            FileKind::Directory => {
                if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
                    remove(&path)?;
                }
                if !path.is_dir() {
                    fs::create_dir(&path)?;
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(target.permissions))?;
                fs::symlink_metadata(&path)?.ino()
            }
            FileKind::Symlink => {
                if fs::symlink_metadata(&path).is_ok() {
                    remove(&path)?;
                }
                std::os::unix::fs::symlink(&target.symlink_target, &path)?;
                fs::symlink_metadata(&path)?.ino()
            }
            FileKind::File => match sources {
                Some(sources) => fetch(shared, folder, &target, &sources, &path).await?,
                None => {
                    let file = File::options().write(true).open(&path)?;
                    finish_metadata(&file, &target)?;
                    file.metadata()?.ino()
                }
            },
        }
    };
    let meta = fs::symlink_metadata(&path).ok();
    let change = LocalChange {
        previous: None,
        name: target.name.clone(),
        kind: target.kind,
        size: target.size,
        permissions: target.permissions,
        modified: meta
            .as_ref()
            .filter(|_| target.kind == FileKind::File)
            .map_or(target.modified, walk_timestamp),
        deleted: target.deleted,
        invalid: false,
        symlink_target: target.symlink_target.clone(),
        blocks: Some(target.blocks.clone()),
        inode,
    };
    shared
        .store()
        .record_pulled(folder.idx, &change, &target.version, target.modified_by)?;
    debug!(folder = %folder.id, name = %target.name, "pulled");
    Ok(())
}

/// Errors unless the file at `path` is still what `local` recorded (or both are absent).
fn check_unchanged(path: &Path, local: Option<&FileEntry>) -> Result<(), PullError> {
    let meta = fs::symlink_metadata(path).ok();
    let recorded = local.filter(|l| !l.deleted);
    let same = match (&meta, recorded) {
        (None, None) => true,
        (Some(meta), Some(l)) => match l.kind {
            FileKind::File => {
                meta.is_file() && meta.size() == l.size && walk_timestamp(meta) == l.modified
            }
            FileKind::Directory => meta.is_dir(),
            FileKind::Symlink => meta.file_type().is_symlink(),
        },
        // Something appeared that the index does not know yet: scan it first.
        (Some(_), None) => false,
        // Gone since the last scan: nothing local to lose.
        (None, Some(_)) => true,
    };
    if same {
        Ok(())
    } else {
        Err(PullError::ChangedLocally(path.display().to_string()))
    }
}

/// Moves a file that sync is about to replace or delete to `.peerfold/versions/NAME`
/// (trash-can style: the newest replaced version of each name), when the folder keeps
/// versions. Directories and symlinks are not kept.
fn keep_version(folder: &Folder, name: &str, path: &Path) -> Result<(), PullError> {
    if !folder.config().versioning || !fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let versions = folder
        .path()
        .join(peerfold_engine::disk::scanner::MARKER_DIR)
        .join(VERSIONS_DIR);
    let kept = names::join(&versions, name)?;
    if let Some(parent) = kept.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(path, &kept)?;
    debug!(folder = %folder.id, %name, "kept the replaced version");
    Ok(())
}

/// Moves a local file or symlink out of the way (into the versions directory when the
/// folder keeps versions), or removes an empty directory.
pub(crate) fn put_aside(folder: &Folder, name: &str, path: &Path) -> std::io::Result<()> {
    match keep_version(folder, name, path) {
        Ok(()) => remove(path),
        Err(PullError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// Deletes kept versions older than the folder's maximum age.
pub(crate) fn clean_versions(folder: &Folder) -> std::io::Result<u64> {
    let max_age = folder.config().versions_max_age_days;
    if max_age == 0 {
        return Ok(0);
    }
    let cutoff = SystemTime::now() - Duration::from_secs(max_age * 86_400);
    let root = folder
        .path()
        .join(peerfold_engine::disk::scanner::MARKER_DIR)
        .join(VERSIONS_DIR);
    let mut removed = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.modified().is_ok_and(|m| m < cutoff) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Assembles the file in its temp file, then renames it into place. Returns the inode.
/// On a full disk the temp file is removed, so the space it took serves other files; any
/// other failure keeps it for the next attempt to resume from.
async fn fetch(
    shared: &Arc<Shared>,
    folder: &Folder,
    target: &FileEntry,
    sources: &[DeviceId],
    path: &Path,
) -> Result<u64, PullError> {
    let temp = temp_path(path);
    let result = assemble(shared, folder, target, sources, path, &temp).await;
    if let Err(PullError::Io(e)) = &result
        && e.kind() == std::io::ErrorKind::StorageFull
    {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// `.peerfold.NAME.tmp` beside `path`.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".peerfold.{file_name}.tmp"))
}

async fn assemble(
    shared: &Arc<Shared>,
    folder: &Folder,
    target: &FileEntry,
    sources: &[DeviceId],
    path: &Path,
    temp: &Path,
) -> Result<u64, PullError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(temp)?;
    // Blocks already in the temp file (an interrupted earlier attempt) are kept; blocks
    // held by local files are copied; the rest are requested from peers, many at a time,
    // spread over the peers that have this version.
    let missing = {
        let (shared, folder_id, target, temp_file) = (
            shared.clone(),
            folder.id.clone(),
            target.clone(),
            file.try_clone()?,
        );
        tokio::task::spawn_blocking(move || {
            reuse::fill_from_disk(&shared, &folder_id, &target, &temp_file)
        })
        .await
        .map_err(std::io::Error::other)??
    };
    let sources = Arc::new(sources.to_vec());
    let file = Arc::new(file);
    let mut flusher = EarlyFlush::new(file.clone());
    let mut requests = tokio::task::JoinSet::new();
    for (index, block) in missing {
        while requests.len() >= REQUESTS_IN_FLIGHT {
            flusher.wrote(write_fetched(&file, requests.join_next().await)?);
        }
        requests.spawn(from_peers(
            shared.clone(),
            folder.id.clone(),
            target.name.clone(),
            sources.clone(),
            index,
            block,
        ));
    }
    while let Some(result) = requests.join_next().await {
        flusher.wrote(write_fetched(&file, Some(result))?);
    }
    flusher.finish().await;
    // fsync blocks for milliseconds: on a blocking thread, so the network goes on and the
    // fsyncs of files pulled side by side share journal commits.
    let (shared, folder_id, target, path, temp) = (
        shared.clone(),
        folder.id.clone(),
        target.clone(),
        path.to_owned(),
        temp.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let folder = shared
            .folder(&folder_id)
            .ok_or_else(|| std::io::Error::other("folder removed"))?;
        file.set_len(target.size)?;
        file.sync_all()?;
        finish_metadata(&file, &target)?;
        drop(file);
        keep_version(&folder, &target.name, &path)?;
        fs::rename(&temp, &path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(fs::symlink_metadata(&path)?.ino())
    })
    .await
    .map_err(std::io::Error::other)?
}

/// What a block request task ends with.
type Fetched = Result<Result<(Block, bytes::Bytes), PullError>, tokio::task::JoinError>;

/// Writes a fetched block where it belongs; returns the bytes written.
fn write_fetched(file: &File, result: Option<Fetched>) -> Result<u64, PullError> {
    match result {
        Some(Ok(Ok((block, data)))) => {
            file.write_all_at(&data, block.offset)?;
            Ok(data.len() as u64)
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(PullError::Io(std::io::Error::other(e))),
        None => Ok(0),
    }
}

/// Flush a file being pulled to disk every this many bytes written.
const EARLY_FLUSH_EVERY: u64 = 256 << 20;

/// Flushes a large file being pulled as it grows, on a blocking thread, one flush at a
/// time. Without it the kernel keeps the whole file dirty in memory (background writeback
/// starts at a tenth of RAM) and the final fsync writes all of it after the transfer; with
/// it, disk writes overlap the transfer and the final fsync finds little left to do. The
/// final fsync still decides durability.
struct EarlyFlush {
    file: Arc<File>,
    unflushed: u64,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl EarlyFlush {
    fn new(file: Arc<File>) -> Self {
        Self {
            file,
            unflushed: 0,
            running: None,
        }
    }

    fn wrote(&mut self, bytes: u64) {
        self.unflushed += bytes;
        if self.unflushed < EARLY_FLUSH_EVERY
            || self.running.as_ref().is_some_and(|r| !r.is_finished())
        {
            return;
        }
        self.unflushed = 0;
        let file = self.file.clone();
        // An error here shows again in the final fsync, which reports it.
        self.running = Some(tokio::task::spawn_blocking(move || {
            let _ = file.sync_data();
        }));
    }

    /// Waits for a flush still running, so the file is not renamed under it.
    async fn finish(self) {
        if let Some(running) = self.running {
            let _ = running.await;
        }
    }
}

/// A block from the connected peers that have this version, checked against its hash; a
/// peer whose data fails the check is not asked again for it. Block `index` picks the peer
/// to ask first, so requests spread over all sources.
async fn from_peers(
    shared: Arc<Shared>,
    folder_id: String,
    name: String,
    sources: Arc<Vec<DeviceId>>,
    index: usize,
    block: Block,
) -> Result<(Block, bytes::Bytes), PullError> {
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
            let Some(connection) = shared.connection(*device) else {
                continue;
            };
            if bad.contains(device) {
                continue;
            }
            match request_block(&connection, &folder_id, &name, block).await {
                Ok(data) if blake3::hash(&data) == block.hash => return Ok((block, data)),
                Ok(_) => {
                    warn!(device = %device.short(), %name, offset = block.offset, "block failed its hash; discarded");
                    bad.push(*device);
                }
                Err(e) => {
                    warn!(device = %device.short(), %name, offset = block.offset, attempt, error = %e, "block request failed");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    Err(PullError::Unavailable(block.offset))
}

fn finish_metadata(file: &File, target: &FileEntry) -> std::io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(target.permissions))?;
    if let Ok(seconds) = u64::try_from(target.modified.seconds) {
        let time = SystemTime::UNIX_EPOCH + Duration::new(seconds, target.modified.nanos);
        file.set_modified(time)?;
    }
    Ok(())
}
