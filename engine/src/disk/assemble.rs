//! Assembling a pulled file: `.peerfold.NAME.tmp` beside its target, written block by
//! block (each already checked against its hash), flushed now and then while it grows,
//! then fsynced, given its metadata, and renamed over the target (the directory is fsynced
//! before the record, store/group_commit).
//! Never in place: the target changes only by the rename. A directory in the target's place
//! goes only when it is empty: its contents leave by their own deletions (kept as versions),
//! never with it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::model::entry::{FileEntry, PERMISSION_BITS};

/// `.peerfold.NAME.tmp` beside `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".peerfold.{file_name}.tmp"))
}

/// Whether `file_name` is one of the temp files [`temp_path`] makes.
pub(crate) fn is_temp_name(file_name: &str) -> bool {
    file_name.starts_with(".peerfold.") && file_name.ends_with(".tmp")
}

/// Whether the directory at `dir` holds anything but peerfold's temp files.
pub(crate) fn holds_content(dir: &Path) -> std::io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !(is_temp_name(&entry.file_name().to_string_lossy()) && entry.file_type()?.is_file()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the directory at `dir` if it holds nothing but peerfold's temp files (left by
/// pulls of files since deleted), which go with it; anything else in it makes this fail
/// (`DirectoryNotEmpty`): a directory is never removed with its contents.
pub(crate) fn remove_empty_dir(dir: &Path) -> std::io::Result<()> {
    if !holds_content(dir)? {
        for entry in fs::read_dir(dir)? {
            fs::remove_file(entry?.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Opens (or creates) the temp file, keeping what an interrupted attempt left in it.
pub(crate) fn open_temp(temp: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(temp)
}

/// Flush a file being pulled to disk every this many bytes written.
const EARLY_FLUSH_EVERY: u64 = 256 << 20;

/// Flushes a large file being pulled as it grows, on a blocking thread, one flush at a
/// time. Without it the kernel keeps the whole file dirty in memory (background writeback
/// starts at a tenth of RAM) and the final fsync writes all of it after the transfer; with
/// it, disk writes overlap the transfer and the final fsync finds little left to do. The
/// final fsync still decides durability.
pub(crate) struct EarlyFlush {
    file: Arc<File>,
    unflushed: u64,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl EarlyFlush {
    pub(crate) fn new(file: Arc<File>) -> Self {
        Self {
            file,
            unflushed: 0,
            running: None,
        }
    }

    /// Notes `bytes` written; starts a flush past the threshold unless one runs.
    pub(crate) fn wrote(&mut self, bytes: u64) {
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
    pub(crate) async fn finish(self) {
        if let Some(running) = self.running {
            let _ = running.await;
        }
    }
}

/// Writes one fetched block where it belongs; returns the bytes written.
pub(crate) fn write_block(file: &File, offset: u64, data: &[u8]) -> std::io::Result<u64> {
    file.write_all_at(data, offset)?;
    Ok(data.len() as u64)
}

/// Gives the file `target`'s permissions (only the 0o777 part, whatever the entry says)
/// and modification time.
pub(crate) fn finish_metadata(file: &File, target: &FileEntry) -> std::io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(
        target.permissions & PERMISSION_BITS,
    ))?;
    if let Ok(seconds) = u64::try_from(target.modified.seconds) {
        let time = SystemTime::UNIX_EPOCH + Duration::new(seconds, target.modified.nanos);
        file.set_modified(time)?;
    }
    Ok(())
}

/// Completes the temp file and renames it over `path`: size, metadata, fsync, then
/// `before_rename` (which keeps the replaced version), the removal of an empty directory
/// in the way, and the rename. The directory is synced by the record (store/group_commit:
/// once per directory for the files recorded together), which is written only after that.
/// Blocking: run it off the async threads.
pub(crate) fn install(
    file: Arc<File>,
    target: &FileEntry,
    temp: &Path,
    path: &Path,
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    // Every block written leaves the file at its size already; a temp file kept from an
    // earlier try may be longer. (ext4 truncates even to the same size: 2% of a receiver's
    // CPU pulling 20,000 small files.)
    if file.metadata()?.len() != target.size {
        file.set_len(target.size)?;
    }
    // Mode and time before the fsync, so the time the record holds is the one a crash
    // leaves (set after it, they reached the disk only with a later writeback, and the
    // inode was written twice).
    finish_metadata(&file, target)?;
    file.sync_all()?;
    drop(file);
    before_rename()?;
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        remove_empty_dir(path)?;
    }
    fs::rename(temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::{FileKind, Timestamp};

    fn target(size: u64) -> FileEntry {
        FileEntry {
            name: "f".into(),
            kind: FileKind::File,
            size,
            permissions: 0o644,
            modified: Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
            deleted: false,
            invalid: false,
            sequence: 1,
            version: Default::default(),
            modified_by: peerfold_protocol::ShortId(1),
            symlink_target: String::new(),
            blocks: Vec::new(),
        }
    }

    #[test]
    fn an_installed_file_has_the_target_size_whatever_the_temp_file_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Written to its size; left longer by an earlier try; short of a trailing hole.
        for (written, size) in [(10u64, 10u64), (20, 10), (4, 10)] {
            let temp = temp_path(&path);
            let file = open_temp(&temp).unwrap();
            file.write_all_at(&vec![b'x'; written as usize], 0).unwrap();
            install(Arc::new(file), &target(size), &temp, &path, || Ok(())).unwrap();
            let on_disk = fs::read(&path).unwrap();
            assert_eq!(on_disk.len() as u64, size, "written {written}, size {size}");
            assert!(
                on_disk[..written.min(size) as usize]
                    .iter()
                    .all(|&b| b == b'x')
            );
            assert!(!temp.exists(), "the temp file was renamed into place");
        }
    }
}
