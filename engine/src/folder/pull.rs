//! The puller: carries out the planner's actions for one folder against disk and network.
//! It reaches the network only through the [`Peers`] port.
//!
//! Who wakes me: `pull` (index updates from peers, new connections, scans that changed
//! something, folder actions) and a 10 s timer (retries, a full plan every 10 minutes).
//! Whom I wake: the index senders (`local_changed`, via the records), the summary task
//! (`counts_changed`) and the scan loop (`rescan`, after conflicts or local changes seen
//! under a pull).
//!
//! A fetched file is assembled in `.peerfold.NAME.tmp` beside its target (disk/assemble):
//! blocks come from local files that hold them (any folder) before peers are asked, every
//! block is checked against its BLAKE3 hash, the local file is checked to still be what the
//! index says (else the change waits for the next scan), then the temp file is renamed over
//! it. Names are validated and parents that are symlinks are refused, so nothing is written
//! outside the folder root.

mod apply;
mod plan;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::warn;

use super::registry::FolderRegistry;
use super::{FolderHandle, FolderState, Replan};
use crate::disk::versions;
use crate::events::{DiskAction, Event};
use crate::model::names::NameError;
use crate::model::planner::Action;
use crate::peers::Peers;
use crate::store::StoreError;
use plan::{Covered, Planned, plan};

pub(crate) use apply::{Expected, OnDisk, disk_version, prepare};

/// How often the puller looks again on its own (peers that came and went, failed blocks).
const RETRY_EVERY: Duration = Duration::from_secs(10);
/// How often the whole folder is planned again although nothing asked for it.
const FULL_PLAN_EVERY: Duration = Duration::from_secs(600);
/// Files pulled at once.
const FILES_IN_FLIGHT: usize = 32;
/// How long a round waits for its downloads before new work may start beside them.
const ROUND_PATIENCE: Duration = Duration::from_secs(2);

/// Why one action failed; the puller goes on with the others and retries later.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("a parent directory of {0:?} is a symlink or a file")]
    Escapes(String),
    #[error("no peer could provide block at offset {0}")]
    Unavailable(u64),
    #[error("{0:?} changed locally since it was indexed; it will be rescanned first")]
    ChangedLocally(String),
    #[error(
        "{0:?} is a directory that still holds files; it is replaced only once they are gone, \
         never with them"
    )]
    DirectoryNotEmpty(String),
    #[error(
        "insufficient space: {size} bytes would leave {left} free on the folder's disk, \
         which must keep {required} (minDiskFree)"
    )]
    InsufficientSpace { size: u64, left: u64, required: u64 },
    #[error("folder root or marker missing; not pulling")]
    RootMissing,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Version(#[from] versions::KeepError),
}

/// What a pull works with besides its folder.
#[derive(Clone)]
pub(crate) struct PullContext {
    /// The network.
    pub(crate) peers: Arc<dyn Peers>,
    /// Every running folder (blocks are copied from any of them).
    pub(crate) folders: Arc<FolderRegistry>,
}

/// Pulls whenever the folder's remote state changes, and now and then.
pub(crate) async fn pull_loop(folder: FolderHandle, context: PullContext) {
    let mut puller = Puller::new(folder, context);
    let mut last_full_plan = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = puller.folder.stop.cancelled() => return,
            Some(done) = puller.fetching.join_next(), if !puller.fetching.is_empty() => {
                puller.finished(done);
                continue;
            }
            () = puller.folder.pull.notified() => {}
            // Names that failed are planned again (each round ends by asking for them); now
            // and then everything is, as a safety net. (A whole-folder plan for every retry
            // walked a million names every 10 s while one file failed.)
            () = tokio::time::sleep(RETRY_EVERY) => {
                if last_full_plan.elapsed() > FULL_PLAN_EVERY {
                    puller.folder.replan_everything();
                }
            }
        }
        let replan = puller.folder.take_replan();
        // Everything starts the walk again; a walk goes on once a round finished what it
        // started (else what it left, planned by name, comes first).
        let page_after = if matches!(replan, Replan::Everything) {
            last_full_plan = Instant::now();
            Some(None)
        } else if !puller.interrupted {
            puller.walk.take().map(Some)
        } else {
            None
        };
        let paging = page_after.is_some();
        match plan(&puller.folder, replan, page_after).await {
            Ok(planned) => {
                if paging {
                    puller.walk.clone_from(&planned.next);
                }
                puller.round(planned).await;
                if puller.walk.is_some() && !puller.interrupted {
                    puller.folder.pull.notify_one();
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot plan");
                puller.walk = None;
                puller.folder.replan_everything();
            }
        }
    }
}

