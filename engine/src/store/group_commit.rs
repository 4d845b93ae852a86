//! [`PulledRecords`]: one folder's pulled versions, recorded many to a transaction.
//!
//! Every pulled file ends with its record; in one transaction each, the commits (and the
//! pages each wrote to the WAL) were 14% of a receiver's CPU pulling 20,000 small files
//! (bench/RESULTS.md). Downloads that end while a record waits for the writer now join it:
//! each caller queues its record and waits for the writer, and the first to get it commits
//! everything queued by then in one transaction; the others find theirs done and stop
//! waiting.
//!
//! A record is written only once the directory its file was renamed into (or removed from)
//! is synced: an index that claims what a crash could still undo would, after the crash,
//! take the old file for a local change. The batch syncs each of its directories once
//! before its transaction (as Syncthing does), not each file its own.
//!
//! Who calls it: the puller, once per file it installed (under the folder's `busy` lock,
//! which is held until the record is written). It wakes no one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use peerfold_protocol::ShortId;
use peerfold_protocol::version::VersionVector;
use tokio::sync::oneshot;

use super::{FolderIdx, LocalChange, StoreError, StoreHandle};

/// One pulled version waiting for its transaction, and who waits for its sequence number.
struct Pending {
    id: u64,
    change: LocalChange,
    version: VersionVector,
    modified_by: ShortId,
    /// The directory to sync before the record is written.
    sync_first: Option<PathBuf>,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// The queue, and the id the next record gets.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    next_id: u64,
}

/// Makes a directory's entries durable (`fsutil::sync_dir` in the daemon).
pub(crate) type SyncDir = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// Records the versions one folder pulled, sharing transactions between those that end
/// together. Clones share the queue.
#[derive(Clone)]
pub(crate) struct PulledRecords {
    store: StoreHandle,
    folder: FolderIdx,
    sync_dir: SyncDir,
    queue: Arc<Mutex<Queue>>,
}

impl PulledRecords {
    /// A queue for `folder`'s pulled versions; `sync_dir` makes a directory durable.
    pub(crate) fn new(store: StoreHandle, folder: FolderIdx, sync_dir: SyncDir) -> Self {
        Self {
            store,
            folder,
            sync_dir,
            queue: Arc::default(),
        }
    }

    /// Records `change` as pulled (the peer's `version`, made by `modified_by`) once the
    /// directory `sync_first` is synced, and returns its sequence number once its
    /// transaction committed. Names queued at once must differ (the puller pulls a name
    /// once at a time).
    pub(crate) async fn record(
        &self,
        change: LocalChange,
        version: VersionVector,
        modified_by: ShortId,
        sync_first: Option<PathBuf>,
    ) -> Result<u64, StoreError> {
        let (done, mut result) = oneshot::channel();
        let id = {
            let mut queue = self.lock_queue();
            let id = queue.next_id;
            queue.next_id += 1;
            queue.pending.push(Pending {
                id,
                change,
                version,
                modified_by,
                sync_first,
                done,
            });
            id
        };
        // A caller that goes away before its record was taken takes it back out, so it is
        // never written later behind the caller's back.
        let _unqueue = Unqueue { records: self, id };
        // Every caller waits for the writer, and the first to get it takes the whole queue;
        // those whose record it took stop waiting.
        let this = self.clone();
        tokio::select! {
            biased;
            outcome = &mut result => return outcome.unwrap_or(Err(StoreError::Cancelled)),
            written = self.store.write(move |s| this.commit_queued(s)) => written?,
        }
        // That transaction, or an earlier one, took this record.
        result.await.unwrap_or(Err(StoreError::Cancelled))
    }

    /// On the writer: takes everything queued so far, syncs the directories it touched
    /// (each once) and records what they hold in one transaction. If that fails, each is
    /// recorded alone, so each caller gets its own outcome; a record whose directory could
    /// not be synced is not written.
    fn commit_queued(&self, store: &mut super::Store) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut self.lock_queue().pending);
        let unsynced = self.sync_directories(&batch);
        let mut ready = Vec::with_capacity(batch.len());
        for pending in batch {
            let failed = pending
                .sync_first
                .as_ref()
                .and_then(|dir| Some((dir, unsynced.get(dir)?)));
            let Some((dir, source)) = failed else {
                ready.push(pending);
                continue;
            };
            let error = StoreError::DirectorySync {
                dir: dir.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            };
            let _ = pending.done.send(Err(error));
        }
        let items: Vec<_> = ready
            .iter()
            .map(|p| (&p.change, &p.version, p.modified_by))
            .collect();
        let outcomes: Vec<Result<u64, StoreError>> =
            match store.record_pulled_many(self.folder, &items) {
                Ok(sequences) => sequences.into_iter().map(Ok).collect(),
                Err(_) if items.len() > 1 => items
                    .iter()
                    .map(|&(c, v, by)| store.record_pulled(self.folder, c, v, by))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
        for (pending, outcome) in ready.into_iter().zip(outcomes) {
            // A caller that went away no longer wants its answer.
            let _ = pending.done.send(outcome);
        }
        Ok(())
    }

    /// Syncs each directory of `batch` once; returns those that failed, with why.
    fn sync_directories(&self, batch: &[Pending]) -> HashMap<PathBuf, std::io::Error> {
        let mut done: HashMap<&Path, Option<std::io::Error>> = HashMap::new();
        for dir in batch.iter().filter_map(|p| p.sync_first.as_deref()) {
            done.entry(dir)
                .or_insert_with(|| (self.sync_dir)(dir).err());
        }
        done.into_iter()
            .filter_map(|(dir, error)| Some((dir.to_owned(), error?)))
            .collect()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a record out of the queue if it is still there when its caller goes away.
struct Unqueue<'a> {
    records: &'a PulledRecords,
    id: u64,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.records
            .lock_queue()
            .pending
            .retain(|p| p.id != self.id);
    }
}

#[cfg(test)]
mod tests;
