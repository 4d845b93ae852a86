//! The default store: every record in memory (lookups never touch the disk), written through
//! to a SQLite database by one writer thread so restarts keep what was announced.
//!
//! Handlers only mark a device dirty on a bounded channel; the writer drains the channel in
//! batches, reads each dirty device's current record from the shared map and writes it (or
//! deletes it) in one transaction. Reading the map at write time, rather than shipping
//! records, keeps the newest state on disk whatever order the marks arrive in, and folds
//! repeated announces of one device into one write.
//!
//! The map holds each record `Packed` into one allocation: a million devices with two
//! addresses each take about 200 MB this way, against about 370 MB as [`Record`]s (a `Vec`
//! with spare capacity plus a `String` per address, each with the allocator's overhead).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::SystemTime;

use async_trait::async_trait;
use peerfold_protocol::DeviceId;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{Address, RECORD_LIFETIME, Record, Store, StoreError, unix_ms};

/// Dirty marks waiting for the writer; announces wait (asynchronously) when it falls behind.
const QUEUE_DEPTH: usize = 4096;
/// At most this many devices are written in one transaction.
const BATCH: usize = 1024;

type Records = Arc<Mutex<HashMap<DeviceId, Packed>>>;

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

    fn records(&self) -> MutexGuard<'_, HashMap<DeviceId, Packed>> {
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
            let existing = records.remove(&device).map(|packed| packed.unpack());
            let merged = Record::merge(existing, addresses, now);
            records.insert(device, Packed::pack(&merged));
        }
        self.mark(device).await
    }

    async fn lookup(
        &self,
        device: DeviceId,
        now: SystemTime,
    ) -> Result<Option<Record>, StoreError> {
        let record = self.records().get(&device).map(Packed::unpack);
        Ok(record.and_then(|record| record.live(now)))
    }

    async fn sweep(&self, now: SystemTime) -> Result<u64, StoreError> {
        let mut changed = Vec::new();
        let mut dropped = 0;
        let now_ms = unix_ms(now);
        {
            let mut records = self.records();
            records.retain(|device, packed| {
                if !packed.has_expired(now_ms) {
                    return true;
                }
                match packed.unpack().live(now) {
                    None => {
                        changed.push(*device);
                        dropped += 1;
                        false
                    }
                    Some(live) => {
                        *packed = Packed::pack(&live);
                        changed.push(*device);
                        true
                    }
                }
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

fn load(conn: &Connection) -> Result<HashMap<DeviceId, Packed>, StoreError> {
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
        let record = Record {
            seen: u64::try_from(seen).unwrap_or(0),
            addresses,
        };
        records.insert(device, Packed::pack(&record));
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
                let row = records.get(device).map(|packed| {
                    let record = packed.unpack();
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

/// A [`Record`] in one allocation: `seen` (u64 LE), then per address its expiry (u64 LE), its
/// length (u32 LE) and its bytes.
#[derive(Debug)]
struct Packed(Box<[u8]>);

impl Packed {
    fn pack(record: &Record) -> Self {
        let size = 8 + record
            .addresses
            .iter()
            .map(|address| 12 + address.address.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&record.seen.to_le_bytes());
        for address in &record.addresses {
            // Addresses come from a body of at most a few KiB.
            let len = u32::try_from(address.address.len()).expect("an address under 4 GiB");
            out.extend_from_slice(&address.expires.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(address.address.as_bytes());
        }
        Self(out.into_boxed_slice())
    }

    fn unpack(&self) -> Record {
        let mut addresses = Vec::new();
        let mut rest = &self.0[8..];
        while !rest.is_empty() {
            let (expires, len, tail) = Self::address_head(rest);
            let (text, tail) = tail.split_at(len);
            addresses.push(Address {
                // Packed from a `String`.
                address: String::from_utf8_lossy(text).into_owned(),
                expires,
            });
            rest = tail;
        }
        Record {
            seen: u64_at(&self.0[..8]),
            addresses,
        }
    }

    /// Whether the sweep has something to do: the record is stale, or an address expired.
    fn has_expired(&self, now_ms: u64) -> bool {
        let record_lifetime = u64::try_from(RECORD_LIFETIME.as_millis()).unwrap_or(u64::MAX);
        if u64_at(&self.0[..8]).saturating_add(record_lifetime) <= now_ms {
            return true;
        }
        let mut rest = &self.0[8..];
        while !rest.is_empty() {
            let (expires, len, tail) = Self::address_head(rest);
            if expires <= now_ms {
                return true;
            }
            rest = &tail[len..];
        }
        false
    }

    /// An address's expiry and length, and what follows them.
    fn address_head(bytes: &[u8]) -> (u64, usize, &[u8]) {
        let expires = u64_at(&bytes[..8]);
        let len = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
        (expires, len as usize, &bytes[12..])
    }
}

fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("eight bytes"))
}

/// How many rows the database holds (for tests of the writer).
pub fn stored_devices(path: &Path) -> Result<u64, StoreError> {
    let conn = Connection::open(path)?;
    let count: Option<i64> = conn
        .query_row("SELECT COUNT(*) FROM devices", [], |row| row.get(0))
        .optional()?;
    Ok(count.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn records_pack_and_unpack_unchanged() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let record = Record::merge(
            None,
            &[
                "quic://192.0.2.1:22000".to_owned(),
                "relay://192.0.2.9:22067/?id=ABC".to_owned(),
                "tcp://[2001:db8::1]:22000".to_owned(),
            ],
            t0,
        );
        let packed = Packed::pack(&record);
        assert_eq!(packed.unpack(), record);
        let empty = Record {
            seen: 7,
            addresses: Vec::new(),
        };
        assert_eq!(Packed::pack(&empty).unpack(), empty);

        // Nothing to sweep until the first address expires, then until the record is stale.
        let expires = record.addresses[0].expires;
        assert!(!packed.has_expired(expires - 1));
        assert!(packed.has_expired(expires));
        assert!(!Packed::pack(&empty).has_expired(7));
        assert!(Packed::pack(&empty).has_expired(unix_ms(UNIX_EPOCH + RECORD_LIFETIME) + 7));
    }
}
