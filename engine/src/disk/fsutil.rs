//! Small file-system helpers with the durability rules the daemon relies on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `contents` atomically: write a temp file beside it with `mode`,
/// fsync it, rename it over `path`, then fsync the directory so the rename survives a crash.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates `path` with `contents` and `mode`; fails if it exists.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Flushes a directory's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True if a parent directory of `name` under `root` is a symlink (or not a directory):
/// writing there could escape the folder, so it must be refused.
pub fn parent_escapes(root: &Path, name: &str) -> bool {
    let mut path = root.to_path_buf();
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return true,
            // Missing parents are created by the puller as real directories.
            Err(_) => return false,
        }
    }
    false
}

/// Space on the file system holding `path`: what an unprivileged user may still write, and
/// its whole size, in bytes.
pub(crate) fn space(path: &Path) -> io::Result<Space> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(Space {
        available: stat.f_bavail.saturating_mul(stat.f_frsize),
        total: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

/// A file system's free and total bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Space {
    /// Bytes an unprivileged user may still write.
    pub(crate) available: u64,
    /// The file system's size.
    pub(crate) total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_parents_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/tmp", dir.path().join("link")).unwrap();
        assert!(parent_escapes(dir.path(), "link/x"));
        assert!(!parent_escapes(dir.path(), "real/x"));
        assert!(!parent_escapes(dir.path(), "new/x"));
    }
}
