//! The default store: every record in memory (lookups never touch the disk), written through
//! to a SQLite database by one writer thread so restarts keep what was announced.
//!
//! Handlers only mark a device dirty on a bounded channel; the writer drains the channel in
//! batches, reads each dirty device's current record from the shared map and writes it (or
//! deletes it) in one transaction. Reading the map at write time, rather than shipping
//! records, keeps the newest state on disk whatever order the marks arrive in, and folds
//! repeated announces of one device into one write.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::SystemTime;

use async_trait::async_trait;
use peerfold_protocol::DeviceId;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{Record, Store, StoreError};

/// Dirty marks waiting for the writer; announces wait (asynchronously) when it falls behind.
const QUEUE_DEPTH: usize = 4096;
/// At most this many devices are written in one transaction.
const BATCH: usize = 1024;

type Records = Arc<Mutex<HashMap<DeviceId, Record>>>;

/// Records in memory, persisted to SQLite in the background.
#[derive(Debug)]
pub struct SqliteStore {
    records: Records,
    writer: mpsc::Sender<Command>,
}

#[derive(Debug)]
enum Command {
    /// The device's record changed (or went): write what the map holds now.
    Dirty(DeviceId),
    /// Reply once everything sent before has been committed.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, then stop the writer.
    Close(oneshot::Sender<()>),
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` and loads its records. Blocking: call it
    /// from a blocking thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS devices (
                 device BLOB PRIMARY KEY NOT NULL,
                 seen INTEGER NOT NULL,
                 addresses TEXT NOT NULL
             ) WITHOUT ROWID;",
        )?;
        let records = load(&conn)?;
        tracing::info!(path = %path.display(), devices = records.len(), "opened SQLite store");
        let records = Arc::new(Mutex::new(records));
        let (writer, queue) = mpsc::channel(QUEUE_DEPTH);
        let shared = records.clone();
        let path: PathBuf = path.to_owned();
        thread::Builder::new()
            .name("discovery-sqlite".into())
            .spawn(move || write_loop(conn, shared, queue, &path))?;
        Ok(Self { records, writer })
    }

    fn records(&self) -> MutexGuard<'_, HashMap<DeviceId, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn mark(&self, device: DeviceId) -> Result<(), StoreError> {
        self.writer
            .send(Command::Dirty(device))
            .await
            .map_err(|_| StoreError::Closed)
    }

    async fn wait(
        &self,
        command: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(command(done))
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)
    }

    /// Waits until everything announced so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.wait(Command::Flush).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn announce(
        &self,
        device: DeviceId,
        addresses: &[String],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        {
            let mut records = self.records();
            let merged = Record::merge(records.remove(&device), addresses, now);
            records.insert(device, merged);
        }
        self.mark(device).await
    }

    async fn lookup(
        &self,
        device: DeviceId,
        now: SystemTime,
    ) -> Result<Option<Record>, StoreError> {
        Ok(self
            .records()
            .get(&device)
            .cloned()
            .and_then(|record| record.live(now)))
    }

    async fn sweep(&self, now: SystemTime) -> Result<u64, StoreError> {
        let mut changed = Vec::new();
        let mut dropped = 0;
        {
            let mut records = self.records();
            records.retain(|device, record| {
                if record.is_stale(now) {
                    changed.push(*device);
                    dropped += 1;
                    return false;
                }
                let before = record.addresses.len();
                *record = std::mem::take(record).live(now).unwrap_or_default();
                if record.addresses.len() != before {
                    changed.push(*device);
                }
                true
            });
        }
        for device in changed {
            self.mark(device).await?;
        }
        Ok(dropped)
    }

    async fn devices(&self) -> Result<u64, StoreError> {
        Ok(self.records().len() as u64)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.wait(Command::Close).await
    }
}

fn load(conn: &Connection) -> Result<HashMap<DeviceId, Record>, StoreError> {
    let mut statement = conn.prepare("SELECT device, seen, addresses FROM devices")?;
    let mut rows = statement.query([])?;
    let mut records = HashMap::new();
    while let Some(row) = rows.next()? {
        let raw: Vec<u8> = row.get(0)?;
        let seen: i64 = row.get(1)?;
        let addresses: String = row.get(2)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            device: format!("{raw:02x?}"),
            reason,
        };
        let device = DeviceId::try_from(raw.as_slice()).map_err(|e| corrupt(e.to_string()))?;
        let addresses = serde_json::from_str(&addresses).map_err(|e| corrupt(e.to_string()))?;
        records.insert(
            device,
            Record {
                seen: u64::try_from(seen).unwrap_or(0),
                addresses,
            },
        );
    }
    Ok(records)
}

/// The writer thread: the only code that writes to the database.
fn write_loop(
    mut conn: Connection,
    records: Records,
    mut queue: mpsc::Receiver<Command>,
    path: &Path,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut dirty = HashSet::new();
        let mut waiting = Vec::new();
        let mut close = false;
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Dirty(device) => {
                    dirty.insert(device);
                }
                Command::Flush(done) => waiting.push(done),
                Command::Close(done) => {
                    waiting.push(done);
                    close = true;
                    break;
                }
            }
            next = if dirty.len() < BATCH {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(error) = write_batch(&mut conn, &records, &dirty) {
            tracing::error!(path = %path.display(), %error, devices = dirty.len(), "writing the store failed");
        }
        for done in waiting {
            let _ = done.send(());
        }
        if close {
            queue.close();
            break;
        }
    }
    tracing::debug!(path = %path.display(), "SQLite writer stopped");
}

fn write_batch(
    conn: &mut Connection,
    records: &Records,
    dirty: &HashSet<DeviceId>,
) -> Result<(), StoreError> {
    if dirty.is_empty() {
        return Ok(());
    }
    // Snapshot under the lock, write without it: lookups never wait for the disk.
    let snapshot: Vec<(DeviceId, Option<(u64, String)>)> = {
        let records = records.lock().unwrap_or_else(PoisonError::into_inner);
        dirty
            .iter()
            .map(|device| {
                let row = records.get(device).map(|record| {
                    let addresses = serde_json::to_string(&record.addresses)
                        .expect("addresses always serialise");
                    (record.seen, addresses)
                });
                (*device, row)
            })
            .collect()
    };
    let transaction = conn.transaction()?;
    {
        let mut upsert = transaction.prepare_cached(
            "INSERT INTO devices (device, seen, addresses) VALUES (?1, ?2, ?3)
             ON CONFLICT (device) DO UPDATE SET seen = excluded.seen, addresses = excluded.addresses",
        )?;
        let mut delete = transaction.prepare_cached("DELETE FROM devices WHERE device = ?1")?;
        for (device, row) in &snapshot {
            match row {
                Some((seen, addresses)) => {
                    upsert.execute(params![
                        device.as_bytes().as_slice(),
                        i64::try_from(*seen).unwrap_or(i64::MAX),
                        addresses
                    ])?;
                }
                None => {
                    delete.execute(params![device.as_bytes().as_slice()])?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(())
}

/// How many rows the database holds (for tests of the writer).
pub fn stored_devices(path: &Path) -> Result<u64, StoreError> {
    let conn = Connection::open(path)?;
    let count: Option<i64> = conn
        .query_row("SELECT COUNT(*) FROM devices", [], |row| row.get(0))
        .optional()?;
    Ok(count.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}
