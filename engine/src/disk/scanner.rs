//! Turns a folder on disk into index entries.
//!
//! A scan walks the folder in name order (see `walk.rs`) and merges it with the index, read in
//! the same order from a snapshot, so memory stays bounded however large the folder is. Each
//! difference becomes a change:
//! - new or modified files (size, modification time or inode differ) are hashed on worker
//!   threads, one per core (`hasher.rs`);
//! - metadata-only changes, directories and symlinks are recorded directly;
//! - names gone from a directory that was read completely become tombstones; names below a
//!   directory that could not be read are left alone; ignored names are marked invalid.
//!
//! Changes are written in batched transactions by the calling thread, which takes the store's
//! writer once per batch and releases it between batches; the merge reads through its own
//! read-only connection, so a scan never holds the writer for its walk. Tombstones are written
//! last, and only after checking the folder root and marker are still there, so a folder that
//! vanishes mid-scan is never taken for "everything was deleted".
//!
//! One unreadable file does not fail a scan: problems with single names come back as
//! [`ScanIssue`]s in the [`ScanReport`].

mod hasher;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use peerfold_protocol::ShortId;
use peerfold_protocol::chunking::Chunker;

use crate::model::entry::FileKind;
use crate::store::{
    FolderIdx, LocalChange, LocalRow, StoreError, StoreHandle, StoreReader, StuckChange,
};
use hasher::{HashJob, hash_file};
use walk::{DiskEntry, SubtreeRule, WalkItem, Walker};
pub use walk::{IGNORE_FILE, MARKER_DIR, timestamp as walk_timestamp};

/// Changes written per transaction, at most.
const BATCH_CHANGES: usize = 2000;
/// Files handed to a hashing thread at once: handing them over one by one costs more in
/// thread wake-ups than hashing a small file does.
const JOB_BATCH_FILES: usize = 128;
/// ... unless they add up to this many bytes, so large files still spread over the threads.
const JOB_BATCH_BYTES: u64 = 8 << 20;
/// Direct changes (no hashing) sent to the writer at once.
const WRITE_BATCH: usize = 256;
/// Changed files at least this large are re-cut from their earlier blocks (below it a fresh
/// pass costs a few milliseconds at most).
const REUSE_BLOCKS_FROM: u64 = 4 << 20;
/// How long a batch may wait for more changes before it is written.
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A problem with one name; the scan went on without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanIssue {
    /// The name (relative to the folder root).
    pub name: String,
    /// What went wrong.
    pub message: String,
}

/// What a scan found and did.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Regular files on disk.
    pub files: u64,
    /// Directories on disk.
    pub directories: u64,
    /// Symlinks on disk.
    pub symlinks: u64,
    /// Total size of the regular files.
    pub bytes: u64,
    /// Names new to the index (or back after a deletion).
    pub added: u64,
    /// Names whose content or metadata changed.
    pub changed: u64,
    /// Names that became tombstones.
    pub deleted: u64,
    /// Names newly marked as ignored.
    pub ignored: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// How long the scan took.
    pub duration: Duration,
    /// Names that could not be scanned.
    pub issues: Vec<ScanIssue>,
}

/// A scan that could not run, or had to stop before deleting anything.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The folder root is missing or unreadable.
    #[error(
        "folder root {path} is missing or unreadable ({source}); nothing was changed in the \
         index"
    )]
    RootMissing {
        /// The root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root exists but its `.peerfold` marker does not.
    #[error(
        "folder marker {path} is missing; if the folder is where it should be, recreate the \
         marker with `mkdir {path}` (nothing was changed in the index)"
    )]
    MarkerMissing {
        /// The marker directory that should exist.
        path: PathBuf,
    },
    /// The root or marker disappeared during the scan; no deletions were recorded.
    #[error("folder root {path} disappeared during the scan; no deletions were recorded")]
    RootVanished {
        /// The root.
        path: PathBuf,
    },
    /// The index failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far a running scan has come.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanProgress {
    /// Names walked so far.
    pub walked: u64,
    /// Bytes of changed files found so far (the work to do).
    pub to_hash: u64,
    /// Bytes hashed so far.
    pub hashed: u64,
}

