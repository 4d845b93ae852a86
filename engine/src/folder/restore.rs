//! What a user does to a folder's files from the GUI: restore a kept version, settle a
//! conflict. Both only move files inside the folder (the file they replace goes to the
//! versions directory first: nothing is deleted outright), between scans and pull rounds,
//! then scan, so the change is indexed and sent like any local edit.

use std::fs;
use std::path::Path;

use tracing::info;

use super::{FolderHandle, ScanFailed, files::original_of};
use crate::disk::scanner::MARKER_DIR;
use crate::disk::versions::{self, KeepError};
use crate::model::names::{self, NameError};

/// Which side of a conflict stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictChoice {
    /// The file under the original name stays; the conflict copy goes to versions.
    Original,
    /// The conflict copy takes the original name; the original goes to versions.
    Conflict,
    /// Both stay: the conflict copy gets a plain name beside the original.
    Both,
}

/// Why a restore or a conflict resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No kept version of the name has that time.
    #[error("{name:?} has no kept version from {time}")]
    NoSuchVersion {
        /// The name.
        name: String,
        /// The time asked for.
        time: String,
    },
    /// The name is not a conflict copy (`stem.sync-conflict-DATE-TIME-DEVICE.ext`).
    #[error("{0:?} is not a conflict copy")]
    NotAConflictCopy(String),
    /// The conflict copy is not on disk.
    #[error("{0:?} is not in the folder")]
    Missing(String),
    /// Something other than a file holds the name.
    #[error("{0:?} is a directory or a link, not a file: move it first")]
    NotAFile(String),
    /// A name that would leave the folder.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Keeping the replaced file failed.
    #[error(transparent)]
    Keep(#[from] KeepError),
    /// The disk.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The work's thread died.
    #[error("interrupted")]
    Interrupted,
    /// The scan after it.
    #[error(transparent)]
    Scan(#[from] ScanFailed),
}

impl super::Folder {
    /// Puts the version of `name` kept at `time` (as the versions list gives it) back in
    /// place; the file there now is kept as a version first.
    pub async fn restore_version(
        self: &FolderHandle,
        name: &str,
        time: &str,
    ) -> Result<(), RestoreError> {
        let (name, time) = (name.to_owned(), time.to_owned());
        self.change_files(move |folder| {
            let root = folder.path();
            let wanted = time.parse::<jiff::Timestamp>().ok();
            let version = versions::list(&root)
                .into_iter()
                .filter(|v| v.name == name)
                .find(|v| {
                    let at = v.kept_at.or(v.modified);
                    at.is_some_and(|at| {
                        at.to_string() == time
                            || wanted.is_some_and(|w| w.as_second() == at.as_second())
                    })
                })
                .ok_or_else(|| RestoreError::NoSuchVersion {
                    name: name.clone(),
                    time: time.clone(),
                })?;
            // Out of the versions directory first: keeping the current file (trash-can
            // style, under the same name) must not overwrite the version being restored.
            let stored = names::join(&versions::dir(&root), &version.stored)?;
            let staged = root
                .join(MARKER_DIR)
                .join(format!("restoring-{}", std::process::id()));
            fs::rename(&stored, &staged)?;
            let result = put_in_place(folder, &root, &name, &staged);
            if result.is_err() {
                let _ = fs::rename(&staged, &stored);
            }
            result?;
            info!(folder = %folder.id, %name, %time, "restored a kept version");
            Ok(())
        })
        .await
    }

    /// Settles the conflict copy `copy` as `choice` says; returns the name that holds
    /// the kept conflict content (`Conflict`: the original name; `Both`: the copy's new
    /// plain name; `Original`: the original name).
    pub async fn resolve_conflict(
        self: &FolderHandle,
        copy: &str,
        choice: ConflictChoice,
    ) -> Result<String, RestoreError> {
        let copy = copy.to_owned();
        self.change_files(move |folder| {
            let root = folder.path();
            let original =
                original_of(&copy).ok_or_else(|| RestoreError::NotAConflictCopy(copy.clone()))?;
            let copy_path = names::join(&root, &copy)?;
            match fs::symlink_metadata(&copy_path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => return Err(RestoreError::NotAFile(copy.clone())),
                Err(_) => return Err(RestoreError::Missing(copy.clone())),
            }
            let kept = match choice {
                ConflictChoice::Original => {
                    versions::keep(&root, keeping(folder), &copy, &copy_path)?;
                    original
                }
                ConflictChoice::Conflict => {
                    put_in_place(folder, &root, &original, &copy_path)?;
                    original
                }
                ConflictChoice::Both => {
                    let plain = plain_name(&copy);
                    let target = names::join(&root, &plain)?;
                    if fs::symlink_metadata(&target).is_ok() {
                        return Err(RestoreError::Io(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{plain:?} already exists"),
                        )));
                    }
                    fs::rename(&copy_path, &target)?;
                    plain
                }
            };
            info!(folder = %folder.id, %copy, ?choice, "resolved a conflict");
            Ok(kept)
        })
        .await
    }

    /// Runs `work` on the folder's files between scans and pull rounds, then scans.
    async fn change_files<T: Send + 'static>(
        self: &FolderHandle,
        work: impl FnOnce(&super::Folder) -> Result<T, RestoreError> + Send + 'static,
    ) -> Result<T, RestoreError> {
        let busy = self.busy.write().await;
        let folder = self.clone();
        let out = tokio::task::spawn_blocking(move || work(&folder))
            .await
            .map_err(|_| RestoreError::Interrupted)??;
        drop(busy);
        self.scan().await?;
        Ok(out)
    }
}