/// What a fetch task ends with.
type Done = (Action, Result<(), PullError>);

/// One folder's pulls. Downloads run as tasks of their own that outlive the round that
/// started them: a peer that is slow to answer delays only its files, never the next round
/// (new index entries, local changes, deletions elsewhere in the folder).
struct Puller {
    folder: FolderHandle,
    context: PullContext,
    /// Downloads in flight.
    fetching: JoinSet<Done>,
    /// Their names: a round does not start a second download of a name.
    in_flight: HashSet<String>,
    /// Names planned while their download was in flight: planned again once it ends.
    deferred: HashSet<String>,
    /// What failed, by name, until it is planned again or succeeds.
    errors: BTreeMap<String, String>,
    /// Whether the last round asked for a rescan (conflicts, local changes under a pull).
    rescan: bool,
    /// Whether the last round left work undone to let new work start.
    interrupted: bool,
    /// A whole-folder walk in progress: its next page starts after this name (the folder
    /// stays syncing meanwhile).
    walk: Option<String>,
    /// A round is running (downloads that end meanwhile do not settle it).
    in_round: bool,
    started: Instant,
}

impl Puller {
    fn new(folder: FolderHandle, context: PullContext) -> Self {
        Self {
            folder,
            context,
            fetching: JoinSet::new(),
            in_flight: HashSet::new(),
            deferred: HashSet::new(),
            errors: BTreeMap::new(),
            rescan: false,
            interrupted: false,
            walk: None,
            in_round: false,
            started: Instant::now(),
        }
    }

    /// One round. Three phases keep the planner's order where it matters: directories,
    /// symlinks, metadata and conflicts in order; then downloads, several files at once
    /// (distinct names, parents created as needed), which go on after the round if new
    /// work comes; then deletions, children first, once no download is in flight (a
    /// download may still copy blocks from a file being deleted).
    async fn round(&mut self, planned: Planned) {
        self.in_round = true;
        self.folder
            .replan_names(planned.deferred.iter().map(String::as_str));
        self.interrupted = self
            .run_round(planned.actions, planned.covered.as_ref())
            .await;
        self.in_round = false;
        self.settle_round();
    }