/// Whether a change brings a new name or alters a known one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A name the index did not have.
    Added,
    /// A known name, changed (or deleted).
    Changed,
    /// A known name that the ignore patterns now cover.
    Ignored,
}

/// What a scan tells as it goes (`scan_folder_noting`).
#[derive(Debug)]
pub enum ScanNotice<'a> {
    /// How far it has come.
    Progress(ScanProgress),
    /// A change it recorded in the index (a deletion is a `Changed` with `deleted` set).
    Recorded(&'a LocalChange, ChangeKind),
}

/// What flows to the writing thread.
enum WriteMsg {
    Change(LocalChange, ChangeKind),
    Issue(ScanIssue),
}

#[derive(Default)]
struct Counters {
    walked: AtomicU64,
    to_hash: AtomicU64,
    hashed: AtomicU64,
}

/// Scans the folder `folder_id` rooted at `root` into `store`, recording changes as made by
/// device `local`. `progress` is called now and then from this thread. Blocks: run it on a
/// blocking thread, never on an async runtime's.
pub fn scan_folder(
    store: &StoreHandle,
    folder_id: &str,
    root: &Path,
    local: ShortId,
    mut progress: impl FnMut(ScanProgress),
) -> Result<ScanReport, ScanError> {
    scan_folder_noting(store, folder_id, root, local, false, |notice| {
        if let ScanNotice::Progress(p) = notice {
            progress(p);
        }
    })
}