/// The folder's versioning, or a trash can when it keeps none: a file the user replaces
/// from the GUI is never deleted outright.
fn keeping(folder: &super::Folder) -> versions::Settings {
    let config = folder.config();
    let settings = versions::Settings::of(&config);
    if settings.keep {
        settings
    } else {
        versions::Settings::trashcan(config.versions_max_age_days)
    }
}

/// Moves `from` to the folder's `name`, keeping the file there as a version first.
fn put_in_place(
    folder: &super::Folder,
    root: &Path,
    name: &str,
    from: &Path,
) -> Result<(), RestoreError> {
    let target = names::join(root, name)?;
    match fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_file() => versions::keep(root, keeping(folder), name, &target)?,
        Ok(_) => return Err(RestoreError::NotAFile(name.to_owned())),
        Err(_) => {}
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(from, &target)?;
    Ok(())
}

/// `dir/stem.sync-conflict-20261206-101500-ABCDEFG.ext` ->
/// `dir/stem (conflict 20261206-101500 ABCDEFG).ext`: no longer a conflict copy's name.
fn plain_name(copy: &str) -> String {
    let mark = crate::model::planner::CONFLICT_MARK;
    let Some(at) = copy.rfind(mark) else {
        return copy.to_owned();
    };
    let (head, rest) = (&copy[..at], &copy[at + mark.len()..]);
    // 8 date digits, '-', 6 time digits, '-', the short device ID, then the extension.
    let (stamp, ext) = rest.split_at(rest.len().min(8 + 1 + 6 + 1 + 7));
    let (when, device) = stamp.rsplit_once('-').unwrap_or((stamp, ""));
    format!("{head} (conflict {when} {device}){ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_copy_kept_beside_gets_a_plain_name() {
        assert_eq!(
            plain_name("a/notes.sync-conflict-20261206-101500-ABCDEFG.txt"),
            "a/notes (conflict 20261206-101500 ABCDEFG).txt"
        );
        assert_eq!(
            plain_name("Makefile.sync-conflict-20261206-101500-ABCDEFG"),
            "Makefile (conflict 20261206-101500 ABCDEFG)"
        );
        assert_eq!(
            original_of(&plain_name("x.sync-conflict-20261206-101500-ABCDEFG.md")),
            None
        );
    }
}
