//! The index database (SQLite, WAL). This module is the only place with SQL.
//!
//! The database caches the disk plus what peers said: losing it costs a rescan, never data.
//! One [`Store`] connection writes; scans read through separate [`StoreReader`] connections,
//! which WAL lets run beside the writer on a consistent snapshot.

mod schema;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peerfold_protocol::chunking::Block;
use peerfold_protocol::version::VersionVector;
use peerfold_protocol::wire;
use peerfold_protocol::{DeviceId, ShortId};
use prost::Message as _;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};

use crate::model::entry::{FileEntry, FileKind, Timestamp};

/// The rows of this device have device index 0.
const LOCAL_DEVICE: i64 = 0;

/// Bytes per block in the packed block list: a u32 size and a 32-byte hash.
const PACKED_BLOCK_LEN: usize = 4 + 32;

/// Errors of the index database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened at all.
    #[error("cannot open the index database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file is not a SQLite database, or its pages are damaged.
    #[error(
        "the index database {path} is damaged or not a database ({detail}); it only caches \
         what is on disk: move it away (mv {path} {path}.broken) and run `peerfold scan` to \
         rebuild it"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// A SQLite database that another program made.
    #[error(
        "{path} is a SQLite database of another program, not a peerfold index; move it away \
         and run `peerfold scan` to build a new index"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
    },
    /// The schema is newer than this build understands.
    #[error(
        "the index database {path} has schema version {found}, newer than this peerfold \
         understands ({known}); upgrade peerfold or move the database away to rebuild it"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A row that does not decode.
    #[error("index entry {name:?} is malformed ({detail}); rebuild the index with a rescan")]
    Malformed {
        /// The entry's name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Any other SQLite failure.
    #[error("index database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A folder's row number in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderIdx(i64);

/// What a scan needs to know about a local entry to decide whether it changed.
#[derive(Clone, Debug)]
pub struct LocalRow {
    /// Row id, to find the previous version when recording a change.
    pub id: i64,
    /// The entry's name.
    pub name: String,
    /// Its kind.
    pub kind: FileKind,
    /// Its size.
    pub size: u64,
    /// Its permission bits.
    pub permissions: u32,
    /// Its modification time.
    pub modified: Timestamp,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// Whether it is marked invalid (ignored).
    pub invalid: bool,
    /// The inode seen at the last scan.
    pub inode: u64,
    /// Where a symlink points.
    pub symlink_target: String,
}

/// The new local state of one name, as a scan observed it.
#[derive(Clone, Debug)]
pub struct LocalChange {
    /// The row of the previous entry for this name, if any.
    pub previous: Option<i64>,
    /// The name.
    pub name: String,
    /// Kind (for a tombstone: the kind that was deleted).
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub permissions: u32,
    /// Modification time.
    pub modified: Timestamp,
    /// The name was deleted.
    pub deleted: bool,
    /// The name is now ignored.
    pub invalid: bool,
    /// Symlink target.
    pub symlink_target: String,
    /// The file's blocks; `None` keeps the previous entry's (a metadata-only change).
    pub blocks: Option<Vec<Block>>,
    /// The inode, for change detection at the next scan.
    pub inode: u64,
}

/// A device that tried to connect without being configured here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDevice {
    /// Its ID.
    pub device: DeviceId,
    /// The name it gave in its Hello (empty if it never got that far).
    pub name: String,
    /// The address it came from.
    pub address: String,
    /// When, in Unix seconds.
    pub last_seen: i64,
}

/// A folder a configured device offered that is not shared with it here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFolder {
    /// The folder ID.
    pub folder: String,
    /// The device that offered it.
    pub device: DeviceId,
    /// The label it gave.
    pub label: String,
    /// When, in Unix seconds.
    pub last_seen: i64,
}

