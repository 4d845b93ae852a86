//! What a running folder tells about its files: one name's versions and who has them,
//! what this device still needs, the ignore patterns, kept versions and conflict copies.

use peerfold_protocol::DeviceId;
use peerfold_protocol::version::VersionVector;

use super::scan_loop::ScanFailed;
use super::{Folder, FolderHandle};
use crate::disk::fsutil;
use crate::disk::scanner::IGNORE_FILE;
use crate::disk::versions::{self, KeptVersion};
use crate::model::counts;
use crate::model::entry::FileEntry;
use crate::model::view::NameView;
use crate::store::StoreError;

/// One name as this device and the global version see it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileInfo {
    /// This device's entry.
    pub local: Option<FileEntry>,
    /// The global version.
    pub global: Option<FileEntry>,
    /// Other devices that announced the global version.
    pub availability: Vec<DeviceId>,
    /// What every device (this one included) announced of the name.
    pub announced: Vec<DeviceVersion>,
}

/// One device's version of a name.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceVersion {
    /// Who announced it.
    pub device: DeviceId,
    /// Its version vector.
    pub version: VersionVector,
    /// Whether it is a deletion.
    pub deleted: bool,
    /// Whether the device cannot offer it (ignored or unreadable there).
    pub invalid: bool,
}

/// A conflict copy and the name it is a copy of.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictCopy {
    /// The copy's entry.
    pub entry: FileEntry,
    /// The name it was a version of.
    pub original: String,
}

/// Why the ignore patterns could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum IgnoresError {
    /// A pattern holds a line break or NUL.
    #[error("a pattern must be one line")]
    NotOneLine,
    /// Writing the file failed.
    #[error("{IGNORE_FILE}: {0}")]
    Write(std::io::Error),
    /// The rescan after the change failed.
    #[error(transparent)]
    Scan(#[from] ScanFailed),
}

impl Folder {
    /// `name` as every device announced it; `None` when no device has it.
    pub async fn file_info(&self, name: &str) -> Result<Option<FileInfo>, StoreError> {
        let (idx, me, name) = (self.idx, self.me, name.to_owned());
        let entries = self
            .store
            .read(move |r| {
                let mut found = Vec::new();
                r.for_names(idx, [name.as_str()], me, |entries| {
                    found = entries;
                    Ok::<(), StoreError>(())
                })?;
                Ok::<_, StoreError>(found)
            })
            .await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let view = NameView::new(&entries, me);
        let global = view.global();
        Ok(Some(FileInfo {
            local: view.local().cloned(),
            availability: global.map(|g| view.holders_of(g.entry)).unwrap_or_default(),
            global: global.map(|g| g.entry.clone()),
            announced: entries
                .iter()
                .map(|(device, entry)| DeviceVersion {
                    device: *device,
                    version: entry.version.clone(),
                    deleted: entry.deleted,
                    invalid: entry.invalid,
                })
                .collect(),
        }))
    }

    /// The versions this device still has to reach, in the order the puller would.
    pub async fn needed(&self) -> Result<Vec<FileEntry>, StoreError> {
        let (idx, me) = (self.idx, self.me);
        let rules = super::needs::Rules::of(&self.config());
        let actions = self
            .store
            .read(move |r| super::needs::needed_actions(r, idx, rules, me))
            .await?;
        Ok(actions.iter().filter_map(|a| a.target().cloned()).collect())
    }

    /// What `device` still lacks of the global version, in name order (Syncthing's
    /// `remoteneed`).
    pub async fn needed_by(&self, device: DeviceId) -> Result<Vec<FileEntry>, StoreError> {
        let (idx, me) = (self.idx, self.me);
        self.store
            .read(move |r| {
                let mut needed = Vec::new();
                r.for_each_name(idx, me, |entries| {
                    if let Some(entry) = counts::needs(&NameView::new(&entries, me), device) {
                        needed.push(entry.clone());
                    }
                    Ok::<(), StoreError>(())
                })?;
                Ok(needed)
            })
            .await
    }

