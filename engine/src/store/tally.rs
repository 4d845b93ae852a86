//! The folder counters: the global counts, and per device its local counts and how its
//! need differs from a device that announced nothing (`model::counts::name_tally`), kept
//! in `tallies` and changed in the same transaction as the entries they count, so status,
//! `/rest/db/status` and completion read a few rows instead of walking the index.
//!
//! A write that changes a name's rows calls [`Tally::before`] with the name before the
//! change and [`Tally::after`] after it; [`Tally::commit`] adds what changed to the table in
//! the same transaction. A folder indexed before the counters existed has them rebuilt
//! once by a walk when the store opens (`folders.tallied`).

use std::collections::{BTreeMap, HashMap};

use peerfold_protocol::DeviceId;
use rusqlite::{Connection, params};

use super::codec::entry_from_row;
use super::{FolderIdx, LOCAL_DEVICE, StoreError};
use crate::model::counts::{Counts, CountsDelta, FolderSummary, name_tally, summary_from_counters};
use crate::model::entry::FileEntry;

/// `scope` of the global counts' row (device 0).
const GLOBAL: i64 = 0;
/// `scope` of a device's local counts.
const LOCAL: i64 = 1;
/// `scope` of a device's need fix.
const NEED_FIX: i64 = 2;

const ROW_COLUMNS: &str = "name, kind, size, permissions, modified_s, modified_ns, deleted, \
    invalid, sequence, version, modified_by, symlink_target, blocks, device_idx";

/// Changes to one folder's counters within one transaction.
pub(super) struct Tally {
    folder: FolderIdx,
    global: CountsDelta,
    /// Per device index: (local counts, need fix).
    devices: HashMap<i64, (CountsDelta, CountsDelta)>,
}

impl Tally {
    pub(super) fn new(folder: FolderIdx) -> Self {
        Self {
            folder,
            global: CountsDelta::default(),
            devices: HashMap::new(),
        }
    }

    /// Takes `name`'s rows as they are out of the counters (before they change).
    pub(super) fn before(&mut self, conn: &Connection, name: &str) -> Result<(), StoreError> {
        let rows = name_rows(conn, self.folder, name)?;
        self.count(&rows, -1);
        Ok(())
    }

    /// Puts `name`'s rows as they are into the counters (after they changed).
    pub(super) fn after(&mut self, conn: &Connection, name: &str) -> Result<(), StoreError> {
        let rows = name_rows(conn, self.folder, name)?;
        self.count(&rows, 1);
        Ok(())
    }

    /// Counts the change of one device's row for `name` to `new` (`None`: the row goes),
    /// with one read: the rows after are the rows before with that one replaced. Called
    /// before the write.
    pub(super) fn replace(
        &mut self,
        conn: &Connection,
        name: &str,
        device_idx: i64,
        new: Option<&FileEntry>,
    ) -> Result<(), StoreError> {
        let rows = name_rows(conn, self.folder, name)?;
        self.count_replaced(rows, key_of(device_idx), new);
        Ok(())
    }

    /// [`Tally::replace`] for a peer's entry, unless the row held of that device has a
    /// higher sequence (a later entry of the same index, stored first): returns whether
    /// `new` is to be written.
    pub(super) fn replace_unless_newer_held(
        &mut self,
        conn: &Connection,
        device_idx: i64,
        new: &FileEntry,
    ) -> Result<bool, StoreError> {
        let rows = name_rows(conn, self.folder, &new.name)?;
        let key = key_of(device_idx);
        if rows
            .iter()
            .any(|(d, held)| *d == key && held.sequence > new.sequence)
        {
            return Ok(false);
        }
        self.count_replaced(rows, key, Some(new));
        Ok(true)
    }

    fn count_replaced(
        &mut self,
        mut rows: Vec<(DeviceId, FileEntry)>,
        key: DeviceId,
        new: Option<&FileEntry>,
    ) {
        self.count(&rows, -1);
        rows.retain(|(d, _)| *d != key);
        if let Some(new) = new {
            rows.push((key, new.clone()));
        }
        self.count(&rows, 1);
    }

    fn count(&mut self, rows: &[(DeviceId, FileEntry)], sign: i64) {
        if rows.is_empty() {
            return;
        }
        let tally = name_tally(rows);
        self.global.add(&tally.global, sign);
        for (key, local, fix) in tally.devices {
            let (l, f) = self.devices.entry(idx_of(key)).or_default();
            l.add(&local, sign);
            f.merge(&fix, sign);
        }
    }

    /// Adds what changed to the folder's counters.
    pub(super) fn commit(self, conn: &Connection) -> Result<(), StoreError> {
        let mut add = conn.prepare_cached(
            "INSERT INTO tallies (folder_idx, device_idx, scope, files, directories, symlinks,
                                  deleted, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (folder_idx, device_idx, scope) DO UPDATE SET
                files = files + excluded.files,
                directories = directories + excluded.directories,
                symlinks = symlinks + excluded.symlinks,
                deleted = deleted + excluded.deleted,
                bytes = bytes + excluded.bytes",
        )?;
        let mut write = |device: i64, scope: i64, d: &CountsDelta| {
            if d.is_zero() {
                return Ok::<(), StoreError>(());
            }
            add.execute(params![
                self.folder.0,
                device,
                scope,
                d.files,
                d.directories,
                d.symlinks,
                d.deleted,
                d.bytes
            ])?;
            Ok(())
        };
        write(LOCAL_DEVICE, GLOBAL, &self.global)?;
        for (device, (local, fix)) in &self.devices {
            write(*device, LOCAL, local)?;
            write(*device, NEED_FIX, fix)?;
        }
        Ok(())
    }
}