/// The writing connection.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A read-only connection, for long reads beside the writer.
#[derive(Debug)]
pub struct StoreReader {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let corrupt = |e: rusqlite::Error| classify(path, e);
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(corrupt)?;
        let application_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(corrupt)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(corrupt)?;
        if application_id != schema::APPLICATION_ID {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(corrupt)?;
            if application_id != 0 || version != 0 || tables != 0 {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                });
            }
        }
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(corrupt)?;
        // 8 MiB of page cache: enough to keep the hot index pages of a large folder.
        conn.pragma_update(None, "cache_size", -8192)
            .map_err(corrupt)?;
        let mut store = Self {
            conn,
            path: path.to_owned(),
        };
        store.migrate(version).map_err(|e| match e {
            StoreError::Sqlite(e) => classify(path, e),
            other => other,
        })?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "application_id", schema::APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// A second, read-only connection to the same database.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: self.path.clone(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(StoreReader { conn })
    }

    /// The folder's row, created on first use with a fresh random index ID.
    pub fn ensure_folder(&mut self, folder_id: &str) -> Result<FolderIdx, StoreError> {
        if let Some(idx) = self.folder(folder_id)? {
            return Ok(idx);
        }
        self.conn.execute(
            "INSERT INTO folders (id, index_id) VALUES (?1, ?2)",
            params![folder_id, random_index_id()],
        )?;
        Ok(FolderIdx(self.conn.last_insert_rowid()))
    }

    /// The folder's row, if it was ever scanned.
    pub fn folder(&self, folder_id: &str) -> Result<Option<FolderIdx>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT idx FROM folders WHERE id = ?1", [folder_id], |r| {
                r.get(0)
            })
            .optional()?
            .map(FolderIdx))
    }

    /// The last local sequence number handed out in the folder.
    pub fn sequence(&self, folder: FolderIdx) -> Result<u64, StoreError> {
        let seq: i64 = self.conn.query_row(
            "SELECT sequence FROM folders WHERE idx = ?1",
            [folder.0],
            |r| r.get(0),
        )?;
        Ok(seq as u64)
    }

    /// Records changes observed on disk in one transaction: each gets the next sequence
    /// number and a version bumped by `local`.
    pub fn apply_local_changes(
        &mut self,
        folder: FolderIdx,
        local: ShortId,
        changes: &[LocalChange],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
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

    /// Every local entry of the folder (tombstones included) in name order.
    pub fn for_each_local_entry<E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        mut visit: impl FnMut(FileEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, kind, size, permissions, modified_s, modified_ns, deleted, invalid,
                    sequence, version, modified_by, symlink_target, blocks
             FROM files WHERE folder_idx = ?1 AND device_idx = ?2 ORDER BY name",
            )
            .map_err(StoreError::from)?;
        let mut rows = stmt
            .query(params![folder.0, LOCAL_DEVICE])
            .map_err(StoreError::from)?;
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            let entry = entry_from_row(row)?;
            visit(entry)?;
        }
        Ok(())
    }

    /// The row number of a remote device, created on first use.
    fn ensure_device(tx: &Transaction<'_>, device: DeviceId) -> Result<i64, StoreError> {
        tx.prepare_cached("INSERT OR IGNORE INTO devices (device_id) VALUES (?1)")?
            .execute([device.as_bytes().as_slice()])?;
        Ok(tx
            .prepare_cached("SELECT idx FROM devices WHERE device_id = ?1")?
            .query_row([device.as_bytes().as_slice()], |r| r.get(0))?)
    }

    /// What we hold of `device`'s index for the folder: its index ID and highest sequence.
    pub fn remote_index_state(
        &self,
        folder: FolderIdx,
        device: DeviceId,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT r.index_id, r.max_sequence FROM remote_indexes r
                 JOIN devices d ON d.idx = r.device_idx
                 WHERE r.folder_idx = ?1 AND d.device_id = ?2",
            )?
            .query_row(params![folder.0, device.as_bytes().as_slice()], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .optional()?)
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
        let tx = self.conn.transaction()?;
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

    /// Calls `visit` once per name of the folder, in name order, with every device's entry
    /// for it (this device's as `local`). Streams: memory holds one name's entries at a time.
    pub fn for_each_name<E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        local: DeviceId,
        visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_name(&self.conn, folder, local, visit)
    }

    /// [`Store::for_each_name`] for the given names only (those the folder has), in order.
    pub fn for_names<'n, E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        names: impl IntoIterator<Item = &'n str>,
        local: DeviceId,
        visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
    ) -> Result<(), E> {
        for_names(&self.conn, folder, names, local, visit)
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
        let tx = self.conn.transaction()?;
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

    /// The folder's index ID (announced to peers; a new one makes them take our full index).
    pub fn index_id(&self, folder: FolderIdx) -> Result<u64, StoreError> {
        let id: i64 = self.conn.query_row(
            "SELECT index_id FROM folders WHERE idx = ?1",
            [folder.0],
            |r| r.get(0),
        )?;
        Ok(id as u64)
    }

    /// Local entries changed after sequence `after`, in sequence order, at most `limit`.
    pub fn local_entries_since(
        &self,
        folder: FolderIdx,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FileEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, kind, size, permissions, modified_s, modified_ns, deleted, invalid,
                    sequence, version, modified_by, symlink_target, blocks
             FROM files WHERE folder_idx = ?1 AND device_idx = ?2 AND sequence > ?3
             ORDER BY sequence LIMIT ?4",
        )?;
        let mut rows = stmt.query(params![folder.0, LOCAL_DEVICE, after as i64, limit as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(entry_from_row(row)?);
        }
        Ok(out)
    }

    /// This device's entry for `name`, if any.
    pub fn local_entry(
        &self,
        folder: FolderIdx,
        name: &str,
    ) -> Result<Option<FileEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, kind, size, permissions, modified_s, modified_ns, deleted, invalid,
                    sequence, version, modified_by, symlink_target, blocks
             FROM files WHERE folder_idx = ?1 AND device_idx = ?2 AND name = ?3",
        )?;
        let mut rows = stmt.query(params![folder.0, LOCAL_DEVICE, name])?;
        match rows.next()? {
            Some(row) => Ok(Some(entry_from_row(row)?)),
            None => Ok(None),
        }
    }

    /// Local files (folder ID, name) that hold a block whose hash starts like `hash`, per
    /// the index. The caller finds the block in the file's entry and checks the data's hash
    /// before using it.
    pub fn local_block_holders(
        &self,
        hash: &blake3::Hash,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT fo.id, f.name FROM local_blocks lb
             JOIN files f ON f.id = lb.file_id
             JOIN folders fo ON fo.idx = f.folder_idx
             WHERE lb.hash_prefix = ?1 AND f.device_idx = ?2 AND f.deleted = 0 LIMIT 8",
        )?;
        let rows = stmt.query_map(params![hash_prefix(hash), LOCAL_DEVICE], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// True if the folder's index has a live, synced regular file of this name.
    pub fn has_local_file(&self, folder: FolderIdx, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM files WHERE folder_idx = ?1 AND device_idx = ?2 AND name = ?3
                 AND deleted = 0 AND invalid = 0 AND kind = ?4",
            )?
            .exists(params![folder.0, LOCAL_DEVICE, name, FileKind::File.code()])?)
    }

    /// Remembers a device that tried to connect without being configured.
    pub fn record_pending_device(
        &self,
        device: DeviceId,
        name: &str,
        address: &str,
        unix_seconds: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO pending_devices (device_id, name, address, last_seen)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (device_id) DO UPDATE SET
                name = excluded.name, address = excluded.address, last_seen = excluded.last_seen",
            params![device.as_bytes().as_slice(), name, address, unix_seconds],
        )?;
        Ok(())
    }

    /// Forgets a device that knocked (it was accepted, or the user declined it).
    pub fn forget_pending_device(&self, device: DeviceId) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM pending_devices WHERE device_id = ?1",
            [device.as_bytes().as_slice()],
        )?;
        Ok(())
    }

    /// Devices that tried to connect without being configured, most recent first.
    pub fn pending_devices(&self) -> Result<Vec<PendingDevice>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id, name, address, last_seen FROM pending_devices
             ORDER BY last_seen DESC",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let raw: Vec<u8> = row.get(0)?;
            let Ok(device) = DeviceId::try_from(raw.as_slice()) else {
                continue;
            };
            out.push(PendingDevice {
                device,
                name: row.get(1)?,
                address: row.get(2)?,
                last_seen: row.get(3)?,
            });
        }
        Ok(out)
    }

    /// Remembers a folder `device` offered that is not shared with it here.
    pub fn record_pending_folder(&self, pending: &PendingFolder) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO pending_folders (folder_id, device_id, label, last_seen)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (folder_id, device_id) DO UPDATE SET
                label = excluded.label, last_seen = excluded.last_seen",
            params![
                pending.folder,
                pending.device.as_bytes().as_slice(),
                pending.label,
                pending.last_seen
            ],
        )?;
        Ok(())
    }

    /// Forgets offers of `folder` (by `device`, or by every device for `None`): it is now
    /// shared, or the user declined it.
    pub fn forget_pending_folder(
        &self,
        folder: &str,
        device: Option<DeviceId>,
    ) -> Result<(), StoreError> {
        match device {
            Some(device) => self.conn.execute(
                "DELETE FROM pending_folders WHERE folder_id = ?1 AND device_id = ?2",
                params![folder, device.as_bytes().as_slice()],
            )?,
            None => self
                .conn
                .execute("DELETE FROM pending_folders WHERE folder_id = ?1", [folder])?,
        };
        Ok(())
    }

    /// Folders offered by configured devices and not shared with them, most recent first.
    pub fn pending_folders(&self) -> Result<Vec<PendingFolder>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT folder_id, device_id, label, last_seen FROM pending_folders
             ORDER BY last_seen DESC, folder_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let raw: Vec<u8> = row.get(1)?;
            let Ok(device) = DeviceId::try_from(raw.as_slice()) else {
                continue;
            };
            out.push(PendingFolder {
                folder: row.get(0)?,
                device,
                label: row.get(2)?,
                last_seen: row.get(3)?,
            });
        }
        Ok(out)
    }

    /// How many local files hold a block with this hash (for tests and diagnostics).
    pub fn local_files_with_block(&self, hash: &blake3::Hash) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM local_blocks WHERE hash_prefix = ?1",
            [hash_prefix(hash)],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }
}

