//! The engine's event log: typed events, numbered, of which the newest `CAPACITY` are kept
//! for clients that poll (`GET /rest/events?since=N`; the REST API alone turns them into
//! Syncthing's JSON). A client that falls behind sees a gap in the IDs, as with Syncthing.
//! Changes seen on disk (`LocalChangeDetected`, `RemoteChangeDetected`: one per name, so a
//! big scan brings thousands) go to a log of their own with its own numbers
//! (`/rest/events/disk`, as Syncthing keeps them apart), so they never push the others out.
//!
//! Who wakes me: every task that emits. Whom I wake: pollers waiting in [`EventLog::wait`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::watch;

use crate::model::counts::FolderSummary;

/// Events kept for clients that poll.
const CAPACITY: usize = 1000;

/// What a folder is doing, as events and status name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateName {
    /// Nothing to do.
    Idle,
    /// Scanning its files.
    Scanning,
    /// Pulling from peers.
    Syncing,
    /// The last scan or pull failed as a whole.
    Error,
    /// Stopped by the user.
    Paused,
}

impl StateName {
    /// Syncthing's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Scanning => "scanning",
            Self::Syncing => "syncing",
            Self::Error => "error",
            Self::Paused => "paused",
        }
    }
}

/// Which side dialed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    /// This device dialed it.
    QuicClient,
    /// The peer dialed it.
    QuicServer,
    /// This device dialed it through a relay.
    RelayClient,
    /// The peer dialed it through a relay.
    RelayServer,
}

impl ConnectionKind {
    /// The kind of a link on `path` that this device dialed (or not).
    pub fn of(path: crate::peers::PathKind, dialed: bool) -> Self {
        use crate::peers::PathKind;
        match (path, dialed) {
            (PathKind::Direct, true) => Self::QuicClient,
            (PathKind::Direct, false) => Self::QuicServer,
            (PathKind::Relayed, true) => Self::RelayClient,
            (PathKind::Relayed, false) => Self::RelayServer,
        }
    }
}

/// What an item event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemAction {
    /// Written or changed.
    Update,
    /// Removed.
    Delete,
}

/// How a peer's copy of a folder stands, as far as this device knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteState {
    /// Connected: what it announced is current.
    Valid,
    /// Paused here.
    Paused,
    /// Not connected.
    Unknown,
}

/// A device that knocked without being accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDeviceSeen {
    /// Its ID.
    pub device: DeviceId,
    /// The name it gave (empty before its Hello).
    pub name: String,
    /// Where it came from.
    pub address: String,
}

