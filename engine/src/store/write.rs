//! Transactions and writes: only the writer ([`Store`]) has them, and each is one
//! transaction (or one statement).

use std::collections::HashSet;

use peerfold_protocol::chunking::Block;
use peerfold_protocol::version::VersionVector;
use peerfold_protocol::wire;
use peerfold_protocol::{DeviceId, ShortId};
use prost::Message as _;
use rusqlite::{OptionalExtension, Transaction, params};

use super::clock::{FolderClock, unix_now};
use super::codec::{decode_blocks, decode_version, encode_blocks, hash_prefix};
use super::tally::Tally;
use super::{FolderIdx, LOCAL_DEVICE, LocalChange, PendingFolder, Store, StoreError, StuckChange};
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
        self.ensure_folder_at(folder_id, unix_now())
    }

    /// [`Store::ensure_folder`] with the clock at `now` (Unix seconds). A new row is a new
    /// index, maybe one rebuilt after the old was lost: its counters start after `now`.
    pub(crate) fn ensure_folder_at(
        &mut self,
        folder_id: &str,
        now: u64,
    ) -> Result<FolderIdx, StoreError> {
        if let Some(idx) = self.folder(folder_id)? {
            return Ok(idx);
        }
        self.reads.conn.execute(
            "INSERT INTO folders (id, index_id, counter_floor, tallied) VALUES (?1, ?2, ?3, 1)",
            params![folder_id, random_index_id(), now.saturating_add(1) as i64],
        )?;
        Ok(FolderIdx(self.reads.conn.last_insert_rowid()))
    }

    /// Erases what the index holds of the folder (`None`: of every folder): its entries,
    /// every device's, and its index ID, in one transaction. The next scan rebuilds it from
    /// disk as a new index (counters start after now) and peers send theirs again.
    pub fn forget_folders(&mut self, folder_id: Option<&str>) -> Result<usize, StoreError> {
        let tx = self.reads.conn.transaction()?;
        let folders: Vec<i64> = match folder_id {
            Some(id) => tx
                .query_row("SELECT idx FROM folders WHERE id = ?1", [id], |r| r.get(0))
                .optional()?
                .into_iter()
                .collect(),
            None => tx
                .prepare("SELECT idx FROM folders")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
        };
        for idx in &folders {
            // local_blocks has no key to the folder: its rows go by the files they name.
            tx.execute(
                "DELETE FROM local_blocks WHERE file_id IN (SELECT id FROM files WHERE folder_idx = ?1)",
                [idx],
            )?;
            // Files and remote index states go with it (ON DELETE CASCADE).
            tx.execute("DELETE FROM folders WHERE idx = ?1", [idx])?;
        }
        tx.commit()?;
        Ok(folders.len())
    }

    /// Records changes observed on disk in one transaction: each gets the next sequence
    /// number and a version with one more change by `local`. A change whose version cannot
    /// advance (its counter is at the end of its range) is left out and returned.
    pub fn apply_local_changes(
        &mut self,
        folder: FolderIdx,
        local: ShortId,
        changes: &[LocalChange],
    ) -> Result<Vec<StuckChange>, StoreError> {
        let now = self.wait_for_floor(folder)?;
        self.apply_local_changes_at(folder, local, changes, now)
    }

    /// [`Store::apply_local_changes`] with the clock at `now` (Unix seconds).
    pub(crate) fn apply_local_changes_at(
        &mut self,
        folder: FolderIdx,
        local: ShortId,
        changes: &[LocalChange],
        now: u64,
    ) -> Result<Vec<StuckChange>, StoreError> {
        let tx = self.reads.conn.transaction()?;
        let mut clock = FolderClock::read(&tx, folder)?;
        let time = clock.counter_time(now);
        let mut stuck = Vec::new();
        let mut tally = Tally::new(folder);
        for change in changes {
            let previous = previous_by_id(&tx, &change.name, change.previous)?;
            let version = match previous.version.clone().incremented(local, time) {
                Ok(version) => version,
                Err(source) => {
                    stuck.push(StuckChange {
                        name: change.name.clone(),
                        source,
                    });
                    continue;
                }
            };
            clock.note_issued(version.counter(local));
            let sequence = clock.next_sequence();
            let at = (folder, sequence);
            record(&tx, &mut tally, at, change, &version, local, &previous)?;
        }
        tally.commit(&tx)?;
        clock.write(&tx, folder)?;
        tx.commit()?;
        Ok(stuck)
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
        let sequences = self.record_pulled_many(folder, &[(change, version, modified_by)])?;
        Ok(sequences[0])
    }

    /// [`Store::record_pulled`] for several pulled versions of distinct names, in one
    /// transaction (downloads that end together share its commit); their sequence numbers,
    /// in order.
    pub fn record_pulled_many(
        &mut self,
        folder: FolderIdx,
        pulled: &[(&LocalChange, &VersionVector, ShortId)],
    ) -> Result<Vec<u64>, StoreError> {
        let tx = self.reads.conn.transaction()?;
        let mut clock = FolderClock::read(&tx, folder)?;
        let mut tally = Tally::new(folder);
        let mut sequences = Vec::with_capacity(pulled.len());
        for &(change, version, modified_by) in pulled {
            let previous = match change.previous {
                Some(id) => previous_by_id(&tx, &change.name, Some(id))?,
                None => previous_by_name(&tx, folder, &change.name)?,
            };
            let sequence = clock.next_sequence();
            let at = (folder, sequence);
            record(&tx, &mut tally, at, change, version, modified_by, &previous)?;
            sequences.push(sequence as u64);
        }
        tally.commit(&tx)?;
        clock.write(&tx, folder)?;
        tx.commit()?;
        Ok(sequences)
    }

    /// Records the versions an override or revert chose (`model::rewrite`), made by this
    /// device (`me`), in one transaction.
    pub fn record_rewrites(
        &mut self,
        folder: FolderIdx,
        me: ShortId,
        rewrites: &[(LocalChange, VersionVector)],
    ) -> Result<(), StoreError> {
        let tx = self.reads.conn.transaction()?;
        let mut clock = FolderClock::read(&tx, folder)?;
        let mut tally = Tally::new(folder);
        for (change, version) in rewrites {
            let previous = previous_by_name(&tx, folder, &change.name)?;
            clock.note_issued(version.counter(me));
            let sequence = clock.next_sequence();
            let at = (folder, sequence);
            record(&tx, &mut tally, at, change, version, me, &previous)?;
        }
        tally.commit(&tx)?;
        clock.write(&tx, folder)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a batch of `device`'s index for the folder, in one transaction, as it is: a
    /// session stores what peers send through [`Store::receive_remote_index`], which checks
    /// it first. A new `index_id` means the device's index was rebuilt: everything held from
    /// it before is dropped first.
    pub fn apply_remote_index(
        &mut self,
        folder: FolderIdx,
        device: DeviceId,
        index_id: u64,
        entries: &[FileEntry],
    ) -> Result<(), StoreError> {
        let tx = self.reads.conn.transaction()?;
        let max_sequence = entries.iter().map(|e| e.sequence).max().unwrap_or(0);
        let mut tally = Tally::new(folder);
        store_remote(
            &tx,
            &mut tally,
            (folder, device, index_id),
            entries.iter(),
            max_sequence,
        )?;
        tally.commit(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Drops up to `limit` of the rows held of `device`'s index of the folder, in one short
    /// transaction; returns how many went. A session drops a peer's old index this way,
    /// slice by slice, before storing the first batch under its new index ID (one
    /// statement for 1,000,000 rows held the writer for seconds).
    pub fn forget_remote_slice(
        &mut self,
        folder: FolderIdx,
        device: DeviceId,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let tx = self.reads.conn.transaction()?;
        let rows: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, name FROM files WHERE folder_idx = ?1
                 AND device_idx = (SELECT idx FROM devices WHERE device_id = ?2) LIMIT ?3",
            )?
            .query_map(
                params![folder.0, device.as_bytes().as_slice(), limit as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<Result<_, _>>()?;
        let mut tally = Tally::new(folder);
        let mut delete = tx.prepare_cached("DELETE FROM files WHERE id = ?1")?;
        for (id, name) in &rows {
            tally.before(&tx, name)?;
            delete.execute([id])?;
            tally.after(&tx, name)?;
        }
        drop(delete);
        tally.commit(&tx)?;
        tx.commit()?;
        Ok(rows.len())
    }

    /// Remembers a device that tried to connect without being configured, as the newest;
    /// past `MAX_PENDING_DEVICES` (100) the oldest go.
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
    /// past `MAX_PENDING_FOLDERS_PER_DEVICE` (256) of that device's, or `MAX_PENDING_FOLDERS` (1,024)
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

/// The row number of a remote device, created on first use.
fn ensure_device(tx: &Transaction<'_>, device: DeviceId) -> Result<i64, StoreError> {
    tx.prepare_cached("INSERT OR IGNORE INTO devices (device_id) VALUES (?1)")?
        .execute([device.as_bytes().as_slice()])?;
    Ok(tx
        .prepare_cached("SELECT idx FROM devices WHERE device_id = ?1")?
        .query_row([device.as_bytes().as_slice()], |r| r.get(0))?)
}

/// Stores `entries` as `device`'s (with index ID `index_id`), and notes that the device's
/// index was seen up to `max_sequence`. A new index ID drops what was held of the device.
pub(super) fn store_remote<'e>(
    tx: &Transaction<'_>,
    tally: &mut Tally,
    (folder, device, index_id): (FolderIdx, DeviceId, u64),
    entries: impl Iterator<Item = &'e FileEntry>,
    max_sequence: u64,
) -> Result<(), StoreError> {
    let device_idx = ensure_device(tx, device)?;
    let known: Option<i64> = tx
        .prepare_cached(
            "SELECT index_id FROM remote_indexes WHERE folder_idx = ?1 AND device_idx = ?2",
        )?
        .query_row(params![folder.0, device_idx], |r| r.get(0))
        .optional()?;
    if known != Some(index_id as i64) {
        // Usually nothing is left: a session drops a replaced index slice by slice first.
        let names: Vec<String> = tx
            .prepare_cached("SELECT name FROM files WHERE folder_idx = ?1 AND device_idx = ?2")?
            .query_map(params![folder.0, device_idx], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for name in &names {
            tally.before(tx, name)?;
        }
        tx.execute(
            "DELETE FROM files WHERE folder_idx = ?1 AND device_idx = ?2",
            params![folder.0, device_idx],
        )?;
        for name in &names {
            tally.after(tx, name)?;
        }
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
    for e in entries {
        // Never back to an older entry: a session replaced by a better link may still be
        // storing a batch its successor has already overtaken.
        if !tally.replace_unless_newer_held(tx, device_idx, e)? {
            continue;
        }
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
    }
    drop(upsert);
    tx.execute(
        "UPDATE remote_indexes SET max_sequence = max(max_sequence, ?3)
         WHERE folder_idx = ?1 AND device_idx = ?2",
        params![folder.0, device_idx, max_sequence as i64],
    )?;
    Ok(())
}

/// What a local entry replaces: the previous entry's version and blocks (none for a new
/// name).
#[derive(Default)]
struct Previous {
    version: VersionVector,
    blocks: Vec<Block>,
}

/// The entry in row `id`, if any.
fn previous_by_id(
    tx: &Transaction<'_>,
    name: &str,
    id: Option<i64>,
) -> Result<Previous, StoreError> {
    let Some(id) = id else {
        return Ok(Previous::default());
    };
    let row: Option<(Vec<u8>, Vec<u8>)> = tx
        .prepare_cached("SELECT version, blocks FROM files WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    previous_from(name, row)
}

/// This device's entry for `name`, if any.
fn previous_by_name(
    tx: &Transaction<'_>,
    folder: FolderIdx,
    name: &str,
) -> Result<Previous, StoreError> {
    let row: Option<(Vec<u8>, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT version, blocks FROM files
             WHERE folder_idx = ?1 AND device_idx = ?2 AND name = ?3",
        )?
        .query_row(params![folder.0, LOCAL_DEVICE, name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    previous_from(name, row)
}

fn previous_from(name: &str, row: Option<(Vec<u8>, Vec<u8>)>) -> Result<Previous, StoreError> {
    Ok(match row {
        Some((version, blocks)) => Previous {
            version: decode_version(name, &version)?,
            blocks: decode_blocks(name, &blocks)?,
        },
        None => Previous::default(),
    })
}

/// Writes `change` as this device's entry with `version`, and keeps the block index in step.
/// (`at`: the folder and the entry's sequence number.) Counts the change in `tally`.
fn record(
    tx: &Transaction<'_>,
    tally: &mut Tally,
    (folder, sequence): (FolderIdx, i64),
    change: &LocalChange,
    version: &VersionVector,
    modified_by: ShortId,
    previous: &Previous,
) -> Result<(), StoreError> {
    let version_blob = wire::Vector::from(version).encode_to_vec();
    let blocks = match (&change.blocks, change.deleted) {
        (_, true) => &[][..],
        (Some(blocks), false) => blocks.as_slice(),
        (None, false) => previous.blocks.as_slice(),
    };
    let entry = FileEntry {
        name: change.name.clone(),
        kind: change.kind,
        size: change.size,
        permissions: change.permissions,
        modified: change.modified,
        deleted: change.deleted,
        invalid: change.invalid,
        sequence: sequence as u64,
        version: version.clone(),
        modified_by,
        symlink_target: change.symlink_target.clone(),
        blocks: blocks.to_vec(),
    };
    tally.replace(tx, &change.name, LOCAL_DEVICE, Some(&entry))?;
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
    let old: HashSet<i64> = previous
        .blocks
        .iter()
        .map(|b| hash_prefix(&b.hash))
        .collect();
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
