//! [`StoreHandle`]: the one way a running engine uses the store.
//!
//! Every SQLite call blocks, so none may run on an async runtime thread, and the writer may
//! never be held across long work: a scan that held it for its whole walk stalled block
//! serving, index senders, the puller and the REST API for seconds (ENGINE.md). So:
//! - the writer connection sits behind a `std::sync::Mutex` that is taken only on a blocking
//!   thread (`spawn_blocking`, or a thread that is blocking already, like the scanner's) and
//!   only for one short operation, one transaction, then released;
//! - reads go to a small pool of read-only connections, which WAL lets read a consistent
//!   snapshot beside the writer; they never take the writer's lock.
//!
//! Who calls it: every task that reads or writes the index. It wakes no one.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::Semaphore;

use super::{Store, StoreError, StoreReader};

/// Read-only connections `read` uses at once; more callers wait for one. Each connection
/// has its own page cache and opening one parses the schema: under load (a peer pulling
/// with hundreds of block requests in flight, each looked up in the index) an unbounded
/// pool opened and dropped connections by the hundred, on as many blocking threads.
const READERS: usize = 6;
/// Read-only connections of the pool, at most: `read` uses up to [`READERS`] of them,
/// blocking callers (a download looking for local copies of its blocks, the scanner) the
/// rest, and wait for one when all are in use. Before, a connection was opened (and its
/// schema parsed) for every call past the few idle ones.
const POOLED_READERS: usize = 2 * READERS;

/// A clone-able handle to the index: the writer, and read-only connections beside it.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The database file, to open read-only connections without the writer.
    path: PathBuf,
    /// The only writing connection.
    writer: Mutex<Store>,
    /// The read-only connections.
    pool: Mutex<ReaderPool>,
    /// Signalled when a connection comes back to the pool.
    returned: Condvar,
    /// Turns to use a read-only connection through `read`.
    read_turns: Semaphore,
    /// The turn to use the writer through `write`: callers wait for it here, on the
    /// runtime, instead of each on a blocking thread of its own (32 downloads recording at
    /// once kept 32 threads parked on the writer's lock).
    write_turn: Semaphore,
}

/// The pool's read-only connections: those not in use, and how many exist.
#[derive(Debug, Default)]
struct ReaderPool {
    idle: Vec<StoreReader>,
    open: usize,
}

impl StoreHandle {
    /// Wraps an opened (and migrated) store; its connection becomes the handle's writer.
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: store.path.clone(),
                writer: Mutex::new(store),
                pool: Mutex::new(ReaderPool::default()),
                returned: Condvar::new(),
                read_turns: Semaphore::new(READERS),
                write_turn: Semaphore::new(1),
            }),
        }
    }

    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(Store::open(path)?))
    }

    /// Runs `f` with the writer on a blocking thread, so the runtime's threads never wait
    /// for the writer; `f` should be one short operation (one transaction). Needs a tokio
    /// runtime; a panic in `f` comes back as [`StoreError::Panicked`].
    pub async fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        // The semaphore is never closed.
        let _turn = self.inner.write_turn.acquire().await;
        let handle = self.clone();
        unblock(move || handle.write_blocking(f)).await
    }

    /// Runs `f` with a pooled read-only connection on a blocking thread: it neither waits
    /// for the writer nor holds it up. At most six run at once; the others wait
    /// (asynchronously) for their turn. Needs a tokio runtime.
    pub async fn read<T, E>(
        &self,
        f: impl FnOnce(&StoreReader) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        // The semaphore is never closed.
        let _turn = self.inner.read_turns.acquire().await;
        let handle = self.clone();
        unblock(move || handle.read_blocking(f)).await
    }

    /// [`StoreHandle::write`] for code that already runs on a blocking thread (the scanner,
    /// block reuse): it waits for the writer. Never call it on a runtime thread.
    pub fn write_blocking<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, E>,
    ) -> Result<T, E> {
        f(&mut self.lock_writer_blocking())
    }

    /// [`StoreHandle::read`] for code that already runs on a blocking thread: SQLite reads
    /// block. Never call it on a runtime thread.
    pub fn read_blocking<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&StoreReader) -> Result<T, E>,
    ) -> Result<T, E> {
        let lease = Lease {
            pool: &self.inner,
            reader: Some(self.take_reader()?),
        };
        f(lease
            .reader
            .as_ref()
            .expect("a lease holds its reader until dropped"))
    }

    /// An idle pooled connection, a new one while the pool has room, or the next one
    /// returned.
    fn take_reader(&self) -> Result<StoreReader, StoreError> {
        let mut pool = lock(&self.inner.pool);
        loop {
            if let Some(reader) = pool.idle.pop() {
                return Ok(reader);
            }
            if pool.open < POOLED_READERS {
                pool.open += 1;
                drop(pool);
                return StoreReader::open(&self.inner.path).inspect_err(|_| {
                    lock(&self.inner.pool).open -= 1;
                });
            }
            pool = self
                .inner
                .returned
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A dedicated read-only connection for a long walk (a scan's merge, a whole-folder
    /// plan), so it keeps no pooled connection busy; opening it never takes the writer.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.inner.path)
    }

    /// Transitional, for the daemon's call sites that still lock the writer directly until
    /// they move to [`StoreHandle::write`] and [`StoreHandle::read`]: the writer, held until
    /// the guard drops. Hold it only briefly and never across an `.await`.
    pub fn lock_writer_blocking(&self) -> MutexGuard<'_, Store> {
        lock(&self.inner.writer)
    }
}

