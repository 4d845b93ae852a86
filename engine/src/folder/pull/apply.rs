//! Carrying out one planned action on disk, and recording what was reached. Each local
//! change (and its record) runs under the folder's `busy` lock, so a scan never records a
//! half-made change and a change never lands under a scan; a fetch holds it only to install
//! the file it downloaded, never while it waits for peers. Whatever touches the disk or the
//! index runs on a blocking thread, one hand-off per change (a mass deletion moves every
//! name into versions).

use std::borrow::Cow;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::super::fetch;
use super::{PullContext, PullError};
use crate::disk::scanner::{MARKER_DIR, walk_timestamp};
use crate::disk::{assemble, conflicts, fsutil, versions};
use crate::events::{Event, ItemAction};
use crate::folder::{Folder, FolderHandle};
use crate::model::entry::{FileEntry, FileKind, PERMISSION_BITS, Timestamp};
use crate::model::names;
use crate::model::planner::Action;
use crate::store::{FolderIdx, LocalChange, StoreHandle};

/// What the file at a name must still be when a download is installed over it.
#[derive(Clone, Debug)]
pub(crate) enum Expected {
    /// What the index recorded when the pull began (`None`: nothing).
    Recorded(Option<FileEntry>),
    /// Nothing: the local file was moved aside as a conflict copy.
    Nothing,
}

impl Expected {
    /// Errors unless the file at `path` (named `name`) is still as expected: the index
    /// holds the same entry and the disk matches it. Blocking: it reads the index.
    pub(crate) fn check_blocking(
        &self,
        store: &StoreHandle,
        idx: FolderIdx,
        name: &str,
        path: &Path,
    ) -> Result<(), PullError> {
        match self {
            Self::Nothing if fs::symlink_metadata(path).is_err() => Ok(()),
            Self::Nothing => Err(PullError::ChangedLocally(path.display().to_string())),
            Self::Recorded(before) => {
                let now = store.read_blocking(|r| r.local_entry(idx, name))?;
                let same_record = match (before, &now) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.version == b.version && a.sequence == b.sequence,
                    _ => false,
                };
                if !same_record {
                    return Err(PullError::ChangedLocally(path.display().to_string()));
                }
                check_unchanged(path, now.as_ref())
            }
        }
    }
}

/// Where a target goes, and what must still be there when it lands.
pub(crate) struct Prepared {
    pub(crate) path: PathBuf,
    pub(crate) expected: Expected,
}

/// The checks every target's action starts with: `name` is a path under `root` with no
/// symlink or file among its parents; the local file is still what the index says (else
/// the change waits for the next scan; after a conflict copy: nothing is there); its
/// parent directories exist; and, unless a directory goes there (`to_directory`), a
/// directory in its place holds nothing. Blocking: it reads the index and the disk.
pub(crate) fn prepare(
    store: &StoreHandle,
    idx: FolderIdx,
    root: &Path,
    name: &str,
    to_directory: bool,
    after_conflict: bool,
) -> Result<Prepared, PullError> {
    let path = names::join(root, name)?;
    if fsutil::parent_escapes(root, name) {
        return Err(PullError::Escapes(name.to_owned()));
    }
    let expected = if after_conflict {
        Expected::Nothing
    } else {
        let local = store.read_blocking(|r| r.local_entry(idx, name))?;
        check_unchanged(&path, local.as_ref())?;
        Expected::Recorded(local)
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    // Whatever takes a file's place, the file is kept (versions); a directory in the way of
    // anything else goes only once empty.
    if !to_directory {
        refuse_unless_empty(&path, name)?;
    }
    Ok(Prepared { path, expected })
}

/// Carries out `action`. Local changes take the folder's `busy` lock; a download takes it
/// only to install.
pub(super) async fn execute(
    folder: &FolderHandle,
    context: &PullContext,
    action: &Action,
) -> Result<(), PullError> {
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
            if fsutil::parent_escapes(&root, copy_name) {
                return Err(PullError::Escapes(copy_name.clone()));
            }
            let busy = folder.busy.write().await;
            let config = folder.config();
            let (name, copy_name) = (
                then.name().unwrap_or_default().to_owned(),
                copy_name.clone(),
            );
            let limits = (config.max_conflicts, config.versions_max_age_days);
            tokio::task::spawn_blocking(move || {
                keep_losing_version(&root, limits, &name, &copy_name)
            })
            .await
            .map_err(std::io::Error::other)??;
            if then.fetches() {
                drop(busy);
                return execute_target(folder, context, then, true).await;
            }
            execute_target(folder, context, then, true).await
        }
        other if other.fetches() => execute_target(folder, context, other, false).await,
        other => {
            let _busy = folder.busy.write().await;
            execute_target(folder, context, other, false).await
        }
    }
}

