//! The in-memory form of index entries, shared by the scanner, the store and the CLI.

use peerfold_protocol::chunking::{self, Block};
use peerfold_protocol::version::VersionVector;
use peerfold_protocol::{ShortId, wire};

/// The permission bits that travel between devices and are applied from a peer: read,
/// write and execute for user, group and others (proto: "the 0o777 part of the mode").
/// setuid, setgid and sticky from a peer would let it make a daemon running as root create
/// `-rwsr-xr-x root` files on its word.
pub const PERMISSION_BITS: u32 = 0o777;

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

/// Why an entry received from a peer was refused.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The name could escape the folder or is reserved.
    #[error(transparent)]
    Name(#[from] crate::model::names::NameError),
    /// Anything else that does not add up.
    #[error("entry {name:?}: {detail}")]
    Invalid {
        /// The name, cut to [`names::SHOWN_NAME_BYTES`](crate::model::names::SHOWN_NAME_BYTES).
        name: String,
        /// What is wrong.
        detail: &'static str,
    },
}

impl EntryError {
    /// The refused entry's name, cut to
    /// [`names::SHOWN_NAME_BYTES`](crate::model::names::SHOWN_NAME_BYTES).
    pub fn name(&self) -> &str {
        match self {
            Self::Name(e) => e.name(),
            Self::Invalid { name, .. } => name,
        }
    }

    /// What is wrong, without the name (for logs about peer input).
    pub fn what(&self) -> &'static str {
        match self {
            Self::Name(e) => e.what(),
            Self::Invalid { detail, .. } => detail,
        }
    }
}

/// A block as it travels in an entry's block list.
pub(crate) fn wire_block(block: &Block) -> wire::BlockInfo {
    wire::BlockInfo {
        offset: block.offset,
        size: block.size,
        hash: block.hash.as_bytes().to_vec(),
    }
}

impl FileEntry {
    /// The entry as it travels in Index and IndexUpdate messages.
    pub fn to_wire(&self) -> wire::FileInfo {
        wire::FileInfo {
            name: self.name.clone(),
            kind: match self.kind {
                FileKind::File => wire::FileKind::File,
                FileKind::Directory => wire::FileKind::Directory,
                FileKind::Symlink => wire::FileKind::Symlink,
            } as i32,
            size: self.size,
            permissions: self.permissions,
            modified_s: self.modified.seconds,
            modified_ns: self.modified.nanos,
            deleted: self.deleted,
            invalid: self.invalid,
            sequence: self.sequence,
            version: Some(wire::Vector::from(&self.version)),
            blocks: self.blocks.iter().map(wire_block).collect(),
            symlink_target: self.symlink_target.clone(),
            modified_by: self.modified_by.0,
            blocks_delta: None,
        }
    }

    /// An entry received from a peer, checked: a safe name, a known kind, blocks that tile
    /// the file exactly with 32-byte hashes, sizes within the protocol's limits.
    pub fn from_wire(info: wire::FileInfo) -> Result<Self, EntryError> {
        crate::model::names::validate(&info.name)?;
        let invalid = |detail| EntryError::Invalid {
            name: crate::model::names::shown(&info.name),
            detail,
        };
        let kind = match wire::FileKind::try_from(info.kind) {
            Ok(wire::FileKind::File) => FileKind::File,
            Ok(wire::FileKind::Directory) => FileKind::Directory,
            Ok(wire::FileKind::Symlink) => FileKind::Symlink,
            Err(_) => return Err(invalid("unknown kind")),
        };
        if info.blocks_delta.is_some() {
            // `block_delta::expand` makes the list whole first, with this device's entry.
            return Err(invalid("block list given as a change that was not applied"));
        }
        if info.modified_ns > 999_999_999 {
            return Err(invalid("nanoseconds out of range"));
        }
        let mut blocks = Vec::with_capacity(info.blocks.len());
        let mut offset = 0u64;
        for b in &info.blocks {
            let hash: [u8; 32] = b
                .hash
                .as_slice()
                .try_into()
                .map_err(|_| invalid("block hash is not 32 bytes"))?;
            if b.offset != offset || b.size == 0 || b.size > chunking::MAX_BLOCK_SIZE {
                return Err(invalid("blocks do not tile the file"));
            }
            blocks.push(Block {
                offset,
                size: b.size,
                hash: blake3::Hash::from_bytes(hash),
            });
            offset += u64::from(b.size);
        }
        let is_live_file = kind == FileKind::File && !info.deleted;
        if (is_live_file && offset != info.size) || (!is_live_file && !blocks.is_empty()) {
            return Err(invalid("block list does not match the size"));
        }
        if kind == FileKind::Symlink && !info.deleted && info.symlink_target.is_empty() {
            return Err(invalid("symlink without a target"));
        }
        Ok(Self {
            kind,
            size: if is_live_file { info.size } else { 0 },
            permissions: info.permissions & PERMISSION_BITS,
            modified: Timestamp {
                seconds: info.modified_s,
                nanos: info.modified_ns,
            },
            deleted: info.deleted,
            invalid: info.invalid,
            sequence: info.sequence,
            version: info
                .version
                .as_ref()
                .map(VersionVector::from)
                .unwrap_or_default(),
            modified_by: ShortId(info.modified_by),
            symlink_target: if kind == FileKind::Symlink {
                info.symlink_target
            } else {
                String::new()
            },
            blocks,
            name: info.name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_refused() {
        let entry = FileEntry {
            name: "dir/a.txt".into(),
            kind: FileKind::File,
            size: 5,
            permissions: 0o640,
            modified: Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            },
            deleted: false,
            invalid: false,
            sequence: 9,
            version: VersionVector::new().incremented(ShortId(3), 1).unwrap(),
            modified_by: ShortId(3),
            symlink_target: String::new(),
            blocks: vec![Block {
                offset: 0,
                size: 5,
                hash: blake3::hash(b"hello"),
            }],
        };
        assert_eq!(FileEntry::from_wire(entry.to_wire()).unwrap(), entry);

        let mut bad = entry.to_wire();
        bad.name = "../escape".into();
        assert!(matches!(
            FileEntry::from_wire(bad),
            Err(EntryError::Name(_))
        ));
        // Only the 0o777 part of a peer's permissions is taken.
        let mut special = entry.to_wire();
        special.permissions = 0o7755;
        assert_eq!(FileEntry::from_wire(special).unwrap().permissions, 0o755);

        let mut bad = entry.to_wire();
        bad.size = 6;
        assert!(FileEntry::from_wire(bad).is_err());
        let mut bad = entry.to_wire();
        bad.blocks[0].hash.pop();
        assert!(FileEntry::from_wire(bad).is_err());
        let mut bad = entry.to_wire();
        bad.kind = 9;
        assert!(FileEntry::from_wire(bad).is_err());
    }
}