/// [`scan_folder`], telling `notices` also of each change as it is recorded. With
/// `ignore_permissions` (the folder's `ignorePerms`) permission bits are not read from disk:
/// a known name keeps what its entry says, a new one is recorded as 0o644 (0o755 for a
/// directory), so a mode change alone is no change and modes never leave this device.
pub fn scan_folder_noting(
    store: &StoreHandle,
    folder_id: &str,
    root: &Path,
    local: ShortId,
    ignore_permissions: bool,
    mut notices: impl FnMut(ScanNotice<'_>),
) -> Result<ScanReport, ScanError> {
    let started = Instant::now();
    check_root(root)?;
    let folder = store.write_blocking(|s| s.ensure_folder(folder_id))?;
    let reader = store.reader()?;
    let mut report = ScanReport::default();
    let (ignores, ignore_issues) = load_ignores(root);
    report.issues.extend(ignore_issues);
    let walker = Walker::new(root, ignores).map_err(|source| ScanError::RootMissing {
        path: root.to_owned(),
        source,
    })?;

    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    let counters = Counters::default();
    let (hash_tx, hash_rx) = sync_channel::<Vec<HashJob>>(workers * 4);
    let hash_rx = Arc::new(Mutex::new(hash_rx));
    let (write_tx, write_rx) = sync_channel::<Vec<WriteMsg>>(16);

    let outcome = thread::scope(|scope| {
        for _ in 0..workers {
            let (hash_rx, write_tx, counters) = (hash_rx.clone(), write_tx.clone(), &counters);
            scope.spawn(move || hash_worker(root, &hash_rx, &write_tx, counters));
        }
        // Only the workers may hold the job receiver: when they stop (because the writer
        // failed), the merger's sends must fail rather than block on a full channel.
        drop(hash_rx);
        let merger = {
            let write_tx = write_tx.clone();
            let counters = &counters;
            scope.spawn(move || {
                let mut merge = Merge {
                    walker,
                    reader: &reader,
                    peeked: None,
                    hash_tx,
                    write_tx,
                    counters,
                    subtree: None,
                    jobs: Vec::new(),
                    job_bytes: 0,
                    writes: Vec::new(),
                    tombstones: Vec::new(),
                    totals: ScanReport::default(),
                    ignore_permissions,
                };
                reader.for_each_local_row(folder, |row| merge.row(row))?;
                // Names after the last index row are all new.
                merge.until(None);
                Ok::<_, StoreError>(merge.finish())
            })
        };
        drop(write_tx);
        // Takes the receiver by value: if writing fails, the senders see a closed channel
        // and wind down instead of blocking.
        let written = write_changes(store, folder, local, write_rx, &counters, &mut notices);
        // The merger ends once the walk ends, whatever the writer did.
        let merged = merger
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (written, merged)
    });

    let (written, merged) = outcome;
    let written = written?;
    let (tombstones, walk_issues, totals) = merged?;
    report.issues.extend(walk_issues);
    report.issues.extend(written.issues);
    report.added = written.added;
    report.changed = written.changed;
    report.ignored = written.ignored;
    report.files = totals.files;
    report.directories = totals.directories;
    report.symlinks = totals.symlinks;
    report.bytes = totals.bytes;

    // Deletions last, and only while the folder is verifiably still there.
    if check_root(root).is_err() {
        return Err(ScanError::RootVanished {
            path: root.to_owned(),
        });
    }
    for batch in tombstones.chunks(BATCH_CHANGES) {
        let stuck = store.write_blocking(|s| s.apply_local_changes(folder, local, batch))?;
        note_recorded(&mut notices, batch, None, &stuck);
        report.issues.extend(stuck.into_iter().map(stuck_issue));
    }
    report.deleted = tombstones.len() as u64;
    report.hashed_bytes = counters.hashed.load(Ordering::Relaxed);
    report.issues.sort_by(|a, b| a.name.cmp(&b.name));
    report.duration = started.elapsed();
    notices(ScanNotice::Progress(snapshot(&counters)));
    Ok(report)
}

/// The root must be a readable directory holding the marker directory.
fn check_root(root: &Path) -> Result<(), ScanError> {
    let meta = std::fs::metadata(root).map_err(|source| ScanError::RootMissing {
        path: root.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ScanError::RootMissing {
            path: root.to_owned(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let marker = root.join(MARKER_DIR);
    match std::fs::symlink_metadata(&marker) {
        Ok(meta) if meta.is_dir() => Ok(()),
        _ => Err(ScanError::MarkerMissing { path: marker }),
    }
}

/// What an `ignorePerms` folder records for a name it has no entry for.
fn default_permissions(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => 0o644,
        FileKind::Directory | FileKind::Symlink => 0o755,
    }
}

/// The folder's `.peerfoldignore` (gitignore syntax). Bad lines are reported and skipped.
fn load_ignores(root: &Path) -> (Gitignore, Vec<ScanIssue>) {
    let mut builder = GitignoreBuilder::new(root);
    let mut issues = Vec::new();
    let path = root.join(IGNORE_FILE);
    if path.exists()
        && let Some(error) = builder.add(&path)
    {
        issues.push(ScanIssue {
            name: IGNORE_FILE.into(),
            message: format!("some patterns were not understood: {error}"),
        });
    }
    match builder.build() {
        Ok(ignores) => (ignores, issues),
        Err(error) => {
            issues.push(ScanIssue {
                name: IGNORE_FILE.into(),
                message: format!("ignore patterns unusable, none applied: {error}"),
            });
            (Gitignore::empty(), issues)
        }
    }
}

fn hash_worker(
    root: &Path,
    jobs: &Mutex<Receiver<Vec<HashJob>>>,
    results: &SyncSender<Vec<WriteMsg>>,
    counters: &Counters,
) {
    let mut chunker = Chunker::new();
    loop {
        // The lock is held only to take one batch; a poisoned lock means another worker
        // panicked, and the scope will propagate that panic.
        let batch = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(batch) = batch else { return };
        let mut out = Vec::with_capacity(batch.len());
        for job in batch {
            let (kind, size) = (job.kind, job.entry.size);
            out.push(match hash_file(root, job, &mut chunker) {
                Ok(change) => WriteMsg::Change(change, kind),
                Err(issue) => WriteMsg::Issue(issue),
            });
            counters.hashed.fetch_add(size, Ordering::Relaxed);
        }
        if results.send(out).is_err() {
            return;
        }
    }
}

struct Written {
    added: u64,
    changed: u64,
    ignored: u64,
    issues: Vec<ScanIssue>,
}

/// Receives changes until every sender is gone, writing them in batched transactions, each
/// with the writer taken for that transaction only.
fn write_changes(
    store: &StoreHandle,
    folder: FolderIdx,
    local: ShortId,
    rx: Receiver<Vec<WriteMsg>>,
    counters: &Counters,
    notices: &mut impl FnMut(ScanNotice<'_>),
) -> Result<Written, StoreError> {
    let mut written = Written {
        added: 0,
        changed: 0,
        ignored: 0,
        issues: Vec::new(),
    };
    let mut batch = Vec::with_capacity(BATCH_CHANGES);
    let mut kinds = Vec::with_capacity(BATCH_CHANGES);
    let mut batch_started = Instant::now();
    let mut last_progress = Instant::now();
    let mut open = true;
    while open {
        match rx.recv_timeout(PROGRESS_EVERY.min(BATCH_WAIT)) {
            Ok(messages) => {
                for message in messages {
                    match message {
                        WriteMsg::Change(change, kind) => {
                            if batch.is_empty() {
                                batch_started = Instant::now();
                            }
                            batch.push(change);
                            kinds.push(kind);
                            match kind {
                                ChangeKind::Added => written.added += 1,
                                ChangeKind::Changed => written.changed += 1,
                                ChangeKind::Ignored => written.ignored += 1,
                            }
                        }
                        WriteMsg::Issue(issue) => written.issues.push(issue),
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        if !batch.is_empty()
            && (!open || batch.len() >= BATCH_CHANGES || batch_started.elapsed() >= BATCH_WAIT)
        {
            let stuck = store.write_blocking(|s| s.apply_local_changes(folder, local, &batch))?;
            note_recorded(notices, &batch, Some(&kinds), &stuck);
            written.issues.extend(stuck.into_iter().map(stuck_issue));
            batch.clear();
            kinds.clear();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            notices(ScanNotice::Progress(snapshot(counters)));
            last_progress = Instant::now();
        }
    }
    Ok(written)
}

/// Tells `notices` of the changes of `batch` the store recorded (not the `stuck` ones);
/// `kinds` runs beside the batch (`None`: deletions, all `Changed`).
fn note_recorded(
    notices: &mut impl FnMut(ScanNotice<'_>),
    batch: &[LocalChange],
    kinds: Option<&[ChangeKind]>,
    stuck: &[StuckChange],
) {
    for (i, change) in batch.iter().enumerate() {
        if stuck.iter().any(|s| s.name == change.name) {
            continue;
        }
        let kind = kinds
            .and_then(|k| k.get(i).copied())
            .unwrap_or(ChangeKind::Changed);
        notices(ScanNotice::Recorded(change, kind));
    }
}

/// A change the store could not record because its version cannot advance.
fn stuck_issue(stuck: StuckChange) -> ScanIssue {
    ScanIssue {
        name: stuck.name,
        message: format!(
            "this change is not recorded and will not sync: {}",
            stuck.source
        ),
    }
}

fn snapshot(counters: &Counters) -> ScanProgress {
    ScanProgress {
        walked: counters.walked.load(Ordering::Relaxed),
        to_hash: counters.to_hash.load(Ordering::Relaxed),
        hashed: counters.hashed.load(Ordering::Relaxed),
    }
}

/// The merging pass over the walk and the index, both in name order.
struct Merge<'a> {
    walker: Walker,
    /// For the earlier blocks of large changed files.
    reader: &'a StoreReader,
    peeked: Option<WalkItem>,
    hash_tx: SyncSender<Vec<HashJob>>,
    write_tx: SyncSender<Vec<WriteMsg>>,
    counters: &'a Counters,
    /// The subtree (prefix with trailing `/`) the index rows are currently inside of, if
    /// the walk did not enter it.
    subtree: Option<(String, SubtreeRule)>,
    /// Hash jobs not yet handed to the workers, and their bytes.
    jobs: Vec<HashJob>,
    job_bytes: u64,
    /// Direct changes not yet handed to the writer.
    writes: Vec<WriteMsg>,
    tombstones: Vec<LocalChange>,
    totals: ScanReport,
    /// The folder's `ignorePerms`.
    ignore_permissions: bool,
}

impl Merge<'_> {
    fn peek(&mut self) -> Option<&WalkItem> {
        if self.peeked.is_none() {
            self.peeked = self.walker.next();
        }
        self.peeked.as_ref()
    }

    fn next_item(&mut self) -> Option<WalkItem> {
        self.peeked.take().or_else(|| self.walker.next())
    }

    /// Handles one index row, after every walked name that sorts before it.
    fn row(&mut self, row: LocalRow) -> Result<(), StoreError> {
        self.until(Some(&row.name));
        if let Some((prefix, rule)) = &self.subtree {
            if row.name.starts_with(prefix.as_str()) {
                if *rule == SubtreeRule::Ignore {
                    self.mark_ignored(row);
                }
                return Ok(());
            }
            self.subtree = None;
        }
        let same_name = matches!(
            self.peek().map(|item| item.sort_key().cmp_name(&row.name)),
            Some(std::cmp::Ordering::Equal)
        );
        if !same_name {
            if !row.deleted {
                self.tombstones.push(tombstone(row));
            }
            return Ok(());
        }
        match self.next_item() {
            Some(WalkItem::Entry(entry)) => self.compare(entry, row),
            Some(WalkItem::Ignored(_)) => self.mark_ignored(row),
            // Skipped (unreadable this time) names keep their entry.
            _ => {}
        }
        Ok(())
    }

    /// Consumes walked items that sort before `name` (all of them for `None`).
    fn until(&mut self, name: Option<&str>) {
        while let Some(item) = self.peek() {
            if let Some(name) = name
                && item.sort_key().cmp_name(name) != std::cmp::Ordering::Less
            {
                break;
            }
            let Some(item) = self.next_item() else { break };
            match item {
                WalkItem::Entry(entry) => self.new_entry(entry),
                WalkItem::Subtree { prefix, rule } => self.subtree = Some((prefix + "/", rule)),
                WalkItem::Ignored(_) | WalkItem::Skipped(_) => {}
            }
        }
    }

    fn count(&mut self, entry: &DiskEntry) {
        self.counters.walked.fetch_add(1, Ordering::Relaxed);
        match entry.kind {
            FileKind::File => {
                self.totals.files += 1;
                self.totals.bytes += entry.size;
            }
            FileKind::Directory => self.totals.directories += 1,
            FileKind::Symlink => self.totals.symlinks += 1,
        }
    }

    fn new_entry(&mut self, mut entry: DiskEntry) {
        self.count(&entry);
        if self.ignore_permissions {
            entry.permissions = default_permissions(entry.kind);
        }
        self.record(entry, None, ChangeKind::Added);
    }

    fn compare(&mut self, mut entry: DiskEntry, row: LocalRow) {
        self.count(&entry);
        if self.ignore_permissions {
            entry.permissions = if row.deleted || row.kind != entry.kind {
                default_permissions(entry.kind)
            } else {
                row.permissions
            };
        }
        let kind = if row.deleted {
            ChangeKind::Added
        } else {
            ChangeKind::Changed
        };
        if row.deleted || row.invalid || row.kind != entry.kind {
            return self.record(entry, Some(row.id), kind);
        }
        match entry.kind {
            FileKind::File => {
                if entry.size != row.size
                    || entry.modified != row.modified
                    || entry.inode != row.inode
                {
                    self.record(entry, Some(row.id), kind);
                } else if entry.permissions != row.permissions {
                    self.send_change(metadata_change(entry, row.id), kind);
                }
            }
            // A directory's modification time moves with its contents; only its permissions
            // are its own.
            FileKind::Directory => {
                if entry.permissions != row.permissions {
                    self.record(entry, Some(row.id), kind);
                }
            }
            FileKind::Symlink => {
                if entry.symlink_target != row.symlink_target {
                    self.record(entry, Some(row.id), kind);
                }
            }
        }
    }

    /// Records the disk state of `entry`: files go to the hashers, the rest straight to the
    /// writer.
    fn record(&mut self, entry: DiskEntry, previous: Option<i64>, kind: ChangeKind) {
        if entry.kind == FileKind::File {
            self.counters
                .to_hash
                .fetch_add(entry.size, Ordering::Relaxed);
            self.job_bytes += entry.size;
            let earlier_blocks = match previous {
                Some(id) if entry.size >= REUSE_BLOCKS_FROM => {
                    self.reader.local_blocks(id).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            self.jobs.push(HashJob {
                previous,
                entry,
                kind,
                earlier_blocks,
            });
            if self.jobs.len() >= JOB_BATCH_FILES || self.job_bytes >= JOB_BATCH_BYTES {
                self.flush_jobs();
            }
        } else {
            let change = LocalChange {
                previous,
                name: entry.name,
                kind: entry.kind,
                size: 0,
                permissions: entry.permissions,
                modified: entry.modified,
                deleted: false,
                invalid: false,
                symlink_target: entry.symlink_target,
                blocks: Some(Vec::new()),
                inode: entry.inode,
            };
            self.send_change(change, kind);
        }
    }

    fn mark_ignored(&mut self, row: LocalRow) {
        if row.invalid || row.deleted {
            return;
        }
        let change = LocalChange {
            previous: Some(row.id),
            name: row.name,
            kind: row.kind,
            size: row.size,
            permissions: row.permissions,
            modified: row.modified,
            deleted: false,
            invalid: true,
            symlink_target: row.symlink_target,
            blocks: None,
            inode: row.inode,
        };
        self.send_change(change, ChangeKind::Ignored);
    }

    fn send_change(&mut self, change: LocalChange, kind: ChangeKind) {
        self.writes.push(WriteMsg::Change(change, kind));
        if self.writes.len() >= WRITE_BATCH {
            self.flush_writes();
        }
    }

    fn flush_jobs(&mut self) {
        if !self.jobs.is_empty() {
            // A send fails only when the workers are gone, i.e. the scan is unwinding.
            let _ = self.hash_tx.send(std::mem::take(&mut self.jobs));
            self.job_bytes = 0;
        }
    }

    fn flush_writes(&mut self) {
        if !self.writes.is_empty() {
            // As above: fails only when the writer gave up.
            let _ = self.write_tx.send(std::mem::take(&mut self.writes));
        }
    }

    fn finish(mut self) -> (Vec<LocalChange>, Vec<ScanIssue>, ScanReport) {
        self.flush_jobs();
        self.flush_writes();
        (self.tombstones, self.walker.issues, self.totals)
    }
}

fn metadata_change(entry: DiskEntry, previous: i64) -> LocalChange {
    LocalChange {
        previous: Some(previous),
        name: entry.name,
        kind: entry.kind,
        size: entry.size,
        permissions: entry.permissions,
        modified: entry.modified,
        deleted: false,
        invalid: false,
        symlink_target: entry.symlink_target,
        blocks: None,
        inode: entry.inode,
    }
}

fn tombstone(row: LocalRow) -> LocalChange {
    LocalChange {
        previous: Some(row.id),
        name: row.name,
        kind: row.kind,
        size: 0,
        permissions: row.permissions,
        modified: row.modified,
        deleted: true,
        invalid: false,
        symlink_target: String::new(),
        blocks: Some(Vec::new()),
        inode: 0,
    }
}