/// A folder a device offered that is not shared with it here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFolderSeen {
    /// The device.
    pub device: DeviceId,
    /// The folder's ID.
    pub folder: String,
    /// Its label.
    pub label: String,
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The engine runs.
    StartupComplete {
        /// This device.
        device: DeviceId,
    },
    /// A folder moved from one state to another.
    StateChanged {
        /// The folder.
        folder: String,
        /// Before.
        from: StateName,
        /// After.
        to: StateName,
    },
    /// A scan recorded local changes.
    LocalIndexUpdated {
        /// The folder.
        folder: String,
    },
    /// How far a running scan has come.
    FolderScanProgress {
        /// The folder.
        folder: String,
        /// Bytes hashed.
        current: u64,
        /// Bytes to hash.
        total: u64,
        /// Bytes per second so far.
        rate: f64,
    },
    /// A peer's index batch was stored.
    RemoteIndexUpdated {
        /// The peer.
        device: DeviceId,
        /// The folder.
        folder: String,
        /// Entries in the batch.
        items: usize,
    },
    /// A peer connected and said hello.
    DeviceConnected {
        /// The peer.
        device: DeviceId,
        /// The name it gave.
        name: String,
        /// Where it is.
        address: String,
        /// Its program.
        client_name: String,
        /// Its program's version.
        client_version: String,
        /// Which side dialed.
        kind: ConnectionKind,
        /// A direct path hole punching opened.
        punched: bool,
    },
    /// A peer's connection ended.
    DeviceDisconnected {
        /// The peer.
        device: DeviceId,
        /// Why (empty when it ended cleanly).
        error: String,
    },
    /// A device knocked without being accepted.
    PendingDeviceAdded(PendingDeviceSeen),
    /// A pending device was forgotten.
    PendingDeviceRemoved {
        /// The device.
        device: DeviceId,
    },
    /// A device offered a folder that is not shared with it here.
    PendingFolderAdded(PendingFolderSeen),
    /// Discovery (mDNS or a global server) learned a new address for a device, configured
    /// or not.
    DeviceDiscovered {
        /// The device.
        device: DeviceId,
        /// Every address known for it now.
        addresses: Vec<String>,
    },
    /// A pending folder offer was forgotten (by `device`, or by everyone for `None`).
    PendingFolderRemoved {
        /// The folder.
        folder: String,
        /// The device whose offer went.
        device: Option<DeviceId>,
    },
    /// The puller starts on a name.
    ItemStarted {
        /// The folder.
        folder: String,
        /// The name.
        item: String,
        /// What it does.
        action: ItemAction,
    },
    /// The puller is done with a name.
    ItemFinished {
        /// The folder.
        folder: String,
        /// The name.
        item: String,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// Names a pull round could not bring up to date.
    FolderErrors {
        /// The folder.
        folder: String,
        /// (name, why).
        errors: Vec<(String, String)>,
    },
    /// This device's counts of a folder.
    FolderSummary {
        /// The folder.
        folder: String,
        /// The counts.
        summary: FolderSummary,
        /// Its state.
        state: StateName,
        /// When the state last changed.
        state_changed: jiff::Timestamp,
        /// Items that failed to sync.
        errors: usize,
        /// Its local sequence.
        sequence: u64,
    },
    /// How far a peer's copy of a folder has come.
    FolderCompletion {
        /// The folder.
        folder: String,
        /// The peer.
        device: DeviceId,
        /// Its counts, from what it announced.
        summary: FolderSummary,
        /// Whether what it announced is current.
        remote_state: RemoteState,
        /// This device's local sequence of the folder.
        sequence: u64,
    },
    /// The configuration changed and was saved.
    ConfigSaved,
    /// A scan recorded a change of a name on disk.
    LocalChangeDetected {
        /// The folder.
        folder: String,
        /// Its label.
        label: String,
        /// The name.
        path: String,
        /// What happened to it.
        action: DiskAction,
        /// What it is (was, when deleted).
        kind: crate::model::entry::FileKind,
    },
    /// The puller wrote a peer's change of a name to disk.
    RemoteChangeDetected {
        /// The folder.
        folder: String,
        /// Its label.
        label: String,
        /// The name.
        path: String,
        /// What happened to it.
        action: DiskAction,
        /// What it is (was, when deleted).
        kind: crate::model::entry::FileKind,
        /// The short ID of the device that made the change.
        modified_by: String,
    },
}

impl Event {
    /// A change seen on disk: kept in the disk log.
    pub fn is_disk(&self) -> bool {
        matches!(
            self,
            Self::LocalChangeDetected { .. } | Self::RemoteChangeDetected { .. }
        )
    }
}

/// What a change did to a name (Syncthing's `action` of the disk events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskAction {
    /// The name is new.
    Added,
    /// The name changed.
    Modified,
    /// The name is gone.
    Deleted,
}

impl DiskAction {
    /// `added`, `modified` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
        }
    }
}

/// One event as it was logged.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedEvent {
    /// Its number, from 1.
    pub id: u64,
    /// When.
    pub time: jiff::Timestamp,
    /// What.
    pub event: Arc<Event>,
}

/// Appends events and wakes pollers: the disk events in a log of their own.
#[derive(Debug, Default)]
pub struct EventLog {
    general: Ring,
    disk: Ring,
}

impl EventLog {
    /// Records an event.
    pub(crate) fn emit(&self, event: Event) {
        if event.is_disk() {
            self.disk.push(event);
        } else {
            self.general.push(event);
        }
    }

    /// Events (not disk events) after `since` that `wanted` keeps, at most `limit` of the
    /// newest (0: all); waits up to `timeout` for the first one.
    pub async fn wait(
        &self,
        since: u64,
        wanted: impl Fn(&Event) -> bool,
        limit: usize,
        timeout: Duration,
    ) -> Vec<LoggedEvent> {
        self.general.wait(since, wanted, limit, timeout).await
    }

