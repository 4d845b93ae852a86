//! One folder at run time: its settings, state, notifications and recent activity.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::EventLog;
use peerfold_engine::config::FolderConfig;
use peerfold_engine::disk::scanner;
use peerfold_engine::store::FolderIdx;

/// One folder at run time.
pub(crate) struct Folder {
    pub(crate) id: String,
    /// Its settings; they change when the configuration does (devices shared with, ...).
    config: RwLock<FolderConfig>,
    pub(crate) idx: FolderIdx,
    /// Stops this folder's tasks (when it is removed, or the daemon stops).
    pub(crate) stop: CancellationToken,
    /// Woken when the folder's remote state changed and the puller should look again.
    pub(crate) pull: Notify,
    /// Woken when the folder should be rescanned.
    pub(crate) rescan: Notify,
    /// Wakes the index senders when a scan recorded local changes.
    pub(crate) local_changed: Notify,
    /// What the folder is doing, for `peerfold status`.
    pub(crate) state: Mutex<FolderState>,
    /// Held by a scan and by a pull round (planning included): a scan that ran beside the
    /// puller would index a file between its rename and its record as a local change.
    pub(crate) busy: tokio::sync::Mutex<()>,
    /// Names the last pull round could not bring up to date, with why.
    pub(crate) pull_errors: Mutex<BTreeMap<String, String>>,
    /// The last scan and the last file synced (`/rest/stats/folder`), since the start.
    stats: Mutex<FolderStats>,
    /// How far the running scan has come (`None` when none runs).
    scan_progress: Mutex<Option<scanner::ScanProgress>>,
    /// Woken when counts may have changed, for the summary task (FolderSummary and
    /// FolderCompletion events).
    pub(crate) counts_changed: Notify,
    /// What the next pull round must plan again.
    replan: Mutex<Replan>,
    /// Where state changes are announced.
    pub(super) events: Arc<EventLog>,
}

/// What changed since the puller last planned a folder.
#[derive(Debug)]
pub(crate) enum Replan {
    /// Everything (start-up, local scans, new connections, folder actions).
    Everything,
    /// Only these names (index updates from peers, names that failed).
    Names(BTreeSet<String>),
}

/// A folder's recent activity, as `/rest/stats/folder` shows it.
#[derive(Clone, Debug, Default)]
pub(crate) struct FolderStats {
    /// When the last scan finished.
    pub(crate) last_scan: Option<jiff::Timestamp>,
    /// The last name synced: when, which, and whether it was a deletion.
    pub(crate) last_file: Option<(jiff::Timestamp, String, bool)>,
    /// Scans done, and the time they took (`/metrics`).
    pub(crate) scans: u64,
    pub(crate) scan_seconds: f64,
    /// Pull rounds that had something to do, and the time they took.
    pub(crate) pulls: u64,
    pub(crate) pull_seconds: f64,
}

/// Past this many names, planning the whole folder is cheaper than name by name.
const REPLAN_NAMES_MAX: usize = 20_000;

/// What a folder is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum FolderState {
    #[default]
    Idle,
    Scanning,
    Syncing,
    /// The last scan or pull failed as a whole (for example, the root is missing).
    Error(String),
}

impl FolderState {
    /// Syncthing's name for the state.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Scanning => "scanning",
            Self::Syncing => "syncing",
            Self::Error(_) => "error",
        }
    }
}

impl Folder {
    pub(super) fn new(
        config: FolderConfig,
        idx: FolderIdx,
        events: Arc<EventLog>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            id: config.id.clone(),
            config: RwLock::new(config),
            idx,
            stop,
            pull: Notify::new(),
            rescan: Notify::new(),
            local_changed: Notify::new(),
            state: Mutex::new(FolderState::Idle),
            busy: tokio::sync::Mutex::new(()),
            pull_errors: Mutex::new(BTreeMap::new()),
            scan_progress: Mutex::new(None),
            stats: Mutex::new(FolderStats::default()),
            counts_changed: Notify::new(),
            replan: Mutex::new(Replan::Everything),
            events,
        }
    }

    /// A copy of the folder's current settings.
    pub(crate) fn config(&self) -> FolderConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_config(&self, config: FolderConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .clone()
    }

    pub(crate) fn folder_type(&self) -> peerfold_engine::config::FolderType {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .folder_type
    }

    /// Whether the folder is shared with `device`.
    pub(crate) fn shares_with(&self, device: DeviceId) -> bool {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .devices
            .contains(&device)
    }

    pub(crate) fn set_state(&self, state: FolderState) {
        let mut current = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *current == state {
            return;
        }
        let from = current.name();
        *current = state;
        let to = current.name();
        drop(current);
        self.events.emit(
            "StateChanged",
            serde_json::json!({ "folder": self.id, "from": from, "to": to }),
        );
    }

    pub(crate) fn state(&self) -> FolderState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next pull round plans the whole folder.
    pub(crate) fn replan_everything(&self) {
        *self.replan.lock().unwrap_or_else(|p| p.into_inner()) = Replan::Everything;
    }

    /// The next pull round plans these names (too).
    pub(crate) fn replan_names<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut replan = self.replan.lock().unwrap_or_else(|p| p.into_inner());
        if let Replan::Names(set) = &mut *replan {
            set.extend(names.into_iter().map(str::to_owned));
            if set.len() > REPLAN_NAMES_MAX {
                *replan = Replan::Everything;
            }
        }
    }

    /// What to plan now; resets to nothing.
    pub(crate) fn take_replan(&self) -> Replan {
        std::mem::replace(
            &mut *self.replan.lock().unwrap_or_else(|p| p.into_inner()),
            Replan::Names(BTreeSet::new()),
        )
    }

    /// Replaces the pull errors with those of the round that just ended.
    pub(crate) fn set_pull_errors(&self, errors: BTreeMap<String, String>) {
        *self.pull_errors.lock().unwrap_or_else(|p| p.into_inner()) = errors;
    }

    /// Records a name the puller brought up to date.
    pub(crate) fn note_synced(&self, name: &str, deleted: bool) {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_file = Some((jiff::Timestamp::now(), name.to_owned(), deleted));
    }

    /// Records a scan that finished.
    pub(super) fn note_scan(&self, took: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.last_scan = Some(jiff::Timestamp::now());
        stats.scans += 1;
        stats.scan_seconds += took.as_secs_f64();
    }

    /// Records a pull round that had something to do.
    pub(crate) fn note_pull_round(&self, took: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.pulls += 1;
        stats.pull_seconds += took.as_secs_f64();
    }

    pub(crate) fn stats(&self) -> FolderStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn scan_progress(&self) -> Option<scanner::ScanProgress> {
        *self.scan_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_scan_progress(&self, progress: Option<scanner::ScanProgress>) {
        *self.scan_progress.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }

    pub(crate) fn pull_errors(&self) -> BTreeMap<String, String> {
        self.pull_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