impl StoreReader {
    /// [`Store::for_each_name`] on this read-only connection: long walks here do not hold up
    /// the writer.
    pub fn for_each_name<E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        local: DeviceId,
        visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_name(&self.conn, folder, local, visit)
    }

    /// The recorded blocks of the local file with row id `id` (empty if there is none).
    pub fn local_blocks(&self, id: i64) -> Result<Vec<Block>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, blocks FROM files WHERE id = ?1")?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => decode_blocks(&row.get::<_, String>(0)?, &row.get::<_, Vec<u8>>(1)?),
            None => Ok(Vec::new()),
        }
    }

    /// [`Store::for_names`] on this read-only connection.
    pub fn for_names<'n, E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        names: impl IntoIterator<Item = &'n str>,
        local: DeviceId,
        visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
    ) -> Result<(), E> {
        for_names(&self.conn, folder, names, local, visit)
    }

    /// Calls `visit` for every local entry of the folder in name (byte) order, as one
    /// consistent snapshot.
    pub fn for_each_local_row(
        &self,
        folder: FolderIdx,
        mut visit: impl FnMut(LocalRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, kind, size, permissions, modified_s, modified_ns, deleted,
                    invalid, inode, symlink_target
             FROM files WHERE folder_idx = ?1 AND device_idx = ?2 ORDER BY name",
        )?;
        let mut rows = stmt.query(params![folder.0, LOCAL_DEVICE])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(1)?;
            visit(LocalRow {
                id: row.get(0)?,
                kind: kind_of(&name, row.get(2)?)?,
                size: row.get::<_, i64>(3)? as u64,
                permissions: row.get(4)?,
                modified: Timestamp {
                    seconds: row.get(5)?,
                    nanos: row.get(6)?,
                },
                deleted: row.get(7)?,
                invalid: row.get(8)?,
                inode: row.get::<_, i64>(9)? as u64,
                symlink_target: row.get(10)?,
                name,
            })?;
        }
        Ok(())
    }
}