    /// The global version of every name under `prefix` (a directory; empty for the whole
    /// folder) that exists, in name order: the tree Syncthing's `db/browse` shows.
    pub async fn global_under(&self, prefix: &str) -> Result<Vec<FileEntry>, StoreError> {
        let (idx, me) = (self.idx, self.me);
        let under = if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        };
        self.store
            .read(move |r| {
                let mut found = Vec::new();
                r.for_each_name(idx, me, |entries| {
                    let view = NameView::new(&entries, me);
                    if let Some(global) = view.global().map(|g| g.entry)
                        && !global.deleted
                        && global.name.starts_with(&under)
                    {
                        found.push(global.clone());
                    }
                    Ok::<(), StoreError>(())
                })?;
                Ok(found)
            })
            .await
    }

    /// Moves `name` to the front of the next pulls (Syncthing's `db/prio`).
    pub fn bring_to_front(&self, name: &str) {
        self.prioritize(name);
        self.replan_names([name]);
        self.pull.notify_one();
    }

    /// The ignore patterns (`.peerfoldignore`), one per line.
    pub async fn ignores(&self) -> std::io::Result<Vec<String>> {
        let path = self.path().join(IGNORE_FILE);
        let text = tokio::task::spawn_blocking(move || match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(text.lines().map(str::to_owned).collect())
    }

    /// Replaces the ignore patterns and rescans, so names that became ignored are marked.
    pub async fn set_ignores(self: &FolderHandle, lines: &[String]) -> Result<(), IgnoresError> {
        if lines.iter().any(|l| l.contains('\n') || l.contains('\0')) {
            return Err(IgnoresError::NotOneLine);
        }
        let mut text = lines.join("\n");
        text.push('\n');
        let path = self.path().join(IGNORE_FILE);
        tokio::task::spawn_blocking(move || fsutil::write_atomic(&path, text.as_bytes(), 0o644))
            .await
            .map_err(|e| IgnoresError::Write(std::io::Error::other(e)))?
            .map_err(IgnoresError::Write)?;
        self.scan().await?;
        Ok(())
    }

    /// Kept versions (one per name, trash-can style).
    pub async fn versions(&self) -> std::io::Result<Vec<KeptVersion>> {
        let root = self.path();
        tokio::task::spawn_blocking(move || versions::list(&root))
            .await
            .map_err(std::io::Error::other)
    }

    /// Conflict copies this device has, with the names they are copies of.
    pub async fn conflicts(&self) -> Result<Vec<ConflictCopy>, StoreError> {
        let (idx, me) = (self.idx, self.me);
        self.store
            .read(move |r| {
                let mut copies = Vec::new();
                r.for_each_name(idx, me, |entries| {
                    let view = NameView::new(&entries, me);
                    if let Some(entry) = view.local().filter(|e| !e.deleted && !e.invalid)
                        && let Some(original) = original_of(&entry.name)
                    {
                        copies.push(ConflictCopy {
                            entry: entry.clone(),
                            original,
                        });
                    }
                    Ok::<(), StoreError>(())
                })?;
                Ok(copies)
            })
            .await
    }
}

/// `dir/stem.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` -> `dir/stem.ext`.
pub(super) fn original_of(name: &str) -> Option<String> {
    let (dir, base) = match name.rsplit_once('/') {
        Some((dir, base)) => (Some(dir), base),
        None => (None, name),
    };
    let at = base.find(".sync-conflict-")?;
    let rest = &base[at + ".sync-conflict-".len()..];
    // 8 date digits, '-', 6 time digits, '-', the 7-character short device ID.
    let stamp_len = 8 + 1 + 6 + 1 + 7;
    if rest.len() < stamp_len || !rest[..8].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let original = format!("{}{}", &base[..at], &rest[stamp_len..]);
    Some(match dir {
        Some(dir) => format!("{dir}/{original}"),
        None => original,
    })
}

#[cfg(test)]
mod tests {
    use super::original_of;

    #[test]
    fn conflict_copies_name_their_original() {
        assert_eq!(
            original_of("a/report.sync-conflict-20261130-101010-ABCDEFG.txt").as_deref(),
            Some("a/report.txt")
        );
        assert_eq!(
            original_of(".bashrc.sync-conflict-20261130-101010-ABCDEFG").as_deref(),
            Some(".bashrc")
        );
        assert_eq!(original_of("plain.txt"), None);
        assert_eq!(original_of("x.sync-conflict-short"), None);
    }
}
