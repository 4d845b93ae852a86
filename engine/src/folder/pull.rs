//! The puller: carries out the planner's actions for one folder against disk and network.
//! It reaches the network only through the [`Peers`] port.
//!
//! Who wakes me: `pull` (index updates from peers, new connections, scans that changed
//! something, folder actions) and a 10 s timer (retries, a full plan every 10 minutes).
//! Whom I wake: the index senders (`local_changed`, via the records), the summary task
//! (`counts_changed`) and the scan loop (`rescan`, after conflicts or local changes seen
//! under a pull).
//!
//! A fetched file is assembled in `.peerfold.NAME.tmp` beside its target (disk/assemble):
//! blocks come from local files that hold them (any folder) before peers are asked, every
//! block is checked against its BLAKE3 hash, the local file is checked to still be what the
//! index says (else the change waits for the next scan), then the temp file is renamed over
//! it. Names are validated and parents that are symlinks are refused, so nothing is written
//! outside the folder root.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::fetch;
use super::needs::{needed_actions, needed_actions_for};
use super::registry::FolderRegistry;
use super::{Folder, FolderHandle, FolderState, Replan};
use crate::disk::scanner::{MARKER_DIR, walk_timestamp};
use crate::disk::{assemble, fsutil, versions};
use crate::events::{Event, ItemAction};
use crate::model::entry::{FileEntry, FileKind, PERMISSION_BITS};
use crate::model::names::{self, NameError};
use crate::model::planner::Action;
use crate::peers::Peers;
use crate::store::{LocalChange, StoreError};

/// How often the puller looks again on its own (peers that came and went, failed blocks).
const RETRY_EVERY: Duration = Duration::from_secs(10);
/// How often the whole folder is planned again although nothing asked for it.
const FULL_PLAN_EVERY: Duration = Duration::from_secs(600);
/// Files pulled at once.
const FILES_IN_FLIGHT: usize = 32;

/// Why one action failed; the puller goes on with the others and retries later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("a parent directory of {0:?} is a symlink or a file")]
    Escapes(String),
    #[error("no peer could provide block at offset {0}")]
    Unavailable(u64),
    #[error("{0:?} changed locally since it was indexed; it will be rescanned first")]
    ChangedLocally(String),
    #[error(
        "{0:?} is a directory that still holds files; it is replaced only once they are gone, \
         never with them"
    )]
    DirectoryNotEmpty(String),
    #[error("folder root or marker missing; not pulling")]
    RootMissing,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Version(#[from] versions::KeepError),
}

/// What a pull works with besides its folder.
#[derive(Clone)]
pub(crate) struct PullContext {
    /// The network.
    pub(crate) peers: Arc<dyn Peers>,
    /// Every running folder (blocks are copied from any of them).
    pub(crate) folders: Arc<FolderRegistry>,
}

/// Pulls whenever the folder's remote state changes, and now and then.
pub(crate) async fn pull_loop(folder: FolderHandle, context: PullContext) {
    let mut last_full_plan = Instant::now();
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
        if matches!(replan, Replan::Everything) {
            last_full_plan = Instant::now();
        }
        match plan(&folder, replan).await {
            Ok(actions) => round(&folder, &context, actions).await,
            Err(e) => {
                warn!(error = %e, "cannot plan");
                folder.replan_everything();
            }
        }
    }
}

/// The actions a round carries out, planned on a read-only connection: a whole-folder plan
/// takes seconds at 200,000 names, and the writer (records, block serving) must not wait.
async fn plan(folder: &Folder, replan: Replan) -> Result<Vec<Action>, StoreError> {
    let (idx, folder_type, me) = (folder.idx, folder.folder_type(), folder.me);
    folder
        .store
        .read(move |store| match &replan {
            Replan::Everything => needed_actions(store, idx, folder_type, me),
            Replan::Names(names) => needed_actions_for(
                store,
                idx,
                names.iter().map(String::as_str),
                folder_type,
                me,
            ),
        })
        .await
}