    /// Whether it stopped early, leaving work to the next round. `covered`: the names a
    /// page of the whole-folder plan looked at (errors of those it has no action for are
    /// gone).
    async fn run_round(&mut self, actions: Vec<Action>, covered: Option<&Covered>) -> bool {
        let folder = self.folder.clone();
        if self.fetching.is_empty() {
            self.started = Instant::now();
        }
        if let Some(covered) = covered {
            let in_flight = &self.in_flight;
            self.errors
                .retain(|name, _| in_flight.contains(name) || !covered.contains(name));
        }
        let (busy_names, actions): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| a.name().is_some_and(|n| self.in_flight.contains(n)));
        for action in busy_names {
            if let Some(name) = action.name() {
                folder.replan_names([name]);
                self.deferred.insert(name.to_owned());
            }
        }
        if !actions.is_empty() {
            folder.pulling.store(true, Ordering::Relaxed);
            folder.set_state(FolderState::Syncing);
        }
        for action in &actions {
            if let Some(name) = action.name() {
                self.errors.remove(name);
            }
        }
        let (deletes, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Delete { .. }));
        let (mut fetches, ordered): (Vec<Action>, Vec<Action>) =
            rest.into_iter().partition(Action::fetches);
        folder.put_first(&mut fetches);
        self.rescan |= ordered.iter().any(|a| matches!(a, Action::Conflict { .. }));
        self.rescan |= fetches.iter().any(|a| matches!(a, Action::Conflict { .. }));
        for action in ordered {
            if folder.stop.is_cancelled() {
                return true;
            }
            let result = apply::execute(&folder, &self.context, &action).await;
            self.report(&action, false, result);
        }
        let mut queue = fetches.into_iter();
        // Downloads that end soon end in this round; past that, new work does not wait.
        let patience = tokio::time::sleep(ROUND_PATIENCE);
        tokio::pin!(patience);
        let mut impatient = false;
        let interrupted = loop {
            while self.fetching.len() < FILES_IN_FLIGHT {
                let Some(action) = queue.next() else { break };
                self.start(action);
            }
            if self.fetching.is_empty() {
                break false;
            }
            tokio::select! {
                biased;
                () = folder.stop.cancelled() => return true,
                Some(done) = self.fetching.join_next() => self.finished(done),
                () = &mut patience, if !impatient => impatient = true,
                // New work: the next round starts it while these downloads go on.
                () = folder.pull.notified(), if impatient => {
                    folder.pull.notify_one();
                    break true;
                }
            }
        };
        let waiting: Vec<Action> = queue.collect();
        folder.replan_names(waiting.iter().filter_map(Action::name));
        if interrupted {
            folder.replan_names(deletes.iter().filter_map(Action::name));
            return !(waiting.is_empty() && deletes.is_empty());
        }
        for action in deletes {
            if folder.stop.is_cancelled() {
                return true;
            }
            let result = apply::execute(&folder, &self.context, &action).await;
            self.report(&action, true, result);
        }
        false
    }

    fn start(&mut self, action: Action) {
        if let Some(name) = action.name() {
            self.in_flight.insert(name.to_owned());
        }
        let (folder, context) = (self.folder.clone(), self.context.clone());
        self.fetching.spawn(async move {
            let result = apply::execute(&folder, &context, &action).await;
            (action, result)
        });
    }

    /// Takes in a download that ended (between rounds too).
    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok((action, result)) => {
                if let Some(name) = action.name() {
                    self.in_flight.remove(name);
                    if self.deferred.remove(name) {
                        self.folder.pull.notify_one();
                    }
                }
                self.report(&action, false, result);
            }
            Err(e) => warn!(error = %e, "a download task failed"),
        }
        // Mid-round, the round settles itself when it ends.
        if self.fetching.is_empty() && !self.in_round {
            self.settle_round();
        }
    }

    /// After a round, or when its last download ended: errors are published, failed names
    /// planned again, and the folder idle once nothing is in flight.
    fn settle_round(&mut self) {
        let folder = &self.folder;
        if !self.errors.is_empty() {
            folder.events.emit(Event::FolderErrors {
                folder: folder.id.clone(),
                errors: self
                    .errors
                    .iter()
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .collect(),
            });
        }
        folder.set_pull_errors(self.errors.clone());
        folder.replan_names(self.errors.keys().map(String::as_str));
        if self.fetching.is_empty()
            && self.walk.is_none()
            && folder.pulling.swap(false, Ordering::Relaxed)
        {
            folder.note_pull_round(self.started.elapsed());
            if folder.state() == FolderState::Syncing {
                folder.set_state(FolderState::Idle);
            }
            folder.counts_changed.notify_one();
        }
        if std::mem::take(&mut self.rescan) {
            folder.rescan.notify_one();
        }
    }

    /// Records how an action went.
    fn report(&mut self, action: &Action, deleted: bool, result: Result<(), PullError>) {
        let folder = &self.folder;
        let name = action.name().unwrap_or_default().to_owned();
        if result.is_ok() {
            folder.note_synced(&name, deleted);
            if let Some(target) = action.target() {
                folder.events.emit(Event::RemoteChangeDetected {
                    folder: folder.id.clone(),
                    label: folder.label(),
                    path: target.name.clone(),
                    // Whether the name existed here before is not known at this point:
                    // a write is "modified", as Syncthing calls most of them.
                    action: if target.deleted {
                        DiskAction::Deleted
                    } else {
                        DiskAction::Modified
                    },
                    kind: target.kind,
                    modified_by: target.modified_by.to_string(),
                });
            }
        }
        folder.events.emit(Event::ItemFinished {
            folder: folder.id.clone(),
            item: name.clone(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        match result {
            Ok(()) => {}
            Err(PullError::ChangedLocally(_)) => {
                folder.replan_names([name.as_str()]);
                self.rescan = true;
            }
            Err(e) => {
                warn!(%name, error = %e, "pull failed");
                self.errors.insert(name, e.to_string());
            }
        }
    }

    /// Waits for every download in flight (tests: a round to its end).
    #[cfg(test)]
    async fn settle(&mut self) {
        while let Some(done) = self.fetching.join_next().await {
            self.finished(done);
        }
    }
}

#[cfg(test)]
mod append_tests;
#[cfg(test)]
mod paging_tests;
#[cfg(test)]
mod replace_tests;
#[cfg(test)]
mod tests;