fn for_names<'n, E: From<StoreError>>(
    conn: &Connection,
    folder: FolderIdx,
    names: impl IntoIterator<Item = &'n str>,
    local: DeviceId,
    mut visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
) -> Result<(), E> {
    for name in names {
        let mut group = Vec::new();
        for_each_row(conn, folder, Some(name), local, |device, entry| {
            group.push((device, entry));
            Ok::<(), E>(())
        })?;
        if !group.is_empty() {
            visit(group)?;
        }
    }
    Ok(())
}

fn for_each_name<E: From<StoreError>>(
    conn: &Connection,
    folder: FolderIdx,
    local: DeviceId,
    mut visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
) -> Result<(), E> {
    let mut group: Vec<(DeviceId, FileEntry)> = Vec::new();
    for_each_row(conn, folder, None, local, |device, entry| {
        if group
            .first()
            .is_some_and(|(_, first)| first.name != entry.name)
        {
            visit(std::mem::take(&mut group))?;
        }
        group.push((device, entry));
        Ok::<(), E>(())
    })?;
    if !group.is_empty() {
        visit(group)?;
    }
    Ok(())
}

/// Every device's entry of the folder in name order (of one name, when given), this
/// device's reported as `local`.
fn for_each_row<E: From<StoreError>>(
    conn: &Connection,
    folder: FolderIdx,
    name: Option<&str>,
    local: DeviceId,
    mut visit: impl FnMut(DeviceId, FileEntry) -> Result<(), E>,
) -> Result<(), E> {
    const SELECT: &str = "SELECT f.name, f.kind, f.size, f.permissions, f.modified_s,
                f.modified_ns, f.deleted, f.invalid, f.sequence, f.version, f.modified_by,
                f.symlink_target, f.blocks, d.device_id
         FROM files f LEFT JOIN devices d ON d.idx = f.device_idx";
    let (mut stmt, mut rows);
    match name {
        Some(name) => {
            stmt = conn
                .prepare_cached(&format!("{SELECT} WHERE f.folder_idx = ?1 AND f.name = ?2"))
                .map_err(StoreError::from)?;
            rows = stmt
                .query(params![folder.0, name])
                .map_err(StoreError::from)?;
        }
        None => {
            stmt = conn
                .prepare_cached(&format!("{SELECT} WHERE f.folder_idx = ?1 ORDER BY f.name"))
                .map_err(StoreError::from)?;
            rows = stmt.query([folder.0]).map_err(StoreError::from)?;
        }
    }
    while let Some(row) = rows.next().map_err(StoreError::from)? {
        let entry = entry_from_row(row)?;
        let device = match row
            .get::<_, Option<Vec<u8>>>(13)
            .map_err(StoreError::from)?
        {
            None => local,
            Some(raw) => DeviceId::try_from(raw.as_slice()).map_err(|e| StoreError::Malformed {
                name: entry.name.clone(),
                detail: format!("device: {e}"),
            })?,
        };
        visit(device, entry)?;
    }
    Ok(())
}

