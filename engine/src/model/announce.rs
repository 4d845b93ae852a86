//! What this device tells a peer about one of its own entries. Encrypted (untrusted)
//! devices will get their own rule here.

use peerfold_protocol::{ShortId, wire};

use super::FolderType;
use super::entry::{FileEntry, PERMISSION_BITS};

/// The wire form of `entry` as announced from a folder of type `folder_type` on the
/// device `me`. A receive-only folder's own changes are announced as invalid, so peers
/// never take them as the truth (Syncthing's "local receive-only" flag does the same).
/// Only the 0o777 part of the permissions is announced (setuid, setgid and sticky bits are
/// this device's business, as the protocol says).
pub fn announced(entry: &FileEntry, folder_type: FolderType, me: ShortId) -> wire::FileInfo {
    let mut info = entry.to_wire();
    info.permissions &= PERMISSION_BITS;
    if folder_type == FolderType::ReceiveOnly && entry.modified_by == me {
        info.invalid = true;
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::{FileKind, Timestamp};
    use peerfold_protocol::version::VersionVector;

    fn entry(by: ShortId) -> FileEntry {
        FileEntry {
            name: "f".into(),
            kind: FileKind::File,
            size: 0,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            sequence: 1,
            version: VersionVector::new().incremented(by, 1).unwrap(),
            modified_by: by,
            symlink_target: String::new(),
            blocks: Vec::new(),
        }
    }

    #[test]
    fn only_a_receive_only_folders_own_changes_are_invalid() {
        let (me, peer) = (ShortId(1), ShortId(2));
        assert!(announced(&entry(me), FolderType::ReceiveOnly, me).invalid);
        assert!(!announced(&entry(peer), FolderType::ReceiveOnly, me).invalid);
        assert!(!announced(&entry(me), FolderType::SendReceive, me).invalid);
        assert!(!announced(&entry(me), FolderType::SendOnly, me).invalid);
    }

    #[test]
    fn special_permission_bits_are_not_announced() {
        let me = ShortId(1);
        let mut setuid = entry(me);
        setuid.permissions = 0o4755;
        assert_eq!(
            announced(&setuid, FolderType::SendReceive, me).permissions,
            0o755
        );
    }
}
