//! The index database (SQLite, WAL). This module and its children are the only place with SQL.
//!
//! The database caches the disk plus what peers said: losing it costs a rescan, never data.
//! One [`Store`] connection writes; every read query lives on [`StoreReader`] (a `Store`
//! derefs to one, so the writer reads with the same code), and read-only `StoreReader`
//! connections run beside the writer on a consistent snapshot, which WAL allows.
//! A running engine reaches the store only through a [`StoreHandle`], which keeps the writer
//! off the async runtime's threads and hands out readers without taking the writer.
//!
//! - `schema`: the migrations.
//! - `codec`: rows to and from entries, block lists and version vectors.
//! - `read`: every read-only query (`impl StoreReader`).
//! - `write`: transactions and writes (`impl Store`).
//! - `clock`: a folder's sequence number and this device's version counters, as writes use them.
//! - `receive`: peers' index batches, checked against this device's own counters.
//! - `tally`: the folder counters (global, local and need counts), kept with the entries.
//! - `handle`: [`StoreHandle`].
//! - `group_commit`: `PulledRecords`, pulled versions recorded many to a transaction.

mod clock;
mod codec;
mod group_commit;
mod handle;
mod read;
mod receive;
mod schema;
mod tally;
mod write;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;
use peerfold_protocol::version::CounterExhausted;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::model::entry::{FileKind, Timestamp};
use crate::model::own_counters::UnissuedCounter;

pub(crate) use group_commit::PulledRecords;
pub use handle::StoreHandle;
pub use read::ListedFile;

/// The rows of this device have device index 0.
const LOCAL_DEVICE: i64 = 0;

/// How long a connection waits for a lock SQLite holds (a checkpoint, the other writer of
/// a second process) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// A store operation on a blocking thread panicked; its open transaction rolled back.
    #[error("a store operation panicked ({message}); its changes were rolled back")]
    Panicked {
        /// The panic's message, when it had one.
        message: String,
    },
    /// The directory a pulled file was renamed into (or removed from) could not be synced,
    /// so its record was not written.
    #[error("cannot sync the directory {dir} before recording what was pulled into it: {source}")]
    DirectorySync {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A store operation on a blocking thread was dropped unrun (the runtime shut down).
    #[error("a store operation was cancelled because the runtime is shutting down")]
    Cancelled,
    /// Any other SQLite failure.
    #[error("index database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A folder's row number in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderIdx(i64);

#[cfg(test)]
impl FolderIdx {
    /// A row number for tests that need no database.
    pub(crate) fn for_tests(idx: i64) -> Self {
        Self(idx)
    }
}

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

/// A local change that was not recorded because its version cannot advance: this device's
/// counter for the name is at the end of its range (a peer put it there before such
/// counters were refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckChange {
    /// The name.
    pub name: String,
    /// The counter that cannot advance.
    pub source: CounterExhausted,
}

/// What [`Store::receive_remote_index`] did with a peer's batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedBatch {
    /// Entries not stored, by name: they claim a counter this device never issued.
    pub refused: Vec<(String, UnissuedCounter)>,
    /// Local entries given a new version, because the batch showed this device had issued
    /// higher counters for them before its index was rebuilt.
    pub outdated: Vec<String>,
    /// Local entries that needed a new version and cannot get one (see [`StuckChange`]).
    pub stuck: Vec<StuckChange>,
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

/// The writing connection. Reads go through its [`StoreReader`] (`Deref`); writes take
/// `&mut self`, so a shared `&Store` can only read.
#[derive(Debug)]
pub struct Store {
    /// The writer's own connection, seen as a reader for the read queries.
    reads: StoreReader,
    path: PathBuf,
}

/// A connection for reading: read-only beside the writer, or the writer's own (through
/// `Store`'s `Deref`). Every read query is written once, here.
#[derive(Debug)]
pub struct StoreReader {
    conn: Connection,
}

impl Deref for Store {
    type Target = StoreReader;

    fn deref(&self) -> &StoreReader {
        &self.reads
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let corrupt = |e: rusqlite::Error| classify(path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        stable_plans(&conn).map_err(corrupt)?;
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
        check_pages(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(corrupt)?;
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(corrupt)?;
        let mut store = Self {
            reads: StoreReader { conn },
            path: path.to_owned(),
        };
        store
            .migrate(version)
            .and_then(|()| store.build_missing_tallies())
            .map_err(|e| match e {
                StoreError::Sqlite(e) => classify(path, e),
                other => other,
            })?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.reads.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "application_id", schema::APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Counts the folders indexed before the counters existed (once: one walk each).
    fn build_missing_tallies(&mut self) -> Result<(), StoreError> {
        for folder in tally::untallied(&self.reads.conn)? {
            let tx = self.reads.conn.transaction()?;
            tally::rebuild(&tx, folder)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// A second, read-only connection to the same database.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.path)
    }
}

impl StoreReader {
    /// A read-only connection to the (already opened and migrated) database at `path`.
    fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        stable_plans(&conn)?;
        conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
        Ok(Self { conn })
    }
}

/// The writer's page cache (negative: KiB, SQLite's convention). Pages it does not hold
/// come from the kernel's page cache, one `pread` each: with 8 MiB (and SQLite's default
/// 2 MB for each of up to twelve readers) each daemon held 7-10 MB more in (b) and (c) of
/// bench/sync.py, and neither the time nor the CPU moved when they were cut
/// (bench/RESULTS.md, "Windows and caches sized").
const WRITER_CACHE_KIB: i64 = -2048;
/// Each read-only connection's page cache: readers look up a few rows at a time, and a WAL
/// reader's cache starts over after every commit anyway. 512 KiB each kept a receiver 2 MB
/// larger after pulling 20,000 files, at the same speed (bench/RESULTS.md).
const READER_CACHE_KIB: i64 = -128;

/// Keeps each cached statement's query plan whatever values are bound to it (SQLite's
/// query planner stability guarantee). The bundled SQLite is built with STAT4, which
/// otherwise re-plans a statement when a bound value might change its plan: in a profile
/// of 20,000 files pulled, re-preparing cached statements on every call took 6% of the
/// receiver's CPU.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// The most of SQLite's report on a damaged database that goes into the error, which is
/// one line: the first problem is enough to know the file must be rebuilt.
const CORRUPT_DETAIL_CHARS: usize = 200;

/// Refuses a database whose pages are damaged (`PRAGMA quick_check`: every b-tree page,
/// cell and free-list page is read and checked, indexes are not compared with their tables).
/// The header alone says nothing of the pages past it: garbage there let a daemon start and
/// fail on every query later. It reads the whole file: about 90 ms for the 44 MB index of
/// 200,000 files in the page cache, 0.6-0.85 s from disk (ARCHITECTURE.md, "Index layout").
fn check_pages(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // One problem is enough: stop at the first rather than list them all.
    let first: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(|e| classify(path, e))?;
    if first == "ok" {
        return Ok(());
    }
    let detail: String = first
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(CORRUPT_DETAIL_CHARS)
        .collect();
    Err(StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    })
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
mod counter_tests;
#[cfg(test)]
mod tally_tests;
#[cfg(test)]
mod tests;
