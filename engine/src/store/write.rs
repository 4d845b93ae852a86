//! Transactions and writes: only the writer ([`Store`]) has them, and each is one
//! transaction (or one statement).

use std::collections::HashSet;

use peerfold_protocol::version::VersionVector;
use peerfold_protocol::wire;
use peerfold_protocol::{DeviceId, ShortId};
use prost::Message as _;
use rusqlite::{OptionalExtension, Transaction, params};

use super::codec::{decode_blocks, decode_version, encode_blocks, hash_prefix};
use super::{FolderIdx, LOCAL_DEVICE, LocalChange, PendingFolder, Store, StoreError};
use crate::model::entry::FileEntry;

/// Devices that knocked without being configured, kept at most (the newest). A user accepts
/// them one at a time from a list; a hundred strangers at once is a flood, in which the
/// newest are the likeliest to be the one being paired. A row is about 150 bytes.
pub(crate) const MAX_PENDING_DEVICES: usize = 100;
/// Folder offers kept per offering device: one ClusterConfig's worth (the session takes
/// 256 offers from each), so a device's new offers push out its own older ones first.
pub(crate) const MAX_PENDING_FOLDERS_PER_DEVICE: usize = 256;
/// Folder offers kept in all: four devices' full share. With IDs of at most 256 bytes and
/// labels cut to 256 (folder/offers.rs), under 600 KB of rows.
pub(crate) const MAX_PENDING_FOLDERS: usize = 1024;

impl Store {
    /// The folder's row, created on first use with a fresh random index ID.
    pub fn ensure_folder(&mut self, folder_id: &str) -> Result<FolderIdx, StoreError> {
        if let Some(idx) = self.folder(folder_id)? {
            return Ok(idx);
        }
        self.reads.conn.execute(
            "INSERT INTO folders (id, index_id) VALUES (?1, ?2)",
            params![folder_id, random_index_id()],
        )?;
        Ok(FolderIdx(self.reads.conn.last_insert_rowid()))
    }