    /// Like [`EventLog::wait`], over the disk events (numbered on their own).
    pub async fn wait_disk(
        &self,
        since: u64,
        wanted: impl Fn(&Event) -> bool,
        limit: usize,
        timeout: Duration,
    ) -> Vec<LoggedEvent> {
        self.disk.wait(since, wanted, limit, timeout).await
    }

    #[cfg(test)]
    pub(crate) fn after(
        &self,
        since: u64,
        wanted: impl Fn(&Event) -> bool,
        limit: usize,
    ) -> Vec<LoggedEvent> {
        self.general.after(since, wanted, limit)
    }
}

/// One numbered ring of events.
#[derive(Debug)]
struct Ring {
    events: Mutex<VecDeque<LoggedEvent>>,
    /// The last event ID, for waiters.
    last: watch::Sender<u64>,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            last: watch::Sender::new(0),
        }
    }
}

impl Ring {
    /// Records an event. (The lock guards a short push; a panic cannot leave the ring
    /// half-written, so a poisoned lock is still usable.)
    fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let id = events.back().map_or(1, |e| e.id + 1);
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(LoggedEvent {
            id,
            time: jiff::Timestamp::now(),
            event: Arc::new(event),
        });
        drop(events);
        self.last.send_replace(id);
    }

    async fn wait(
        &self,
        since: u64,
        wanted: impl Fn(&Event) -> bool,
        limit: usize,
        timeout: Duration,
    ) -> Vec<LoggedEvent> {
        let mut last = self.last.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.after(since, &wanted, limit);
            if !found.is_empty() {
                return found;
            }
            let changed = tokio::time::timeout_at(deadline, last.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Vec::new();
            }
        }
    }

    fn after(&self, since: u64, wanted: impl Fn(&Event) -> bool, limit: usize) -> Vec<LoggedEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<LoggedEvent> = events
            .iter()
            .filter(|e| e.id > since && wanted(&e.event))
            .cloned()
            .collect();
        if limit > 0 && found.len() > limit {
            found.drain(..found.len() - limit);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_event(folder: &str) -> Event {
        Event::LocalIndexUpdated {
            folder: folder.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polling_returns_what_came_after_and_waits_for_more() {
        let log = Arc::new(EventLog::default());
        log.emit(Event::ConfigSaved);
        log.emit(folder_event("f"));
        let all = log.wait(0, |_| true, 0, Duration::ZERO).await;
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2]);
        let filtered = log
            .wait(
                0,
                |e| matches!(e, Event::LocalIndexUpdated { .. }),
                0,
                Duration::ZERO,
            )
            .await;
        assert_eq!(filtered.len(), 1);
        assert_eq!(log.wait(0, |_| true, 1, Duration::ZERO).await[0].id, 2);
        assert!(
            log.wait(2, |_| true, 0, Duration::from_millis(10))
                .await
                .is_empty()
        );

        let later = {
            let log = log.clone();
            tokio::spawn(async move { log.wait(2, |_| true, 0, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.emit(folder_event("g"));
        let got = later.await.unwrap();
        assert_eq!(got[0].id, 3);
        assert_eq!(*got[0].event, folder_event("g"));
    }

    #[tokio::test(start_paused = true)]
    async fn disk_events_are_numbered_apart_and_never_push_the_others_out() {
        let log = EventLog::default();
        log.emit(Event::ConfigSaved);
        for i in 0..CAPACITY + 10 {
            log.emit(Event::LocalChangeDetected {
                folder: "f".into(),
                label: "F".into(),
                path: format!("n{i}"),
                action: DiskAction::Added,
                kind: crate::model::entry::FileKind::File,
            });
        }
        let general = log.wait(0, |_| true, 0, Duration::ZERO).await;
        assert_eq!(general.len(), 1, "the disk events went elsewhere");
        assert_eq!(*general[0].event, Event::ConfigSaved);
        let disk = log.wait_disk(0, |_| true, 0, Duration::ZERO).await;
        assert_eq!(disk.len(), CAPACITY);
        assert_eq!(disk[0].id, 11);
        assert!(disk.iter().all(|e| e.event.is_disk()));
    }

    #[test]
    fn the_oldest_events_make_room() {
        let log = EventLog::default();
        for _ in 0..CAPACITY + 5 {
            log.emit(Event::ConfigSaved);
        }
        let events = log.after(0, |_| true, 0);
        assert_eq!(events.len(), CAPACITY);
        assert_eq!(events[0].id, 6);
    }
}