fn entry_from_row(row: &rusqlite::Row<'_>) -> Result<FileEntry, StoreError> {
    let name: String = row.get(0)?;
    let version: Vec<u8> = row.get(9)?;
    let blocks: Vec<u8> = row.get(12)?;
    Ok(FileEntry {
        kind: kind_of(&name, row.get(1)?)?,
        size: row.get::<_, i64>(2)? as u64,
        permissions: row.get(3)?,
        modified: Timestamp {
            seconds: row.get(4)?,
            nanos: row.get(5)?,
        },
        deleted: row.get(6)?,
        invalid: row.get(7)?,
        sequence: row.get::<_, i64>(8)? as u64,
        version: decode_version(&name, &version)?,
        modified_by: ShortId(row.get::<_, i64>(10)? as u64),
        symlink_target: row.get(11)?,
        blocks: decode_blocks(&name, &blocks)?,
        name,
    })
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

/// The first 8 bytes of a hash as a (signed, for SQLite) integer key.
fn hash_prefix(hash: &blake3::Hash) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

fn encode_blocks(blocks: &[Block]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * PACKED_BLOCK_LEN);
    for block in blocks {
        out.extend_from_slice(&block.size.to_le_bytes());
        out.extend_from_slice(block.hash.as_bytes());
    }
    out
}