    /// Records changes observed on disk in one transaction: each gets the next sequence
    /// number and a version bumped by `local`.
    pub fn apply_local_changes(
        &mut self,
        folder: FolderIdx,
        local: ShortId,
        changes: &[LocalChange],
    ) -> Result<(), StoreError> {
        let tx = self.reads.conn.transaction()?;
        let mut sequence: i64 = tx.query_row(
            "SELECT sequence FROM folders WHERE idx = ?1",
            [folder.0],
            |r| r.get(0),
        )?;
        for change in changes {
            sequence += 1;
            apply_one(&tx, folder, Versioning::Bump(local), change, sequence)?;
        }
        tx.execute(
            "UPDATE folders SET sequence = ?1 WHERE idx = ?2",
            params![sequence, folder.0],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a version pulled from a peer as the local entry, under the next sequence
    /// number, keeping the peer's version vector and modifier.
    pub fn record_pulled(
        &mut self,
        folder: FolderIdx,
        change: &LocalChange,
        version: &VersionVector,
        modified_by: ShortId,
    ) -> Result<u64, StoreError> {
        let tx = self.reads.conn.transaction()?;
        let sequence = tx.query_row(
            "SELECT sequence FROM folders WHERE idx = ?1",
            [folder.0],
            |r| r.get::<_, i64>(0),
        )? + 1;
        apply_one(
            &tx,
            folder,
            Versioning::Exact(version, modified_by),
            change,
            sequence,
        )?;
        tx.execute(
            "UPDATE folders SET sequence = ?1 WHERE idx = ?2",
            params![sequence, folder.0],
        )?;
        tx.commit()?;
        Ok(sequence as u64)
    }

    /// The row number of a remote device, created on first use.
    fn ensure_device(tx: &Transaction<'_>, device: DeviceId) -> Result<i64, StoreError> {
        tx.prepare_cached("INSERT OR IGNORE INTO devices (device_id) VALUES (?1)")?
            .execute([device.as_bytes().as_slice()])?;
        Ok(tx
            .prepare_cached("SELECT idx FROM devices WHERE device_id = ?1")?
            .query_row([device.as_bytes().as_slice()], |r| r.get(0))?)
    }

    /// Records a batch of `device`'s index for the folder, in one transaction. A new
    /// `index_id` means the device's index was rebuilt: everything held from it before is
    /// dropped first.
    pub fn apply_remote_index(
        &mut self,
        folder: FolderIdx,
        device: DeviceId,
        index_id: u64,
        entries: &[FileEntry],
    ) -> Result<(), StoreError> {
        let tx = self.reads.conn.transaction()?;
        let device_idx = Self::ensure_device(&tx, device)?;
        let known: Option<i64> = tx
            .prepare_cached(
                "SELECT index_id FROM remote_indexes WHERE folder_idx = ?1 AND device_idx = ?2",
            )?
            .query_row(params![folder.0, device_idx], |r| r.get(0))
            .optional()?;
        if known != Some(index_id as i64) {
            tx.execute(
                "DELETE FROM files WHERE folder_idx = ?1 AND device_idx = ?2",
                params![folder.0, device_idx],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO remote_indexes (folder_idx, device_idx, index_id,
                                                        max_sequence)
                 VALUES (?1, ?2, ?3, 0)",
                params![folder.0, device_idx, index_id as i64],
            )?;
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO files (folder_idx, device_idx, name, sequence, kind, size, permissions,
                                modified_s, modified_ns, deleted, invalid, version, modified_by,
                                symlink_target, blocks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (folder_idx, device_idx, name) DO UPDATE SET
                sequence = excluded.sequence, kind = excluded.kind, size = excluded.size,
                permissions = excluded.permissions, modified_s = excluded.modified_s,
                modified_ns = excluded.modified_ns, deleted = excluded.deleted,
                invalid = excluded.invalid, version = excluded.version,
                modified_by = excluded.modified_by, symlink_target = excluded.symlink_target,
                blocks = excluded.blocks",
        )?;
        let mut max_sequence = 0u64;
        for e in entries {
            upsert.execute(params![
                folder.0,
                device_idx,
                e.name,
                e.sequence as i64,
                e.kind.code(),
                e.size as i64,
                e.permissions,
                e.modified.seconds,
                e.modified.nanos,
                e.deleted,
                e.invalid,
                wire::Vector::from(&e.version).encode_to_vec(),
                e.modified_by.0 as i64,
                e.symlink_target,
                encode_blocks(&e.blocks),
            ])?;
            max_sequence = max_sequence.max(e.sequence);
        }
        drop(upsert);
        tx.execute(
            "UPDATE remote_indexes SET max_sequence = max(max_sequence, ?3)
             WHERE folder_idx = ?1 AND device_idx = ?2",
            params![folder.0, device_idx, max_sequence as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers a device that tried to connect without being configured, as the newest;
    /// past [`MAX_PENDING_DEVICES`] the oldest go.
    pub fn record_pending_device(
        &mut self,
        device: DeviceId,
        name: &str,
        address: &str,
        unix_seconds: i64,
    ) -> Result<(), StoreError> {
        let tx = self.reads.conn.transaction()?;
        // REPLACE gives the row a new, highest rowid: rowids order pending rows by when
        // they were last recorded (last_seen has only seconds).
        tx.execute(
            "INSERT OR REPLACE INTO pending_devices (device_id, name, address, last_seen)
             VALUES (?1, ?2, ?3, ?4)",
            params![device.as_bytes().as_slice(), name, address, unix_seconds],
        )?;
        tx.execute(
            "DELETE FROM pending_devices WHERE rowid NOT IN
                (SELECT rowid FROM pending_devices ORDER BY rowid DESC LIMIT ?1)",
            [MAX_PENDING_DEVICES as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a device that knocked (it was accepted, or the user declined it).
    pub fn forget_pending_device(&mut self, device: DeviceId) -> Result<(), StoreError> {
        self.reads.conn.execute(
            "DELETE FROM pending_devices WHERE device_id = ?1",
            [device.as_bytes().as_slice()],
        )?;
        Ok(())
    }

    /// Remembers a folder `device` offered that is not shared with it here, as the newest;
    /// past [`MAX_PENDING_FOLDERS_PER_DEVICE`] of that device's, or [`MAX_PENDING_FOLDERS`]
    /// in all, the oldest go.
    pub fn record_pending_folder(&mut self, pending: &PendingFolder) -> Result<(), StoreError> {
        let device = pending.device.as_bytes().as_slice();
        let tx = self.reads.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO pending_folders (folder_id, device_id, label, last_seen)
             VALUES (?1, ?2, ?3, ?4)",
            params![pending.folder, device, pending.label, pending.last_seen],
        )?;
        tx.execute(
            "DELETE FROM pending_folders WHERE device_id = ?1 AND rowid NOT IN
                (SELECT rowid FROM pending_folders WHERE device_id = ?1
                 ORDER BY rowid DESC LIMIT ?2)",
            params![device, MAX_PENDING_FOLDERS_PER_DEVICE as i64],
        )?;
        tx.execute(
            "DELETE FROM pending_folders WHERE rowid NOT IN
                (SELECT rowid FROM pending_folders ORDER BY rowid DESC LIMIT ?1)",
            [MAX_PENDING_FOLDERS as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets offers of `folder` (by `device`, or by every device for `None`): it is now
    /// shared, or the user declined it.
    pub fn forget_pending_folder(
        &mut self,
        folder: &str,
        device: Option<DeviceId>,
    ) -> Result<(), StoreError> {
        match device {
            Some(device) => self.reads.conn.execute(
                "DELETE FROM pending_folders WHERE folder_id = ?1 AND device_id = ?2",
                params![folder, device.as_bytes().as_slice()],
            )?,
            None => self
                .conn
                .execute("DELETE FROM pending_folders WHERE folder_id = ?1", [folder])?,
        };
        Ok(())
    }
}

/// Which version a recorded change gets.
#[derive(Clone, Copy, Debug)]
enum Versioning<'a> {
    /// A change made here: the previous version plus one change by this device.
    Bump(ShortId),
    /// A version pulled from a peer: recorded as it is, with its modifier.
    Exact(&'a VersionVector, ShortId),
}

fn apply_one(
    tx: &Transaction<'_>,
    folder: FolderIdx,
    versioning: Versioning<'_>,
    change: &LocalChange,
    sequence: i64,
) -> Result<(), StoreError> {
    let previous: Option<(i64, Vec<u8>, Vec<u8>)> = match (change.previous, versioning) {
        (Some(id), _) => tx
            .prepare_cached("SELECT id, version, blocks FROM files WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
        (None, Versioning::Exact(..)) => tx
            .prepare_cached(
                "SELECT id, version, blocks FROM files
                 WHERE folder_idx = ?1 AND device_idx = ?2 AND name = ?3",
            )?
            .query_row(params![folder.0, LOCAL_DEVICE, change.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?,
        (None, Versioning::Bump(_)) => None,
    };
    let (old_version, old_blocks) = match &previous {
        Some((_, v, b)) => (
            decode_version(&change.name, v)?,
            decode_blocks(&change.name, b)?,
        ),
        None => (VersionVector::new(), Vec::new()),
    };
    let (version, modified_by) = match versioning {
        Versioning::Bump(local) => (old_version.incremented(local), local),
        Versioning::Exact(version, by) => (version.clone(), by),
    };
    let version_blob = wire::Vector::from(&version).encode_to_vec();
    let blocks = match (&change.blocks, change.deleted) {
        (_, true) => &[][..],
        (Some(blocks), false) => blocks.as_slice(),
        (None, false) => old_blocks.as_slice(),
    };
    let blocks_blob = encode_blocks(blocks);
    let file_id = tx
        .prepare_cached(
            "INSERT INTO files (folder_idx, device_idx, name, sequence, kind, size, permissions,
                            modified_s, modified_ns, deleted, invalid, version, modified_by,
                            symlink_target, blocks, inode)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (folder_idx, device_idx, name) DO UPDATE SET
            sequence = excluded.sequence, kind = excluded.kind, size = excluded.size,
            permissions = excluded.permissions, modified_s = excluded.modified_s,
            modified_ns = excluded.modified_ns, deleted = excluded.deleted,
            invalid = excluded.invalid, version = excluded.version,
            modified_by = excluded.modified_by, symlink_target = excluded.symlink_target,
            blocks = excluded.blocks, inode = excluded.inode
         RETURNING id",
        )?
        .query_row(
            params![
                folder.0,
                LOCAL_DEVICE,
                change.name,
                sequence,
                change.kind.code(),
                change.size as i64,
                change.permissions,
                change.modified.seconds,
                change.modified.nanos,
                change.deleted,
                change.invalid,
                version_blob,
                modified_by.0 as i64,
                change.symlink_target,
                blocks_blob,
                change.inode as i64,
            ],
            |r| r.get::<_, i64>(0),
        )?;
    // Keep the block index in step by touching only the hashes that came or went.
    let old: HashSet<i64> = old_blocks.iter().map(|b| hash_prefix(&b.hash)).collect();
    let new: HashSet<i64> = blocks.iter().map(|b| hash_prefix(&b.hash)).collect();
    let mut remove =
        tx.prepare_cached("DELETE FROM local_blocks WHERE hash_prefix = ?1 AND file_id = ?2")?;
    for prefix in old.difference(&new) {
        remove.execute(params![prefix, file_id])?;
    }
    let mut add = tx.prepare_cached(
        "INSERT OR IGNORE INTO local_blocks (hash_prefix, file_id) VALUES (?1, ?2)",
    )?;
    for prefix in new.difference(&old) {
        add.execute(params![prefix, file_id])?;
    }
    Ok(())
}

fn random_index_id() -> i64 {
    let mut bytes = [0u8; 8];
    // The OS random source failing is not recoverable in any useful way; fall back to the
    // clock so the folder still gets a fresh-looking ID.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes()[..8]
            .try_into()
            .unwrap_or_default();
    }
    // Non-zero: zero means "no index ID" on the wire.
    (i64::from_le_bytes(bytes) & i64::MAX).max(1)
}
