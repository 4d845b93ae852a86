//! Walks a folder in the byte order of its relative names.
//!
//! The index is read back `ORDER BY name`, so a walk in the same order lets a scan compare
//! disk and index in one merging pass with bounded memory. Within a directory the entries are
//! sorted by name, and a subdirectory's contents are placed where `name/` sorts: after a
//! sibling `name.txt` (`.` < `/`) but before `name0`. Symlinks are recorded, never followed.

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ignore::gitignore::Gitignore;
use unicode_normalization::is_nfc;

use super::ScanIssue;
use crate::model::entry::{FileKind, Timestamp};

/// The folder's metadata directory, in the root.
pub const MARKER_DIR: &str = ".peerfold";
/// The ignore file, in the root.
pub const IGNORE_FILE: &str = ".peerfoldignore";

/// A name as found on disk.
#[derive(Clone, Debug)]
pub(crate) struct DiskEntry {
    pub(crate) name: String,
    pub(crate) kind: FileKind,
    pub(crate) size: u64,
    pub(crate) permissions: u32,
    pub(crate) modified: Timestamp,
    pub(crate) inode: u64,
    pub(crate) symlink_target: String,
}

impl DiskEntry {
    fn from_metadata(name: String, meta: &Metadata, kind: FileKind) -> Self {
        Self {
            name,
            kind,
            size: if kind == FileKind::File {
                meta.size()
            } else {
                0
            },
            permissions: meta.mode() & 0o7777,
            modified: timestamp(meta),
            inode: meta.ino(),
            symlink_target: String::new(),
        }
    }
}

/// The modification time of `meta`.
pub fn timestamp(meta: &Metadata) -> Timestamp {
    Timestamp {
        seconds: meta.mtime(),
        nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
    }
}

/// How the index should treat the names below a directory the walk did not enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubtreeRule {
    /// The directory could not be read: leave its entries as they are.
    Keep,
    /// The directory is ignored: mark its entries invalid.
    Ignore,
}

/// One step of the walk, in name order.
#[derive(Debug)]
pub(crate) enum WalkItem {
    /// A file, directory or symlink to index.
    Entry(DiskEntry),
    /// A name matched by the ignore patterns.
    Ignored(String),
    /// A name that could not be examined this time: its index entry stays as it is.
    Skipped(String),
    /// Every name starting with `prefix/` is governed by `rule`; sorts as `prefix/`.
    Subtree { prefix: String, rule: SubtreeRule },
}

impl WalkItem {
    /// The key this item sorts by, comparable with index names.
    pub(crate) fn sort_key(&self) -> SortKey<'_> {
        match self {
            Self::Entry(e) => SortKey::Name(&e.name),
            Self::Ignored(name) | Self::Skipped(name) => SortKey::Name(name),
            Self::Subtree { prefix, .. } => SortKey::Subtree(prefix),
        }
    }
}

/// A name, or a subtree that sorts as `prefix/`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SortKey<'a> {
    Name(&'a str),
    Subtree(&'a str),
}

impl SortKey<'_> {
    /// Orders this key against an index name.
    pub(crate) fn cmp_name(&self, name: &str) -> std::cmp::Ordering {
        match *self {
            Self::Name(own) => own.as_bytes().cmp(name.as_bytes()),
            Self::Subtree(prefix) => {
                let key = prefix.as_bytes().iter().chain(b"/");
                key.cmp(name.as_bytes().iter())
            }
        }
    }
}

/// A pending step inside one directory.
#[derive(Debug)]
enum Pending {
    Entry {
        name: String,
        kind: FileKind,
        meta: Metadata,
    },
    Ignored(String),
    Skipped(String),
    Descend(String),
    Subtree(String, SubtreeRule),
}

impl Pending {
    fn key(&self) -> Vec<u8> {
        match self {
            Self::Entry { name, .. } | Self::Ignored(name) | Self::Skipped(name) => {
                name.as_bytes().to_vec()
            }
            Self::Descend(name) | Self::Subtree(name, _) => {
                let mut key = name.as_bytes().to_vec();
                key.push(b'/');
                key
            }
        }
    }
}

/// The walk itself: an iterator of [`WalkItem`]s. Problems with single names are collected in
/// `issues` and the walk goes on.
#[derive(Debug)]
pub(crate) struct Walker {
    root: PathBuf,
    ignores: Gitignore,
    stack: Vec<std::vec::IntoIter<Pending>>,
    pub(crate) issues: Vec<ScanIssue>,
}

impl Walker {
    /// Starts a walk of `root`; reading the root itself must succeed.
    pub(crate) fn new(root: &Path, ignores: Gitignore) -> std::io::Result<Self> {
        let mut walker = Self {
            root: root.to_owned(),
            ignores,
            stack: Vec::new(),
            issues: Vec::new(),
        };
        let items = walker.read_dir("")?;
        walker.stack.push(items.into_iter());
        Ok(walker)
    }