fn decode_blocks(name: &str, packed: &[u8]) -> Result<Vec<Block>, StoreError> {
    if !packed.len().is_multiple_of(PACKED_BLOCK_LEN) {
        return Err(StoreError::Malformed {
            name: name.to_owned(),
            detail: format!("block list of {} bytes", packed.len()),
        });
    }
    let mut offset = 0u64;
    Ok(packed
        .chunks_exact(PACKED_BLOCK_LEN)
        .map(|chunk| {
            let (size, hash) = chunk.split_at(4);
            let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
            let mut digest = [0u8; 32];
            digest.copy_from_slice(hash);
            let block = Block {
                offset,
                size,
                hash: blake3::Hash::from_bytes(digest),
            };
            offset += u64::from(size);
            block
        })
        .collect())
}

fn decode_version(name: &str, blob: &[u8]) -> Result<VersionVector, StoreError> {
    let wire = wire::Vector::decode(blob).map_err(|e| StoreError::Malformed {
        name: name.to_owned(),
        detail: format!("version vector: {e}"),
    })?;
    Ok(VersionVector::from(&wire))
}

fn kind_of(name: &str, code: i64) -> Result<FileKind, StoreError> {
    FileKind::from_code(code).ok_or_else(|| StoreError::Malformed {
        name: name.to_owned(),
        detail: format!("unknown kind {code}"),
    })
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

/// Maps "not a database" and "malformed" to [`StoreError::Corrupt`].
fn classify(path: &Path, error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: error.to_string(),
        },
        _ => StoreError::Sqlite(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, previous: Option<i64>, blocks: Vec<Block>) -> LocalChange {
        LocalChange {
            previous,
            name: name.into(),
            kind: FileKind::File,
            size: blocks.iter().map(|b| u64::from(b.size)).sum::<u64>(),
            permissions: 0o644,
            modified: Timestamp {
                seconds: 1,
                nanos: 2,
            },
            deleted: false,
            invalid: false,
            symlink_target: String::new(),
            blocks: Some(blocks),
            inode: 7,
        }
    }

    fn block(offset: u64, data: &[u8]) -> Block {
        Block {
            offset,
            size: data.len() as u32,
            hash: blake3::hash(data),
        }
    }

    fn rows(store: &Store, folder: FolderIdx) -> Vec<LocalRow> {
        let mut out = Vec::new();
        store
            .reader()
            .unwrap()
            .for_each_local_row(folder, |r| {
                out.push(r);
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn changes_get_sequences_versions_and_block_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("index.db")).unwrap();
        let folder = store.ensure_folder("f").unwrap();
        assert_eq!(store.ensure_folder("f").unwrap(), folder);
        let me = ShortId(42);
        let (a, b) = (block(0, b"aaaa"), block(4, b"bbbb"));
        store
            .apply_local_changes(folder, me, &[change("x", None, vec![a, b])])
            .unwrap();
        assert_eq!(store.sequence(folder).unwrap(), 1);
        assert_eq!(store.local_files_with_block(&a.hash).unwrap(), 1);
        let id = rows(&store, folder)[0].id;
        // Replace block b by c: b leaves the block index, c enters it.
        let c = block(4, b"cccc");
        store
            .apply_local_changes(folder, me, &[change("x", Some(id), vec![a, c])])
            .unwrap();
        assert_eq!(store.local_files_with_block(&b.hash).unwrap(), 0);
        assert_eq!(store.local_files_with_block(&c.hash).unwrap(), 1);
        let mut entries = Vec::new();
        store
            .for_each_local_entry(folder, |e| {
                entries.push(e);
                Ok::<(), StoreError>(())
            })
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].sequence, 2);
        assert_eq!(entries[0].version.counter(me), 2);
        assert_eq!(entries[0].blocks, vec![a, c]);
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        {
            let mut store = Store::open(&path).unwrap();
            let folder = store.ensure_folder("f").unwrap();
            store
                .apply_local_changes(folder, ShortId(1), &[change("y", None, vec![])])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let folder = store.folder("f").unwrap().unwrap();
        assert_eq!(rows(&store, folder).len(), 1);
    }

    #[test]
    fn garbage_and_foreign_files_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&garbage).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("peerfold scan"));

        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let err = Store::open(&foreign).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
