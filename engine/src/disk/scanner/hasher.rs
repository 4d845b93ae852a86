//! Hashes changed files on worker threads, making sure no file is indexed with mixed content.

use std::fs::{File, Metadata};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use peerfold_protocol::chunking::{Block, Chunker};

use super::walk::{DiskEntry, timestamp};
use super::{ChangeKind, ScanIssue};
use crate::model::entry::FileKind;
use crate::store::LocalChange;

/// How often a file that keeps changing under the hasher is retried before giving up until
/// the next scan.
const ATTEMPTS: usize = 3;

/// A file whose content must be (re)hashed.
#[derive(Debug)]
pub(crate) struct HashJob {
    pub(crate) previous: Option<i64>,
    pub(crate) entry: DiskEntry,
    pub(crate) kind: ChangeKind,
    /// The blocks recorded for the file's earlier content, for large files: unchanged
    /// stretches are then only read and hashed, not chunked again.
    pub(crate) earlier_blocks: Vec<Block>,
}

/// Hashes one file. The file is opened without following symlinks, and its metadata is read
/// from the open descriptor before and after the pass: if size, modification time or inode
/// moved, or fewer bytes were read than its size, the content was mixed and we try again.
pub(crate) fn hash_file(
    root: &Path,
    job: HashJob,
    chunker: &mut Chunker,
) -> Result<LocalChange, ScanIssue> {
    let path = root.join(&job.entry.name);
    let issue = |message: String| ScanIssue {
        name: job.entry.name.clone(),
        message,
    };
    for _ in 0..ATTEMPTS {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| issue(format!("cannot open: {e}")))?;
        let before = file
            .metadata()
            .map_err(|e| issue(format!("cannot read metadata: {e}")))?;
        if !before.is_file() {
            return Err(issue("no longer a regular file".into()));
        }
        let blocks = if job.earlier_blocks.is_empty() {
            chunker.blocks(&file, before.size())
        } else {
            chunker.blocks_reusing(&file, before.size(), &job.earlier_blocks)
        }
        .map_err(|e| issue(format!("read failed: {e}")))?;
        let after = file
            .metadata()
            .map_err(|e| issue(format!("cannot read metadata: {e}")))?;
        let read: u64 = blocks.iter().map(|b| u64::from(b.size)).sum();
        if read == before.size() && unchanged(&before, &after) {
            return Ok(LocalChange {
                previous: job.previous,
                name: job.entry.name.clone(),
                kind: FileKind::File,
                size: before.size(),
                // As the walk read them (or as the folder's `ignorePerms` set them).
                permissions: job.entry.permissions,
                modified: timestamp(&before),
                deleted: false,
                invalid: false,
                symlink_target: String::new(),
                blocks: Some(blocks),
                inode: before.ino(),
            });
        }
    }
    Err(issue(format!(
        "changed while being hashed ({ATTEMPTS} tries); will try again at the next scan"
    )))
}

fn unchanged(before: &Metadata, after: &Metadata) -> bool {
    before.size() == after.size()
        && timestamp(before) == timestamp(after)
        && before.ino() == after.ino()
}