    fn issue(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ScanIssue {
            name: name.into(),
            message: message.into(),
        });
    }

    /// Lists one directory (relative `dir`, "" for the root) as sorted pending steps.
    fn read_dir(&mut self, dir: &str) -> std::io::Result<Vec<Pending>> {
        let mut items = Vec::new();
        for dirent in fs::read_dir(self.root.join(dir))? {
            let dirent = dirent?;
            let file_name = dirent.file_name();
            let Some(base) = file_name.to_str() else {
                self.issue(
                    format!("{dir}{}", file_name.to_string_lossy()),
                    "name is not valid UTF-8; skipped",
                );
                continue;
            };
            let name = format!("{dir}{base}");
            if !is_nfc(base) {
                self.issue(name, "name is not in Unicode NFC form; skipped");
                continue;
            }
            if is_internal(dir, base) {
                continue;
            }
            let meta = match dirent.metadata() {
                Ok(meta) => meta,
                Err(e) => {
                    // Gone since the listing, or unreadable: skipped this time; its index
                    // entry is left alone rather than taken as deleted.
                    self.issue(name.clone(), format!("cannot read metadata: {e}"));
                    // It may be a directory: keep whatever the index has below it too.
                    items.push(Pending::Subtree(name.clone(), SubtreeRule::Keep));
                    items.push(Pending::Skipped(name));
                    continue;
                }
            };
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                FileKind::Directory
            } else if file_type.is_symlink() {
                FileKind::Symlink
            } else if file_type.is_file() {
                FileKind::File
            } else {
                self.issue(
                    name.clone(),
                    "not a regular file, directory or symlink; skipped",
                );
                items.push(Pending::Skipped(name));
                continue;
            };
            let is_dir = kind == FileKind::Directory;
            if self.ignores.matched(&name, is_dir).is_ignore() {
                if is_dir {
                    items.push(Pending::Subtree(name.clone(), SubtreeRule::Ignore));
                }
                items.push(Pending::Ignored(name));
                continue;
            }
            if is_dir {
                items.push(Pending::Descend(name.clone()));
            }
            items.push(Pending::Entry { name, kind, meta });
        }
        items.sort_by_cached_key(Pending::key);
        Ok(items)
    }

    fn step(&mut self, pending: Pending) -> Option<WalkItem> {
        match pending {
            Pending::Entry { name, kind, meta } => {
                let mut entry = DiskEntry::from_metadata(name, &meta, kind);
                if kind == FileKind::Symlink {
                    match fs::read_link(self.root.join(&entry.name)) {
                        Ok(target) => match target.into_os_string().into_string() {
                            Ok(target) => entry.symlink_target = target,
                            Err(_) => {
                                let name = entry.name;
                                self.issue(name.clone(), "symlink target is not UTF-8; skipped");
                                return Some(WalkItem::Skipped(name));
                            }
                        },
                        Err(e) => {
                            let name = entry.name;
                            self.issue(name.clone(), format!("cannot read symlink: {e}"));
                            return Some(WalkItem::Skipped(name));
                        }
                    }
                }
                Some(WalkItem::Entry(entry))
            }
            Pending::Ignored(name) => Some(WalkItem::Ignored(name)),
            Pending::Skipped(name) => Some(WalkItem::Skipped(name)),
            Pending::Subtree(prefix, rule) => Some(WalkItem::Subtree { prefix, rule }),
            Pending::Descend(prefix) => match self.read_dir(&format!("{prefix}/")) {
                Ok(items) => {
                    self.stack.push(items.into_iter());
                    None
                }
                Err(e) => {
                    self.issue(prefix.clone(), format!("cannot read directory: {e}"));
                    Some(WalkItem::Subtree {
                        prefix,
                        rule: SubtreeRule::Keep,
                    })
                }
            },
        }
    }
}

impl Iterator for Walker {
    type Item = WalkItem;

    fn next(&mut self) -> Option<WalkItem> {
        loop {
            let Some(pending) = self.stack.last_mut()?.next() else {
                self.stack.pop();
                continue;
            };
            if let Some(item) = self.step(pending) {
                return Some(item);
            }
        }
    }
}

/// Names peerfold keeps for itself: the marker directory and ignore file in the root, and
/// temp files (`.peerfold.NAME.tmp`) anywhere.
fn is_internal(dir: &str, base: &str) -> bool {
    (dir.is_empty() && (base == MARKER_DIR || base == IGNORE_FILE))
        || (base.starts_with(".peerfold.") && base.ends_with(".tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(root: &Path, ignores: Gitignore) -> Vec<String> {
        Walker::new(root, ignores)
            .unwrap()
            .map(|item| match item {
                WalkItem::Entry(e) => e.name,
                WalkItem::Ignored(n) => format!("ignored:{n}"),
                WalkItem::Skipped(n) => format!("skipped:{n}"),
                WalkItem::Subtree { prefix, rule } => format!("{rule:?}:{prefix}/"),
            })
            .collect()
    }

    #[test]
    fn walk_order_is_byte_order_of_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a", "a/b", "a0", ".peerfold"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        for f in [
            "a.txt",
            "a/b/c",
            "a/z",
            "A",
            "a0/x",
            ".peerfold/x",
            ".peerfold.f.tmp",
        ] {
            fs::write(root.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let got = names(root, Gitignore::empty());
        assert_eq!(
            got,
            vec![
                "A", "a", "a.txt", "a/b", "a/b/c", "a/z", "a0", "a0/x", "link"
            ]
        );
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            got, sorted,
            "walk order must equal the index's ORDER BY name"
        );
    }

    #[test]
    fn ignored_directories_are_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("build/deep")).unwrap();
        fs::write(root.join("build/deep/x"), b"x").unwrap();
        fs::write(root.join("keep.log"), b"x").unwrap();
        fs::write(root.join("drop.log"), b"x").unwrap();
        let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
        builder.add_line(None, "build/").unwrap();
        builder.add_line(None, "*.log").unwrap();
        builder.add_line(None, "!keep.log").unwrap();
        let got = names(root, builder.build().unwrap());
        assert_eq!(
            got,
            vec![
                "ignored:build",
                "Ignore:build/",
                "ignored:drop.log",
                "keep.log"
            ]
        );
    }
}
