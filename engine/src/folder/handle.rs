//! One folder at run time: its settings, state, notifications and recent activity, and
//! the handles its tasks work through (the store, the event log).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::counts_changed::CountsChanged;
use crate::config::FolderConfig;
use crate::disk::fsutil;
use crate::disk::scanner::ScanProgress;
use crate::events::{Event, EventLog, StateName};
use crate::model::FolderType;
use crate::model::counts::FolderSummary;
use crate::model::refused::RefusedEntries;
use crate::store::{FolderIdx, PulledRecords, StoreError, StoreHandle};

/// A running folder, shared by its tasks and the adapters.
pub type FolderHandle = Arc<Folder>;

/// One folder at run time.
pub struct Folder {
    pub(crate) id: String,
    /// Its settings; they change when the configuration does (devices shared with, ...).
    config: RwLock<FolderConfig>,
    pub(crate) idx: FolderIdx,
    /// This device.
    pub(crate) me: DeviceId,
    pub(crate) store: StoreHandle,
    /// Records what the puller installed, downloads that end together in one transaction.
    pub(crate) pulled: PulledRecords,
    pub(crate) events: Arc<EventLog>,
    /// Stops this folder's tasks (when it is removed, or the engine stops).
    pub(crate) stop: CancellationToken,
    /// Woken when the folder's remote state changed and the puller should look again.
    pub(crate) pull: Notify,
    /// Woken when the folder should be rescanned.
    pub(crate) rescan: Notify,
    /// Woken by the file-system watcher: a rescan, unless the puller is busy (its own
    /// renames wake the watcher too), then once it is done or a while has passed.
    pub(crate) watched: Notify,
    /// The puller has work in flight or pages of a walk to come (a scan in between does
    /// not change that, whatever state it shows meanwhile).
    pub(crate) pulling: AtomicBool,
    /// Wakes the index senders when local entries changed.
    pub(crate) local_changed: Notify,
    /// Woken when counts may have changed (FolderSummary and FolderCompletion); keeps the
    /// last summary of a large folder.
    pub(crate) counts_changed: CountsChanged,
    /// Held by a scan, a folder action and each change the puller makes: a scan that ran
    /// beside the puller would index a file between its rename and its record as a local
    /// change. Downloads share it to install and record (names differ, and their fsyncs
    /// overlap); everything else holds it alone.
    pub(crate) busy: tokio::sync::RwLock<()>,
    /// What it does, and since when.
    state: Mutex<(FolderState, jiff::Timestamp)>,
    /// Names the last pull round could not bring up to date, with why.
    pull_errors: Mutex<BTreeMap<String, String>>,
    /// Entries refused from peers (see `refused.rs`).
    pub(super) refused: Mutex<RefusedEntries>,
    stats: Mutex<FolderStats>,
    /// How far the running scan has come (`None` when none runs).
    scan_progress: Mutex<Option<ScanProgress>>,
    /// What the next pull round must plan again.
    replan: Mutex<Replan>,
    /// Names a client asked to have first (`db/prio`), most recent first.
    priority: Mutex<Vec<String>>,
    /// Files moving now, both ways.
    pub(crate) transfers: super::transfers::Transfers,
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a folder is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FolderState {
    /// Nothing to do.
    #[default]
    Idle,
    /// Scanning.
    Scanning,
    /// Pulling.
    Syncing,
    /// The last scan or pull failed as a whole (for example, the root is missing).
    Error(String),
}

impl FolderState {
    /// The state's name.
    pub fn name(&self) -> StateName {
        match self {
            Self::Idle => StateName::Idle,
            Self::Scanning => StateName::Scanning,
            Self::Syncing => StateName::Syncing,
            Self::Error(_) => StateName::Error,
        }
    }
}

/// What changed since the puller last planned a folder.
#[derive(Debug)]
pub(crate) enum Replan {
    /// Everything (start-up, local scans, new connections, folder actions).
    Everything,
    /// Only these names (index updates from peers, names that failed).
    Names(BTreeSet<String>),
}

/// Names kept for `db/prio`.
const PRIORITY_NAMES: usize = 100;

/// Past this many names, planning the whole folder is cheaper than name by name.
const REPLAN_NAMES_MAX: usize = 20_000;

/// A folder's recent activity, as `/rest/stats/folder` and `/metrics` show it.
#[derive(Clone, Debug, Default)]
pub struct FolderStats {
    /// When the last scan finished.
    pub last_scan: Option<jiff::Timestamp>,
    /// The last name synced: when, which, and whether it was a deletion.
    pub last_file: Option<(jiff::Timestamp, String, bool)>,
    /// Scans done.
    pub scans: u64,
    /// The time they took.
    pub scan_seconds: f64,
    /// Pull rounds that had something to do.
    pub pulls: u64,
    /// The time they took.
    pub pull_seconds: f64,
}

/// The one way to take a folder's small locks: each guards a value that is only swapped
/// or updated in a statement or two, so a panic cannot leave it half-written and a
/// poisoned lock is still usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Folder {
    pub(crate) fn new(
        config: FolderConfig,
        idx: FolderIdx,
        me: DeviceId,
        store: StoreHandle,
        events: Arc<EventLog>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            id: config.id.clone(),
            config: RwLock::new(config),
            idx,
            me,
            pulled: PulledRecords::new(store.clone(), idx, Arc::new(fsutil::sync_dir)),
            store,
            events,
            stop,
            pull: Notify::new(),
            rescan: Notify::new(),
            watched: Notify::new(),
            pulling: AtomicBool::new(false),
            local_changed: Notify::new(),
            counts_changed: CountsChanged::default(),
            busy: tokio::sync::RwLock::new(()),
            state: Mutex::new((FolderState::Idle, jiff::Timestamp::now())),
            pull_errors: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(RefusedEntries::default()),
            stats: Mutex::new(FolderStats::default()),
            scan_progress: Mutex::new(None),
            replan: Mutex::new(Replan::Everything),
            priority: Mutex::new(Vec::new()),
            transfers: super::transfers::Transfers::default(),
        }
    }

    /// Puts `name` first among the names to pull (at most [`PRIORITY_NAMES`] are kept).
    pub(crate) fn prioritize(&self, name: &str) {
        let mut priority = lock(&self.priority);
        priority.retain(|n| n != name);
        priority.insert(0, name.to_owned());
        priority.truncate(PRIORITY_NAMES);
    }

    /// Orders downloads so the names asked for first come first (stable otherwise); a name
    /// leaves the list once its download starts.
    pub(crate) fn put_first(&self, fetches: &mut [crate::model::planner::Action]) {
        let mut priority = lock(&self.priority);
        if priority.is_empty() {
            return;
        }
        let rank = |a: &crate::model::planner::Action| {
            a.name()
                .and_then(|n| priority.iter().position(|p| p == n))
                .unwrap_or(usize::MAX)
        };
        fetches.sort_by_key(rank);
        priority.retain(|p| !fetches.iter().any(|a| a.name() == Some(p.as_str())));
    }

    /// The folder's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The folder's label (without copying the rest of its settings).
    pub(crate) fn label(&self) -> String {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .label
            .clone()
    }

    /// A copy of the folder's current settings.
    pub fn config(&self) -> FolderConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_config(&self, config: FolderConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The folder's root.
    pub fn path(&self) -> PathBuf {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .clone()
    }

    /// Send-receive, send-only or receive-only.
    pub fn folder_type(&self) -> FolderType {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .folder_type
    }

    /// Whether the folder is shared with `device`.
    pub fn shares_with(&self, device: DeviceId) -> bool {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .devices
            .contains(&device)
    }

    pub(crate) fn set_state(&self, state: FolderState) {
        let mut current = lock(&self.state);
        if current.0 == state {
            return;
        }
        let from = current.0.name();
        *current = (state, jiff::Timestamp::now());
        let to = current.0.name();
        drop(current);
        self.events.emit(Event::StateChanged {
            folder: self.id.clone(),
            from,
            to,
        });
    }

    /// What the folder is doing.
    pub fn state(&self) -> FolderState {
        lock(&self.state).0.clone()
    }

    /// When its state last changed (Syncthing's `stateChanged`).
    pub fn state_changed(&self) -> jiff::Timestamp {
        lock(&self.state).1
    }

    /// The next pull round plans the whole folder.
    pub(crate) fn replan_everything(&self) {
        *lock(&self.replan) = Replan::Everything;
    }

    /// The next pull round plans these names (too).
    pub(crate) fn replan_names<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut replan = lock(&self.replan);
        if let Replan::Names(set) = &mut *replan {
            set.extend(names.into_iter().map(str::to_owned));
            if set.len() > REPLAN_NAMES_MAX {
                *replan = Replan::Everything;
            }
        }
    }

    /// What to plan now; resets to nothing.
    pub(crate) fn take_replan(&self) -> Replan {
        std::mem::replace(&mut *lock(&self.replan), Replan::Names(BTreeSet::new()))
    }

    /// Replaces the pull errors with those of the round that just ended.
    pub(crate) fn set_pull_errors(&self, errors: BTreeMap<String, String>) {
        *lock(&self.pull_errors) = errors;
    }

    /// Names the last pull round could not bring up to date, with why.
    pub fn pull_errors(&self) -> BTreeMap<String, String> {
        lock(&self.pull_errors).clone()
    }

    /// Records a name the puller brought up to date.
    pub(crate) fn note_synced(&self, name: &str, deleted: bool) {
        lock(&self.stats).last_file = Some((jiff::Timestamp::now(), name.to_owned(), deleted));
    }

    /// Records a scan that finished.
    pub(crate) fn note_scan(&self, took: Duration) {
        let mut stats = lock(&self.stats);
        stats.last_scan = Some(jiff::Timestamp::now());
        stats.scans += 1;
        stats.scan_seconds += took.as_secs_f64();
    }

    /// Records a pull round that had something to do.
    pub(crate) fn note_pull_round(&self, took: Duration) {
        let mut stats = lock(&self.stats);
        stats.pulls += 1;
        stats.pull_seconds += took.as_secs_f64();
    }

    /// Recent activity.
    pub fn stats(&self) -> FolderStats {
        lock(&self.stats).clone()
    }

    /// How far the running scan has come.
    pub fn scan_progress(&self) -> Option<ScanProgress> {
        *lock(&self.scan_progress)
    }

    pub(crate) fn set_scan_progress(&self, progress: Option<ScanProgress>) {
        *lock(&self.scan_progress) = progress;
    }

    /// The folder's local sequence: the last change number it handed out.
    pub async fn sequence(&self) -> Result<u64, StoreError> {
        let idx = self.idx;
        self.store.read(move |r| r.sequence(idx)).await
    }

    /// Several devices' views of the folder (this device's own for `me`), from the
    /// store's counters: a few rows, however large the folder.
    pub async fn summaries(&self, devices: &[DeviceId]) -> Result<Vec<FolderSummary>, StoreError> {
        let (idx, me, devices) = (self.idx, self.me, devices.to_vec());
        self.store
            .read(move |reader| reader.summaries(idx, &devices, me))
            .await
    }

    /// This device's view of the folder.
    pub async fn summary(&self) -> Result<FolderSummary, StoreError> {
        Ok(self.summaries(&[self.me]).await?.remove(0))
    }
}