/// Keeps the local version that lost a conflict: as the conflict copy `copy_name`, then
/// the oldest copies of the name beyond the folder's `maxConflicts` go to versions; with
/// `maxConflicts` 0 a losing file goes to versions directly (a directory or symlink still
/// becomes a copy: nothing is lost). `(max_conflicts, versions_max_age_days)` are the
/// folder's. Blocking.
fn keep_losing_version(
    root: &Path,
    (max_conflicts, versions_max_age_days): (i64, u64),
    name: &str,
    copy_name: &str,
) -> Result<(), PullError> {
    let (from, to) = (names::join(root, name)?, names::join(root, copy_name)?);
    let Ok(meta) = fs::symlink_metadata(&from) else {
        return Ok(());
    };
    if max_conflicts == 0 && meta.is_file() {
        let keep_all = versions::Settings::trashcan(versions_max_age_days);
        versions::keep(root, keep_all, name, &from)?;
        info!(%name, "kept the losing version in versions (maxConflicts is 0)");
        return Ok(());
    }
    if fs::symlink_metadata(&to).is_err() {
        fs::rename(&from, &to)?;
        info!(copy = %copy_name, "kept the losing version as a conflict copy");
    }
    conflicts::limit(root, name, max_conflicts, versions_max_age_days)?;
    Ok(())
}

async fn execute_target(
    folder: &FolderHandle,
    context: &PullContext,
    action: &Action,
    after_conflict: bool,
) -> Result<(), PullError> {
    let target = match action {
        Action::Fetch { target, sources } => {
            // Installed under `busy`, which is held until the record is written.
            let (path, on_disk, _busy) =
                fetch::fetch(folder, context, target, sources, after_conflict).await?;
            record(folder, target, on_disk, path.parent()).await?;
            debug!(name = %target.name, "pulled");
            return Ok(());
        }
        Action::UpdateMetadata { target }
        | Action::CreateDirectory { target }
        | Action::CreateSymlink { target }
        | Action::Delete { target } => target,
        _ => return Ok(()),
    };
    let config = folder.config();
    let change = Change {
        store: folder.store.clone(),
        idx: folder.idx,
        root: folder.path(),
        settings: versions::Settings::of(&config),
        ignore_permissions: config.ignore_permissions,
        target: target.clone(),
        after_conflict,
    };
    let on_disk = tokio::task::spawn_blocking(move || change.apply())
        .await
        .map_err(std::io::Error::other)??;
    // Changes made one at a time (under `busy` alone) are not synced directory by
    // directory: a mass deletion would wait for a directory sync per name.
    record(folder, target, on_disk, None).await?;
    debug!(name = %target.name, "pulled");
    Ok(())
}

/// What a change left on disk, read back for its record.
pub(crate) struct OnDisk {
    /// 0 for a deletion.
    pub(crate) inode: u64,
    /// A file's modification time as the disk holds it (`None`: not a file, or gone).
    pub(crate) modified: Option<Timestamp>,
}

impl OnDisk {
    /// Reads back what is at `path` now. Blocking.
    pub(crate) fn read(path: &Path) -> Self {
        let meta = fs::symlink_metadata(path).ok();
        Self {
            inode: meta.as_ref().map_or(0, MetadataExt::ino),
            modified: meta.filter(|m| m.is_file()).map(|m| walk_timestamp(&m)),
        }
    }
}