/// A pooled connection in use; it goes back to the pool when dropped, even if the caller
/// panicked. A reader holds no transaction between calls (its statements are reset once
/// the caller is done), so the next caller sees every commit made since.
struct Lease<'a> {
    pool: &'a Inner,
    reader: Option<StoreReader>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            lock(&self.pool.pool).idle.push(reader);
            self.pool.returned.notify_one();
        }
    }
}

/// Takes one of the handle's locks. A panic while the writer was held leaves SQLite
/// consistent (its open transaction rolls back when the `Transaction` drops, and committed
/// ones are whole), and a panic while the pool was held left it valid, so a
/// poisoned lock is still usable: take it anyway rather than spread the panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `work` on tokio's blocking threads; a panic or a cancelled task becomes a
/// [`StoreError`].
async fn unblock<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) => Err(E::from(match error.try_into_panic() {
            Ok(payload) => StoreError::Panicked {
                message: panic_message(payload.as_ref()),
            },
            Err(_) => StoreError::Cancelled,
        })),
    }
}

/// The text a panic was raised with, if it was raised with text.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use peerfold_protocol::ShortId;

    use super::*;
    use crate::model::entry::{FileKind, Timestamp};
    use crate::store::LocalChange;

    const WAIT: Duration = Duration::from_secs(10);

    fn handle() -> (tempfile::TempDir, StoreHandle) {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::open(&dir.path().join("index.db")).unwrap();
        (dir, handle)
    }

    fn new_dir(name: String) -> LocalChange {
        LocalChange {
            previous: None,
            name,
            kind: FileKind::Directory,
            size: 0,
            permissions: 0o755,
            modified: Timestamp {
                seconds: 1,
                nanos: 0,
            },
            deleted: false,
            invalid: false,
            symlink_target: String::new(),
            blocks: Some(Vec::new()),
            inode: 1,
        }
    }

    fn local_names(reader: &StoreReader, folder_id: &str) -> Result<Vec<String>, StoreError> {
        let Some(folder) = reader.folder(folder_id)? else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        reader.for_each_local_entry(folder, |e| {
            names.push(e.name);
            Ok::<(), StoreError>(())
        })?;
        Ok(names)
    }

    #[tokio::test]
    async fn a_read_completes_while_another_thread_holds_the_writer() {
        let (_dir, handle) = handle();
        handle
            .write_blocking(|s| s.ensure_folder("committed"))
            .unwrap();
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let writer = {
            let handle = handle.clone();
            std::thread::spawn(move || {
                handle.write_blocking(|s| {
                    // A long write: a transaction left open until the test releases it.
                    let tx = s.reads.conn.transaction()?;
                    tx.execute(
                        "INSERT INTO folders (id, index_id) VALUES ('uncommitted', 1)",
                        [],
                    )?;
                    held_tx.send(()).unwrap();
                    let _ = release_rx.recv_timeout(WAIT);
                    tx.commit()?;
                    Ok::<(), StoreError>(())
                })
            })
        };
        held_rx.recv_timeout(WAIT).unwrap();
        let read = tokio::time::timeout(
            WAIT,
            handle
                .read(|r| Ok::<_, StoreError>((r.folder("committed")?, r.folder("uncommitted")?))),
        )
        .await;
        release_tx.send(()).unwrap();
        writer.join().unwrap().unwrap();
        let (committed, uncommitted) = read.expect("the read waited for the writer").unwrap();
        assert!(committed.is_some());
        assert!(uncommitted.is_none(), "a reader sees committed data only");
    }

    #[test]
    fn writes_from_several_threads_are_all_kept() {
        const THREADS: usize = 4;
        const EACH: usize = 25;
        let (_dir, handle) = handle();
        let folder = handle.write_blocking(|s| s.ensure_folder("f")).unwrap();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let change = new_dir(format!("t{t}/d{i:02}"));
                        handle
                            .write_blocking(|s| {
                                s.apply_local_changes(folder, ShortId(1), &[change])
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let names = handle.read_blocking(|r| local_names(r, "f")).unwrap();
        assert_eq!(names.len(), THREADS * EACH);
        let sequence = handle.read_blocking(|r| r.sequence(folder)).unwrap();
        assert_eq!(sequence, (THREADS * EACH) as u64);
    }

    #[test]
    fn a_reader_sees_a_write_once_it_committed() {
        let (_dir, handle) = handle();
        let dedicated = handle.reader().unwrap();
        // Puts a connection in the pool, so the next read reuses it.
        assert_eq!(handle.read_blocking(|r| r.folder("f")).unwrap(), None);
        assert_eq!(dedicated.folder("f").unwrap(), None);
        let folder = handle.write_blocking(|s| s.ensure_folder("f")).unwrap();
        assert_eq!(
            handle.read_blocking(|r| r.folder("f")).unwrap(),
            Some(folder)
        );
        assert_eq!(dedicated.folder("f").unwrap(), Some(folder));
    }

    #[tokio::test]
    async fn a_panicking_write_is_an_error_and_leaves_the_writer_usable() {
        let (_dir, handle) = handle();
        let result = handle
            .write(|s| -> Result<(), StoreError> {
                let tx = s.reads.conn.transaction()?;
                tx.execute("INSERT INTO folders (id, index_id) VALUES ('lost', 1)", [])?;
                panic!("boom in a store write");
            })
            .await;
        match result {
            Err(StoreError::Panicked { message }) => assert!(message.contains("boom"), "{message}"),
            other => panic!("expected a panic error, got {other:?}"),
        }
        let folder = handle.write(|s| s.ensure_folder("kept")).await.unwrap();
        let (lost, kept) = handle
            .read(|r| Ok::<_, StoreError>((r.folder("lost")?, r.folder("kept")?)))
            .await
            .unwrap();
        assert_eq!(lost, None, "the panicked transaction rolled back");
        assert_eq!(kept, Some(folder));
    }

    #[test]
    fn many_blocking_readers_share_a_bounded_pool_and_a_panic_returns_its_connection() {
        let (_dir, handle) = handle();
        handle.write_blocking(|s| s.ensure_folder("f")).unwrap();
        let threads: Vec<_> = (0..3 * POOLED_READERS)
            .map(|_| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    handle.read_blocking(|r| {
                        std::thread::sleep(Duration::from_millis(20));
                        r.folder("f")
                    })
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap().unwrap().is_some());
        }
        let opened = lock(&handle.inner.pool).open;
        assert!(
            (1..=POOLED_READERS).contains(&opened),
            "{opened} connections opened"
        );
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle.read_blocking(|_| -> Result<(), StoreError> { panic!("in a read") })
        }));
        assert!(panicked.is_err());
        let pool = lock(&handle.inner.pool);
        assert_eq!(
            pool.idle.len(),
            pool.open,
            "every connection is back in the pool"
        );
    }
}