/// A stand-in device ID for a device's row index: the counters need to tell devices
/// apart, not to name them, and this spares a lookup per row.
fn key_of(idx: i64) -> DeviceId {
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&idx.to_le_bytes());
    DeviceId::from_bytes(bytes)
}

fn idx_of(key: DeviceId) -> i64 {
    let mut first = [0; 8];
    first.copy_from_slice(&key.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

/// Every device's row for `name`, keyed by [`key_of`].
fn name_rows(
    conn: &Connection,
    folder: FolderIdx,
    name: &str,
) -> Result<Vec<(DeviceId, FileEntry)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM files WHERE folder_idx = ?1 AND name = ?2"
    ))?;
    let mut rows = stmt.query(params![folder.0, name])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push((key_of(row.get(13)?), entry_from_row(row)?));
    }
    Ok(out)
}

/// Recounts the folder's counters from its rows (one walk), in `conn`'s transaction.
pub(super) fn rebuild(conn: &Connection, folder: FolderIdx) -> Result<(), StoreError> {
    conn.execute("DELETE FROM tallies WHERE folder_idx = ?1", [folder.0])?;
    let mut tally = Tally::new(folder);
    let mut stmt = conn.prepare(&format!(
        "SELECT {ROW_COLUMNS} FROM files WHERE folder_idx = ?1 ORDER BY name"
    ))?;
    let mut rows = stmt.query([folder.0])?;
    let mut group: Vec<(DeviceId, FileEntry)> = Vec::new();
    while let Some(row) = rows.next()? {
        let entry = entry_from_row(row)?;
        if group.first().is_some_and(|(_, e)| e.name != entry.name) {
            tally.count(&group, 1);
            group.clear();
        }
        group.push((key_of(row.get(13)?), entry));
    }
    tally.count(&group, 1);
    drop(rows);
    drop(stmt);
    tally.commit(conn)?;
    conn.execute("UPDATE folders SET tallied = 1 WHERE idx = ?1", [folder.0])?;
    Ok(())
}

/// Folders whose counters were never built (indexed before they existed).
pub(super) fn untallied(conn: &Connection) -> Result<Vec<FolderIdx>, StoreError> {
    let mut stmt = conn.prepare("SELECT idx FROM folders WHERE tallied = 0")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows
        .collect::<Result<Vec<i64>, _>>()?
        .into_iter()
        .map(FolderIdx)
        .collect())
}

/// The summaries of `devices` (`local` is this device) from the folder's counters.
pub(super) fn summaries(
    conn: &Connection,
    folder: FolderIdx,
    devices: &[DeviceId],
    local: DeviceId,
) -> Result<Vec<FolderSummary>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_idx, scope, files, directories, symlinks, deleted, bytes
         FROM tallies WHERE folder_idx = ?1",
    )?;
    let mut rows = stmt.query([folder.0])?;
    let mut held: BTreeMap<(i64, i64), CountsDelta> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        held.insert(
            (row.get(0)?, row.get(1)?),
            CountsDelta {
                files: row.get(2)?,
                directories: row.get(3)?,
                symlinks: row.get(4)?,
                deleted: row.get(5)?,
                bytes: row.get(6)?,
            },
        );
    }
    let get = |device: i64, scope: i64| held.get(&(device, scope)).copied().unwrap_or_default();
    let global = counts(get(LOCAL_DEVICE, GLOBAL));
    let mut lookup = conn.prepare_cached("SELECT idx FROM devices WHERE device_id = ?1")?;
    let mut out = Vec::with_capacity(devices.len());
    for device in devices {
        let idx: Option<i64> = if *device == local {
            Some(LOCAL_DEVICE)
        } else {
            match lookup.query_row([device.as_bytes().as_slice()], |r| r.get(0)) {
                Ok(idx) => Some(idx),
                Err(rusqlite::Error::QueryReturnedNoRows) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let (l, fix) = match idx {
            Some(idx) => (counts(get(idx, LOCAL)), get(idx, NEED_FIX)),
            None => (Counts::default(), CountsDelta::default()),
        };
        out.push(summary_from_counters(global, l, fix));
    }
    Ok(out)
}

/// Counts from summed deltas. A negative sum would be a bug in the counting: shown as 0,
/// and logged (`POST /rest/system/reset?folder=` rebuilds the index and its counters).
fn counts(d: CountsDelta) -> Counts {
    if [d.files, d.directories, d.symlinks, d.deleted, d.bytes]
        .iter()
        .any(|v| *v < 0)
    {
        tracing::warn!(?d, "a folder counter fell below zero");
    }
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Counts {
        files: n(d.files),
        directories: n(d.directories),
        symlinks: n(d.symlinks),
        deleted: n(d.deleted),
        bytes: n(d.bytes),
    }
}
