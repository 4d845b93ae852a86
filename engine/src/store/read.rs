//! Every read-only query. They run on any [`StoreReader`]: a read-only connection beside the
//! writer, or the writer itself (a [`Store`](super::Store) derefs to its reader).

use std::collections::HashMap;
use std::ops::ControlFlow;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;
use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{decode_blocks, entry_from_row, hash_prefix, kind_of};
use super::{
    FolderIdx, LOCAL_DEVICE, LocalRow, PendingDevice, PendingFolder, StoreError, StoreReader,
};
use crate::model::counts::FolderSummary;
use crate::model::entry::{FileEntry, FileKind, Timestamp};

impl StoreReader {
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

    /// The folder's index ID (announced to peers; a new one makes them take our full index).
    pub fn index_id(&self, folder: FolderIdx) -> Result<u64, StoreError> {
        let id: i64 = self.conn.query_row(
            "SELECT index_id FROM folders WHERE idx = ?1",
            [folder.0],
            |r| r.get(0),
        )?;
        Ok(id as u64)
    }

    /// The time (Unix seconds) this device's version counters in the folder advance to when
    /// the clock says `now`: never before the second after the folder's index was made.
    pub fn counter_time(&self, folder: FolderIdx, now: u64) -> Result<u64, StoreError> {
        let floor: i64 = self.conn.query_row(
            "SELECT counter_floor FROM folders WHERE idx = ?1",
            [folder.0],
            |r| r.get(0),
        )?;
        Ok(now.max(floor as u64))
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

    /// The sequence of the local file `name` (a regular file, neither deleted nor invalid)
    /// and, unless it is still `known_sequence`, its block list: a server that keeps the
    /// lists of the files being pulled reads a list once per version, not once per request.
    pub fn local_block_list(
        &self,
        folder: FolderIdx,
        name: &str,
        known_sequence: Option<u64>,
    ) -> Result<Option<ListedFile>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sequence, CASE WHEN sequence = ?4 THEN NULL ELSE blocks END,
                    size, modified_s, modified_ns FROM files
             WHERE folder_idx = ?1 AND device_idx = ?2 AND name = ?3
             AND deleted = 0 AND invalid = 0 AND kind = ?5",
        )?;
        let mut rows = stmt.query(params![
            folder.0,
            LOCAL_DEVICE,
            name,
            known_sequence.map(|s| s as i64),
            FileKind::File.code()
        ])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let sequence = row.get::<_, i64>(0)? as u64;
        let blocks = match row.get_ref(1)? {
            rusqlite::types::ValueRef::Null => None,
            value => {
                let packed = value.as_blob().map_err(|e| StoreError::Malformed {
                    name: name.to_owned(),
                    detail: format!("block list: {e}"),
                })?;
                Some(decode_blocks(name, packed)?)
            }
        };
        Ok(Some(ListedFile {
            sequence,
            blocks,
            size: row.get::<_, i64>(2)? as u64,
            modified: Timestamp {
                seconds: row.get(3)?,
                nanos: row.get(4)?,
            },
        }))
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

    /// The folder's summaries for `devices` (`local` is this device) from its counters,
    /// without a walk.
    pub fn summaries(
        &self,
        folder: FolderIdx,
        devices: &[DeviceId],
        local: DeviceId,
    ) -> Result<Vec<FolderSummary>, StoreError> {
        super::tally::summaries(&self.conn, folder, devices, local)
    }

