//! Override (send-only) and revert (receive-only) on a running folder: the decisions are
//! the pure `model::rewrite`; this carries them out between scans and pull rounds.

use std::fs;
use std::os::unix::fs::MetadataExt;

use tracing::info;

use super::{Folder, FolderHandle};
use crate::disk::versions;
use crate::model::FolderType;
use crate::model::names;
use crate::model::rewrite::{self, CannotOutdate, FolderAction, Rewrite};
use crate::model::view::NameView;
use crate::store::{LocalChange, Store, StoreError};

/// Why an override or revert failed.
#[derive(Debug, thiserror::Error)]
pub enum FolderActionError {
    /// The folder's type does not have this action.
    #[error("{action} applies to {wanted} folders; {folder:?} is {actual}")]
    WrongType {
        /// `override` or `revert`.
        action: &'static str,
        /// The folder.
        folder: String,
        /// The type the action needs.
        wanted: &'static str,
        /// The folder's type.
        actual: &'static str,
    },
    /// The index.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name's version cannot be outdated (the other names were rewritten).
    #[error(transparent)]
    Counter(#[from] CannotOutdate),
    /// A file could not be moved aside.
    #[error("{name}: {source}")]
    Disk {
        /// The name.
        name: String,
        /// What failed.
        source: versions::KeepError,
    },
    /// The action's thread died.
    #[error("the folder action was interrupted")]
    Interrupted,
}

impl Folder {
    /// Runs an override or revert, between the folder's scans and pull rounds, then wakes
    /// the index senders and the puller. Returns how many names it rewrote.
    pub async fn run_action(
        self: &FolderHandle,
        action: FolderAction,
    ) -> Result<usize, FolderActionError> {
        let (name, wanted) = match action {
            FolderAction::Override => ("override", FolderType::SendOnly),
            FolderAction::Revert => ("revert", FolderType::ReceiveOnly),
        };
        if self.folder_type() != wanted {
            return Err(FolderActionError::WrongType {
                action: name,
                folder: self.id.clone(),
                wanted: wanted.as_str(),
                actual: self.folder_type().as_str(),
            });
        }
        let _busy = self.busy.write().await;
        let folder = self.clone();
        let changed = tokio::task::spawn_blocking(move || {
            let now = u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
            let (rewrites, stuck) = folder.store.read_blocking(|reader| {
                let now = reader.counter_time(folder.idx, now)?;
                let (mut rewrites, mut stuck) = (Vec::new(), None);
                reader.for_each_name(folder.idx, folder.me, |entries| {
                    let view = NameView::new(&entries, folder.me);
                    match rewrite::rewrite(action, &view, folder.me, now) {
                        Ok(rewrite) => rewrites.extend(rewrite),
                        Err(e) => {
                            stuck.get_or_insert(e);
                        }
                    }
                    Ok::<(), StoreError>(())
                })?;
                Ok::<_, StoreError>((rewrites, stuck))
            })?;
            let changed = apply(&folder, rewrites)?;
            match stuck {
                Some(e) => Err(FolderActionError::from(e)),
                None => Ok(changed),
            }
        })
        .await
        .map_err(|_| FolderActionError::Interrupted)??;
        info!(action = name, changed, "folder action");
        self.local_changed.notify_waiters();
        self.replan_everything();
        self.pull.notify_one();
        Ok(changed)
    }
}

/// Carries out the rewrites: files that leave the disk are moved aside first (without the
/// store's writer), then every entry is recorded in one transaction, also when a move
/// failed part way (what was done is recorded before the error is returned).
fn apply(folder: &Folder, rewrites: Vec<Rewrite>) -> Result<usize, FolderActionError> {
    let count = rewrites.len();
    let (root, settings) = (folder.path(), versions::Settings::of(&folder.config()));
    // Names come in order, so a directory precedes its contents: removals go in reverse.
    let (removals, records): (Vec<_>, Vec<_>) =
        rewrites.into_iter().partition(|r| r.remove_from_disk);
    let mut changes = Vec::with_capacity(count);
    let mut failed = None;
    for rewrite in records.into_iter().chain(removals.into_iter().rev()) {
        match prepare(&root, settings, rewrite) {
            Ok(change) => changes.push(change),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let (idx, me) = (folder.idx, folder.me.short());
    folder
        .store
        .write_blocking(|store: &mut Store| store.record_rewrites(idx, me, &changes))?;
    match failed {
        Some(e) => Err(e),
        None => Ok(count),
    }
}

/// Moves the file aside if it leaves the disk; returns the entry to record.
fn prepare(
    root: &std::path::Path,
    settings: versions::Settings,
    rewrite: Rewrite,
) -> Result<(LocalChange, peerfold_protocol::version::VersionVector), FolderActionError> {
    let name = rewrite.entry.name.clone();
    let disk = |source| FolderActionError::Disk {
        name: name.clone(),
        source,
    };
    let path = names::join(root, &name).map_err(|e| disk(e.into()))?;
    if rewrite.remove_from_disk {
        versions::put_aside(root, settings, &name, &path).map_err(disk)?;
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
    Ok((change, rewrite.version))
}
