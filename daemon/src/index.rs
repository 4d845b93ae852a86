//! The in-memory form of index entries, shared by the scanner, the store and the CLI.

use peerfold_protocol::ShortId;
use peerfold_protocol::chunking::Block;
use peerfold_protocol::version::VersionVector;

/// What a name is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
}

impl FileKind {
    /// The lowercase name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
        }
    }

    pub(crate) fn code(self) -> i64 {
        match self {
            Self::File => 0,
            Self::Directory => 1,
            Self::Symlink => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::File),
            1 => Some(Self::Directory),
            2 => Some(Self::Symlink),
            _ => None,
        }
    }
}

/// A modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-29T23:31:01.123456789Z`.
    pub fn to_rfc3339(self) -> String {
        match jiff::Timestamp::new(self.seconds, self.nanos as i32) {
            Ok(ts) => format!("{ts:.9}"),
            // Outside jiff's range (years beyond +-9999): print the raw numbers.
            Err(_) => format!("@{}.{:09}", self.seconds, self.nanos),
        }
    }
}

/// One entry of a folder's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative, `/`-separated, UTF-8 path inside the folder.
    pub name: String,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// Bytes (zero for directories, symlinks and tombstones).
    pub size: u64,
    /// Unix permission bits.
    pub permissions: u32,
    /// Last modification.
    pub modified: Timestamp,
    /// A tombstone: the name was deleted.
    pub deleted: bool,
    /// Present but not to be synced (ignored locally).
    pub invalid: bool,
    /// The local sequence number of the change that produced this entry.
    pub sequence: u64,
    /// Which devices changed it how often.
    pub version: VersionVector,
    /// The device that made this version.
    pub modified_by: ShortId,
    /// Where a symlink points (empty otherwise).
    pub symlink_target: String,
    /// The file's content-defined blocks, in order.
    pub blocks: Vec<Block>,
}
