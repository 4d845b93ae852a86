//! The user's two ways out of a one-way folder's differences (Syncthing's "Override
//! Changes" and "Revert Local Changes").
//!
//! - **Override** (send-only): what is on disk here becomes the newest version everywhere.
//!   Every local entry that is out of sync is re-recorded with a version that has seen the
//!   global one plus one change by this device; a name only others have gets a tombstone of
//!   the same kind, so peers delete it.
//! - **Revert** (receive-only): local changes give way to the global version. Changed local
//!   entries get an empty version, so the puller replaces them (keeping the local file as a
//!   version); files that exist only here are moved to the versions directory.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use peerfold_protocol::version::{Ordering, VersionVector};
use tracing::info;

use crate::daemon::{Folder, Shared};
use peerfold_engine::config::FolderType;
use peerfold_engine::model::entry::FileEntry;
use peerfold_engine::model::planner::{self, Announced};
use peerfold_engine::store::{LocalChange, Store, StoreError};

/// Which of the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FolderAction {
    Override,
    Revert,
}

/// Runs an override or revert on a folder, between its scans and pull rounds, then wakes
/// the index senders and the puller. Returns how many names it rewrote; errors are meant
/// for the user.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    folder_id: &str,
    action: FolderAction,
) -> Result<usize, String> {
    let folder = shared
        .folder(folder_id)
        .ok_or_else(|| format!("no folder {folder_id:?}"))?;
    let (name, wanted) = match action {
        FolderAction::Override => ("override", FolderType::SendOnly),
        FolderAction::Revert => ("revert", FolderType::ReceiveOnly),
    };
    if folder.folder_type() != wanted {
        return Err(format!(
            "{name} applies to {} folders; {folder_id:?} is {}",
            wanted.as_str(),
            folder.folder_type().as_str()
        ));
    }
    let _busy = folder.busy.lock().await;
    let (shared2, folder2) = (shared.clone(), folder.clone());
    let changed = tokio::task::spawn_blocking(move || {
        let mut store = shared2.store();
        match action {
            FolderAction::Override => override_changes(&mut store, &folder2, shared2.me),
            FolderAction::Revert => revert_changes(&mut store, &folder2, shared2.me),
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    info!(folder = %folder_id, action = name, changed, "folder action");
    folder.local_changed.notify_waiters();
    folder.replan_everything();
    folder.pull.notify_one();
    Ok(changed)
}

/// What happened to one name.
#[derive(Debug)]
struct Rewrite {
    entry: FileEntry,
    version: VersionVector,
    /// The file leaves the disk (to the versions directory) before the entry is recorded.
    remove_from_disk: bool,
}

/// Why an override or revert failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FolderActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{name}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// Makes this device's state of a send-only folder the global one. Returns the names
/// re-recorded.
fn override_changes(
    store: &mut Store,
    folder: &Folder,
    me: DeviceId,
) -> Result<usize, FolderActionError> {
    let mut rewrites = Vec::new();
    store.for_each_name(folder.idx, me, |entries| {
        let (local, remote) = split(&entries, me);
        let Some(global) = planner::global(&remote) else {
            return Ok::<(), StoreError>(());
        };
        match local {
            Some(local)
                if !local.invalid
                    && !matches!(
                        local.version.compare(&global.entry.version),
                        Ordering::Equal | Ordering::Newer
                    ) =>
            {
                rewrites.push(Rewrite {
                    entry: local.clone(),
                    version: local
                        .version
                        .merge(&global.entry.version)
                        .incremented(me.short()),
                    remove_from_disk: false,
                });
            }
            None if !global.entry.deleted => {
                // Only others have it: it goes, everywhere.
                rewrites.push(Rewrite {
                    version: global.entry.version.clone().incremented(me.short()),
                    entry: tombstone_of(global.entry),
                    remove_from_disk: false,
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    apply(store, folder, me, rewrites)
}

/// Gives up this device's local changes in a receive-only folder. Returns the names
/// affected.
fn revert_changes(
    store: &mut Store,
    folder: &Folder,
    me: DeviceId,
) -> Result<usize, FolderActionError> {
    let mut rewrites = Vec::new();
    store.for_each_name(folder.idx, me, |entries| {
        let (local, remote) = split(&entries, me);
        let Some(local) = local.filter(|l| !l.invalid) else {
            return Ok::<(), StoreError>(());
        };
        match planner::global(&remote) {
            Some(global)
                if !matches!(
                    local.version.compare(&global.entry.version),
                    Ordering::Equal | Ordering::Older
                ) =>
            {
                rewrites.push(Rewrite {
                    entry: local.clone(),
                    version: VersionVector::new(),
                    remove_from_disk: false,
                });
            }
            Some(_) => {}
            None if !local.deleted => {
                rewrites.push(Rewrite {
                    entry: tombstone_of(local),
                    version: VersionVector::new(),
                    remove_from_disk: true,
                });
            }
            None => {}
        }
        Ok(())
    })?;
    apply(store, folder, me, rewrites)
}

/// The deletion of `entry`'s name.
fn tombstone_of(entry: &FileEntry) -> FileEntry {
    FileEntry {
        deleted: true,
        size: 0,
        blocks: Vec::new(),
        ..entry.clone()
    }
}

fn split<'a>(
    entries: &'a [(DeviceId, FileEntry)],
    me: DeviceId,
) -> (Option<&'a FileEntry>, Vec<Announced<'a>>) {
    let local = entries.iter().find(|(d, _)| *d == me).map(|(_, e)| e);
    let remote = entries
        .iter()
        .filter(|(d, _)| *d != me)
        .map(|(device, entry)| Announced {
            device: *device,
            entry,
        })
        .collect();
    (local, remote)
}

fn apply(
    store: &mut Store,
    folder: &Folder,
    me: DeviceId,
    rewrites: Vec<Rewrite>,
) -> Result<usize, FolderActionError> {
    let count = rewrites.len();
    // Names come in order, so a directory precedes its contents: removals go in reverse.
    let (removals, records): (Vec<_>, Vec<_>) =
        rewrites.into_iter().partition(|r| r.remove_from_disk);
    for rewrite in records.into_iter().chain(removals.into_iter().rev()) {
        let name = rewrite.entry.name.clone();
        let io = |source| FolderActionError::Io {
            name: name.clone(),
            source,
        };
        let path = peerfold_engine::model::names::join(&folder.path(), &name).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                e.to_string(),
            ))
        })?;
        if rewrite.remove_from_disk {
            crate::puller::put_aside(folder, &name, &path).map_err(io)?;
        }
        // The inode lets the next scan see the file as unchanged.
        let inode = fs::symlink_metadata(&path).map_or(0, |m| m.ino());
        let entry = rewrite.entry;
        let change = LocalChange {
            previous: None,
            name: entry.name,
            kind: entry.kind,
            size: entry.size,
            permissions: entry.permissions,
            modified: entry.modified,
            deleted: entry.deleted,
            invalid: false,
            symlink_target: entry.symlink_target,
            blocks: Some(entry.blocks),
            inode,
        };
        store.record_pulled(folder.idx, &change, &rewrite.version, me.short())?;
    }
    Ok(count)
}