/// One pull round. Three phases keep the planner's order where it matters: directories,
/// symlinks, metadata and conflicts in order; then file contents, several files at once
/// (distinct names, parents created as needed); then deletions, children first.
async fn round(folder: &FolderHandle, context: &PullContext, actions: Vec<Action>) {
    let started = Instant::now();
    if !actions.is_empty() {
        folder.set_state(FolderState::Syncing);
    }
    let (deletes, rest): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Delete { .. }));
    let (fetches, ordered): (Vec<Action>, Vec<Action>) = rest
        .into_iter()
        .partition(|a| matches!(a, Action::Fetch { .. }));
    let outcome = Outcome::default();
    let mut rescan = ordered.iter().any(|a| matches!(a, Action::Conflict { .. }));
    for action in ordered {
        if folder.stop.is_cancelled() {
            return;
        }
        rescan |= outcome.report(
            folder,
            &action,
            false,
            execute(folder, context, &action).await,
        );
    }
    let mut concurrent = futures_util::stream::iter(fetches.into_iter().map(|action| async move {
        let result = execute(folder, context, &action).await;
        (action, result)
    }))
    .buffer_unordered(FILES_IN_FLIGHT);
    while let Some((action, result)) = concurrent.next().await {
        rescan |= outcome.report(folder, &action, false, result);
        if folder.stop.is_cancelled() {
            return;
        }
    }
    drop(concurrent);
    for action in deletes {
        if folder.stop.is_cancelled() {
            return;
        }
        rescan |= outcome.report(
            folder,
            &action,
            true,
            execute(folder, context, &action).await,
        );
    }
    let errors = outcome
        .errors
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    if !errors.is_empty() {
        folder.events.emit(Event::FolderErrors {
            folder: folder.id.clone(),
            errors: errors.iter().map(|(n, e)| (n.clone(), e.clone())).collect(),
        });
    }
    // Failed names are planned again with the next round.
    folder.replan_names(errors.keys().map(String::as_str));
    folder.set_pull_errors(errors);
    if folder.state() == FolderState::Syncing {
        folder.note_pull_round(started.elapsed());
        folder.set_state(FolderState::Idle);
        folder.counts_changed.notify_one();
    }
    if rescan {
        folder.rescan.notify_one();
    }
}

/// The names of a round that failed, with why.
#[derive(Default)]
struct Outcome {
    // Only touched between awaits, by the round's own task.
    errors: Mutex<BTreeMap<String, String>>,
}