    /// Calls `visit` once per name of the folder, in name order, with every device's entry
    /// for it (this device's as `local`). Streams: memory holds one name's entries at a time.
    pub fn for_each_name<E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        local: DeviceId,
        mut visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_name_after(folder, local, None, |entries| {
            visit(entries).map(|()| ControlFlow::Continue(()))
        })
    }

    /// [`StoreReader::for_each_name`] from the first name after `after` (byte order; from
    /// the start when `None`), until `visit` breaks.
    pub fn for_each_name_after<E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        local: DeviceId,
        after: Option<&str>,
        mut visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        let mut group: Vec<(DeviceId, FileEntry)> = Vec::new();
        let rows = after.map_or(Rows::All, Rows::After);
        let mut stopped = false;
        for_each_row(&self.conn, folder, rows, local, |device, entry| {
            if group
                .first()
                .is_some_and(|(_, first)| first.name != entry.name)
                && visit(std::mem::take(&mut group))?.is_break()
            {
                stopped = true;
                return Ok(ControlFlow::Break(()));
            }
            group.push((device, entry));
            Ok::<_, E>(ControlFlow::Continue(()))
        })?;
        if !stopped && !group.is_empty() {
            // The last name: whether it asks to stop changes nothing.
            let _ = visit(group)?;
        }
        Ok(())
    }

    /// [`StoreReader::for_each_name`] for the given names only (those the folder has), in order.
    pub fn for_names<'n, E: From<StoreError>>(
        &self,
        folder: FolderIdx,
        names: impl IntoIterator<Item = &'n str>,
        local: DeviceId,
        mut visit: impl FnMut(Vec<(DeviceId, FileEntry)>) -> Result<(), E>,
    ) -> Result<(), E> {
        for name in names {
            let mut group = Vec::new();
            for_each_row(
                &self.conn,
                folder,
                Rows::Named(name),
                local,
                |device, entry| {
                    group.push((device, entry));
                    Ok::<_, E>(ControlFlow::Continue(()))
                },
            )?;
            if !group.is_empty() {
                visit(group)?;
            }
        }
        Ok(())
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

    /// The sequence number and block list of `device`'s entry (this device's with `None`)
    /// for each of `names` it holds, as a base for block lists sent or received as changes
    /// (`model::block_delta`).
    pub fn block_lists(
        &self,
        folder: FolderIdx,
        device: Option<DeviceId>,
        names: &[String],
    ) -> Result<HashMap<String, (u64, Vec<Block>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.sequence, f.blocks FROM files f
             WHERE f.folder_idx = ?1 AND f.name = ?2 AND f.device_idx = CASE
                WHEN ?3 IS NULL THEN ?4
                ELSE (SELECT idx FROM devices WHERE device_id = ?3) END",
        )?;
        let device = device.map(|d| d.as_bytes().to_vec());
        let mut out = HashMap::new();
        for name in names {
            let mut rows = stmt.query(params![folder.0, name, device, LOCAL_DEVICE])?;
            if let Some(row) = rows.next()? {
                let (sequence, packed): (i64, Vec<u8>) = (row.get(0)?, row.get(1)?);
                let blocks = decode_blocks(name, &packed)?;
                out.insert(name.clone(), (sequence as u64, blocks));
            }
        }
        Ok(out)
    }

    /// The recorded blocks of the local file with row id `id` (empty if there is none).
    pub fn local_blocks(&self, id: i64) -> Result<Vec<Block>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, blocks FROM files WHERE id = ?1")?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => {
                let (name, packed): (String, Vec<u8>) = (row.get(0)?, row.get(1)?);
                decode_blocks(&name, &packed)
            }
            None => Ok(Vec::new()),
        }
    }
}

/// Every device's entry of the folder in name order (of one name, when given), this
/// device's reported as `local`.
fn for_each_row<E: From<StoreError>>(
    conn: &Connection,
    folder: FolderIdx,
    which: Rows<'_>,
    local: DeviceId,
    mut visit: impl FnMut(DeviceId, FileEntry) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    const SELECT: &str = "SELECT f.name, f.kind, f.size, f.permissions, f.modified_s,
                f.modified_ns, f.deleted, f.invalid, f.sequence, f.version, f.modified_by,
                f.symlink_target, f.blocks, d.device_id
         FROM files f LEFT JOIN devices d ON d.idx = f.device_idx";
    let (mut stmt, mut rows);
    match which {
        Rows::Named(name) => {
            stmt = conn
                .prepare_cached(&format!("{SELECT} WHERE f.folder_idx = ?1 AND f.name = ?2"))
                .map_err(StoreError::from)?;
            rows = stmt
                .query(params![folder.0, name])
                .map_err(StoreError::from)?;
        }
        Rows::After(name) => {
            stmt = conn
                .prepare_cached(&format!(
                    "{SELECT} WHERE f.folder_idx = ?1 AND f.name > ?2 ORDER BY f.name"
                ))
                .map_err(StoreError::from)?;
            rows = stmt
                .query(params![folder.0, name])
                .map_err(StoreError::from)?;
        }
        Rows::All => {
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
        if visit(device, entry)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// Which rows of a folder `for_each_row` reads.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// Every row, in name order.
    All,
    /// The rows of one name.
    Named(&'a str),
    /// The rows of names after this one, in name order.
    After(&'a str),
}

/// A local file's version and, when asked for, its block list (`local_block_list`).
#[derive(Debug)]
pub struct ListedFile {
    /// The entry's sequence number: a new one for each version.
    pub sequence: u64,
    /// The block list, unless the caller already had this version's.
    pub blocks: Option<Vec<Block>>,
    /// The file's size when it was indexed.
    pub size: u64,
    /// The file's modification time when it was indexed.
    pub modified: Timestamp,
}