/// A change that needs no download (a deletion, a directory, a symlink, new metadata),
/// with what it needs to be made on a blocking thread.
struct Change {
    store: StoreHandle,
    idx: FolderIdx,
    root: PathBuf,
    settings: versions::Settings,
    ignore_permissions: bool,
    target: FileEntry,
    after_conflict: bool,
}

impl Change {
    /// Makes the change on disk (after the checks every change starts with); returns what
    /// is there now. Blocking: it reads the index and writes the disk.
    fn apply(self) -> Result<OnDisk, PullError> {
        let Self {
            store,
            idx,
            root,
            settings,
            ignore_permissions,
            target,
            after_conflict,
        } = self;
        let to_directory = !target.deleted && target.kind == FileKind::Directory;
        let Prepared { path, .. } = prepare(
            &store,
            idx,
            &root,
            &target.name,
            to_directory,
            after_conflict,
        )?;
        let on_disk = disk_version(&target, &path, ignore_permissions);
        if target.deleted {
            versions::put_aside(&root, settings, &target.name, &path)?;
            return Ok(OnDisk {
                inode: 0,
                modified: None,
            });
        }
        match target.kind {
            FileKind::Directory => {
                if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
                    versions::put_aside(&root, settings, &target.name, &path)?;
                }
                if !path.is_dir() {
                    fs::create_dir(&path)?;
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(applied_mode(&on_disk)))?;
            }
            FileKind::Symlink => {
                versions::put_aside(&root, settings, &target.name, &path)?;
                std::os::unix::fs::symlink(&target.symlink_target, &path)?;
            }
            FileKind::File => {
                let file = File::options().write(true).open(&path)?;
                assemble::finish_metadata(&file, &on_disk)?;
            }
        }
        Ok(OnDisk::read(&path))
    }
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

/// The version as written to disk. An `ignorePerms` folder keeps the mode a name already
/// has (a new file gets 0o644, a new directory 0o755); its entry still records the peer's
/// permissions, so nothing is announced back, and its scans do not read modes.
pub(crate) fn disk_version<'a>(
    target: &'a FileEntry,
    path: &Path,
    ignore_permissions: bool,
) -> Cow<'a, FileEntry> {
    if !ignore_permissions {
        return Cow::Borrowed(target);
    }
    let is_dir = target.kind == FileKind::Directory;
    let mode = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_dir() == is_dir && !m.file_type().is_symlink())
        .map_or(if is_dir { 0o755 } else { 0o644 }, |m| {
            m.mode() & PERMISSION_BITS
        });
    let mut owned = target.clone();
    owned.permissions = mode;
    Cow::Owned(owned)
}

/// The mode a pulled entry gets: only the 0o777 part (entries stored before peers' modes
/// were masked on the way in could hold more).
fn applied_mode(target: &FileEntry) -> u32 {
    target.permissions & PERMISSION_BITS
}

/// Records the version reached as the local entry (with the peer's version vector), once
/// the directory `sync_first` is synced.
async fn record(
    folder: &Folder,
    target: &FileEntry,
    on_disk: OnDisk,
    sync_first: Option<&Path>,
) -> Result<(), PullError> {
    let change = LocalChange {
        previous: None,
        name: target.name.clone(),
        kind: target.kind,
        size: target.size,
        permissions: applied_mode(target),
        // A file's entry takes the time the disk holds (`OnDisk` has one only for files).
        modified: on_disk.modified.unwrap_or(target.modified),
        deleted: target.deleted,
        invalid: false,
        symlink_target: target.symlink_target.clone(),
        blocks: Some(target.blocks.clone()),
        inode: on_disk.inode,
    };
    folder
        .pulled
        .record(
            change,
            target.version.clone(),
            target.modified_by,
            sync_first.map(Path::to_owned),
        )
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