impl Outcome {
    /// Records how an action went; returns whether the folder must be rescanned first.
    fn report(
        &self,
        folder: &Folder,
        action: &Action,
        deleted: bool,
        result: Result<(), PullError>,
    ) -> bool {
        let name = action.name().unwrap_or_default().to_owned();
        if result.is_ok() {
            folder.note_synced(&name, deleted);
        }
        folder.events.emit(Event::ItemFinished {
            folder: folder.id.clone(),
            item: name.clone(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        match result {
            Ok(()) => false,
            Err(PullError::ChangedLocally(_)) => {
                folder.replan_names([name.as_str()]);
                true
            }
            Err(e) => {
                warn!(%name, error = %e, "pull failed");
                self.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, e.to_string());
                false
            }
        }
    }
}

async fn execute(folder: &Folder, context: &PullContext, action: &Action) -> Result<(), PullError> {
    if let Some(target) = action.target() {
        folder.events.emit(Event::ItemStarted {
            folder: folder.id.clone(),
            item: target.name.clone(),
            action: if target.deleted {
                ItemAction::Delete
            } else {
                ItemAction::Update
            },
        });
    }
    let root = folder.path();
    // The folder must still be there: a missing root or marker is never written into.
    if !root.join(MARKER_DIR).is_dir() {
        return Err(PullError::RootMissing);
    }
    match action {
        Action::Nothing | Action::OutOfSync | Action::LocallyChanged => Ok(()),
        Action::Conflict { copy_name, then } => {
            let from = names::join(&root, then.name().unwrap_or_default())?;
            let to = names::join(&root, copy_name)?;
            if fsutil::parent_escapes(&root, copy_name) {
                return Err(PullError::Escapes(copy_name.clone()));
            }
            if fs::symlink_metadata(&from).is_ok() && fs::symlink_metadata(&to).is_err() {
                fs::rename(&from, &to)?;
                info!(copy = %copy_name, "kept the losing version as a conflict copy");
            }
            execute_target(folder, context, then, true).await
        }
        other => execute_target(folder, context, other, false).await,
    }
}

async fn execute_target(
    folder: &Folder,
    context: &PullContext,
    action: &Action,
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
    if fsutil::parent_escapes(&root, &target.name) {
        return Err(PullError::Escapes(target.name.clone()));
    }
    // Replacing or deleting: the local file must still be what the index says.
    if !after_conflict {
        let (idx, name) = (folder.idx, target.name.clone());
        let local = folder
            .store
            .read(move |r| r.local_entry(idx, &name))
            .await?;
        check_unchanged(&path, local.as_ref())?;
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let settings = versions::Settings::of(&folder.config());
    // Whatever takes a file's place, the file is kept (versions); a directory in the way of
    // anything else goes only once empty.
    if target.deleted || target.kind != FileKind::Directory {
        refuse_unless_empty(&path, &target.name)?;
    }
    let inode = if target.deleted {
        versions::put_aside(&root, settings, &target.name, &path)?;
        0
    } else {
        match target.kind {
            FileKind::Directory => {
                if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
                    versions::put_aside(&root, settings, &target.name, &path)?;
                }
                if !path.is_dir() {
                    fs::create_dir(&path)?;
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(applied_mode(target)))?;
                fs::symlink_metadata(&path)?.ino()
            }
            FileKind::Symlink => {
                versions::put_aside(&root, settings, &target.name, &path)?;
                std::os::unix::fs::symlink(&target.symlink_target, &path)?;
                fs::symlink_metadata(&path)?.ino()
            }
            // A directory in the way goes when the file is installed (disk/assemble).
            FileKind::File => match sources {
                Some(sources) => fetch::fetch(folder, context, target, sources, &path).await?,
                None => {
                    let file = File::options().write(true).open(&path)?;
                    assemble::finish_metadata(&file, target)?;
                    file.metadata()?.ino()
                }
            },
        }
    };
    record(folder, target, &path, inode).await?;
    debug!(name = %target.name, "pulled");
    Ok(())
}

/// Fails with [`PullError::DirectoryNotEmpty`] if `path` is a directory holding anything
/// (peerfold's temp files aside): its contents leave first, by their own deletions (each
/// file kept as a version), and never with it. Anything there that no peer deleted keeps it.
fn refuse_unless_empty(path: &Path, name: &str) -> Result<(), PullError> {
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir && assemble::holds_content(path)? {
        return Err(PullError::DirectoryNotEmpty(name.to_owned()));
    }
    Ok(())
}

/// The mode a pulled entry gets: only the 0o777 part (entries stored before peers' modes
/// were masked on the way in could hold more).
fn applied_mode(target: &FileEntry) -> u32 {
    target.permissions & PERMISSION_BITS
}

/// Records the version reached as the local entry (with the peer's version vector).
async fn record(
    folder: &Folder,
    target: &FileEntry,
    path: &Path,
    inode: u64,
) -> Result<(), PullError> {
    let meta = fs::symlink_metadata(path).ok();
    let change = LocalChange {
        previous: None,
        name: target.name.clone(),
        kind: target.kind,
        size: target.size,
        permissions: applied_mode(target),
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
    let (idx, version, by) = (folder.idx, target.version.clone(), target.modified_by);
    folder
        .store
        .write(move |store| store.record_pulled(idx, &change, &version, by))
        .await?;
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

#[cfg(test)]
mod replace_tests;
#[cfg(test)]
mod tests;
