//! File-system notifications (inotify through the notify crate), debounced into rescans.
//!
//! A change anywhere in the folder wakes the folder's scan loop after a short quiet period,
//! so it reaches the index within about a second. Events about peerfold's own files (the
//! marker directory, temp files) are ignored. When watching is impossible (too many
//! watches, unsupported file system) the periodic rescan still catches every change.
//!
//! All folders share one watcher (`Watchers`): one inotify instance for the whole daemon,
//! events routed to the folders whose root holds the path. (One instance per folder ran
//! into the kernel's limit of 128 instances per user with a few hundred folders.)

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{Config, EventKindMask, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::disk::scanner::MARKER_DIR;

/// What the kernel is asked to report: every change and the close after a write, not opens.
/// Opens (IN_OPEN) change nothing, yet every read made one: the scanner hashing a file,
/// a peer's block request served from it, a download copying a local block; the notify
/// thread woke for each only to drop it (2.9% of the sending daemon's CPU in bench case
/// (b)).
const WATCHED_KINDS: EventKindMask = EventKindMask::CORE.union(EventKindMask::ACCESS_CLOSE);

/// How long the folder must be quiet before a rescan starts, unless configured.
pub(crate) const DEFAULT_QUIET: Duration = Duration::from_millis(250);
/// The same when the last change was a finished one (a file closed after writing, a name
/// created, removed or renamed), unless a delay is configured: the change is complete,
/// so it need not wait out a writer that may still be busy.
pub(crate) const SETTLED_QUIET: Duration = Duration::from_millis(40);

/// How long the folder must be quiet before a rescan starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quiet {
    /// After a change that may go on (data written to a file still open).
    pub(crate) after_change: Duration,
    /// After a finished change.
    pub(crate) after_settled: Duration,
}

impl Quiet {
    /// The folder's `fsWatcherDelayS` for both, or unset the defaults.
    pub(crate) fn of(delay_s: Option<f64>) -> Self {
        match delay_s {
            Some(seconds) => {
                let delay = Duration::from_secs_f64(seconds);
                Self {
                    after_change: delay,
                    after_settled: delay,
                }
            }
            None => Self {
                after_change: DEFAULT_QUIET,
                after_settled: SETTLED_QUIET,
            },
        }
    }
}

/// What a file-system event says of the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// It may go on (data written).
    Ongoing,
    /// It is complete.
    Settled,
}

/// Watched roots and where to send word of a change under each.
type Routes = Arc<Mutex<Vec<(PathBuf, mpsc::Sender<Change>)>>>;

/// The daemon's one file-system watcher, shared by every folder.
#[derive(Default)]
pub(crate) struct Watchers {
    /// Made at the first folder (the notify thread starts with it).
    watcher: Mutex<Option<RecommendedWatcher>>,
    routes: Routes,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

impl Watchers {
    /// Starts watching `root`; a change under it (not peerfold's own files) is sent to
    /// `tx`. Watching ends when the returned guard is dropped.
    fn watch(
        self: &Arc<Self>,
        root: &Path,
        tx: mpsc::Sender<Change>,
    ) -> notify::Result<WatchGuard> {
        // Short critical sections only: the notify thread takes `routes` for each event.
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if watcher.is_none() {
            let routes = self.routes.clone();
            *watcher = Some(RecommendedWatcher::new(
                move |event| route(&routes, event),
                Config::default().with_event_kinds(WATCHED_KINDS),
            )?);
        }
        if let Some(watcher) = watcher.as_mut() {
            watcher.watch(root, RecursiveMode::Recursive)?;
        }
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((root.to_owned(), tx));
        Ok(WatchGuard {
            watchers: self.clone(),
            root: root.to_owned(),
        })
    }
}

/// Sends word of `event` to the folders whose root holds one of its paths.
fn route(routes: &Routes, event: notify::Result<notify::Event>) {
    let Ok(event) = event else { return };
    let Some(change) = change_of(&event.kind) else {
        return;
    };
    let routes = routes.lock().unwrap_or_else(PoisonError::into_inner);
    for (root, tx) in routes.iter() {
        if event
            .paths
            .iter()
            .any(|p| p.starts_with(root) && !is_internal(root, p))
        {
            // Full: the scan loop is behind on events already; this one changes nothing.
            let _ = tx.try_send(change);
        }
    }
}

/// A watched root; dropping it stops watching.
struct WatchGuard {
    watchers: Arc<Watchers>,
    root: PathBuf,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.watchers
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(root, _)| *root != self.root);
        // The watcher's lock may be held while another folder's recursive watch walks its
        // tree: never waited for on a runtime thread.
        let (watchers, root) = (self.watchers.clone(), std::mem::take(&mut self.root));
        let unwatch = move || {
            let mut watcher = watchers
                .watcher
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A folder restarted meanwhile (settings changed) watches the root again: it
            // routes the root under this same lock, so it is seen here.
            let again = watchers
                .routes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|(r, _)| *r == root);
            if let Some(watcher) = watcher.as_mut().filter(|_| !again) {
                let _ = watcher.unwatch(&root);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(unwatch)),
            Err(_) => unwatch(),
        }
    }
}

/// What an event of `kind` says of the change; `None` for reads (our own scans and peers'
/// block requests open files), which change nothing.
fn change_of(kind: &notify::EventKind) -> Option<Change> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Settled),
        EventKind::Access(_) => None,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
            Some(Change::Settled)
        }
        _ => Some(Change::Ongoing),
    }
}

/// Watches the folder at `root` until `stop`, calling `changed` after each burst of
/// changes, once the folder has been `quiet` for that long.
pub(crate) async fn run(
    watchers: Arc<Watchers>,
    root: PathBuf,
    quiet: Quiet,
    stop: CancellationToken,
    changed: impl Fn() + Send,
) {
    // Only the kind of the last event matters: a few in the queue are plenty.
    let (tx, mut rx) = mpsc::channel::<Change>(16);
    // Adding a recursive watch walks the tree (a watch per directory): off the runtime.
    let watching = {
        let (watchers, root) = (watchers.clone(), root.clone());
        tokio::task::spawn_blocking(move || watchers.watch(&root, tx)).await
    };
    let _guard = match watching {
        Ok(Ok(guard)) => guard,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot watch; relying on periodic rescans");
            return;
        }
        Err(_) => return,
    };
    debug!("watching");
    loop {
        let mut last = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            event = rx.recv() => match event { Some(change) => change, None => return },
        };
        // Wait for a quiet moment so a burst of writes costs one scan; shorter after a
        // finished change.
        loop {
            let wait = match last {
                Change::Ongoing => quiet.after_change,
                Change::Settled => quiet.after_settled,
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                event = rx.recv() => match event { Some(change) => last = change, None => return },
                () = tokio::time::sleep(wait) => break,
            }
        }
        debug!("change noticed; rescanning");
        changed();
    }
}

/// Paths peerfold writes itself: the root's marker directory and temp files anywhere.
fn is_internal(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let mut components = relative.components();
    if let Some(Component::Normal(first)) = components.clone().next()
        && first == MARKER_DIR
    {
        return true;
    }
    components.any(|c| {
        matches!(c, Component::Normal(name)
            if name.to_str().is_some_and(|n| n.starts_with(".peerfold.") && n.ends_with(".tmp")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_file_or_a_new_name_is_a_finished_change_and_a_read_none() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
        };
        let settled = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
        ];
        for kind in settled {
            assert_eq!(change_of(&kind), Some(Change::Settled), "{kind:?}");
        }
        assert_eq!(
            change_of(&EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Some(Change::Ongoing)
        );
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert_eq!(change_of(&kind), None, "{kind:?}");
        }
        // A configured delay holds for both; unset, a finished change waits less.
        assert_eq!(Quiet::of(Some(2.0)).after_settled, Duration::from_secs(2));
        assert!(Quiet::of(None).after_settled < Quiet::of(None).after_change);
    }

    #[test]
    fn own_files_do_not_trigger_scans() {
        let root = Path::new("/f");
        assert!(is_internal(root, Path::new("/f/.peerfold/x")));
        assert!(is_internal(root, Path::new("/f/a/.peerfold.b.tmp")));
        assert!(!is_internal(root, Path::new("/f/a/b")));
        assert!(!is_internal(root, Path::new("/f/a/.peerfold")));
    }

    #[test]
    fn events_go_to_the_folder_that_holds_the_path() {
        let routes: Routes = Arc::default();
        let (tx_a, mut rx_a) = mpsc::channel(1);
        let (tx_b, mut rx_b) = mpsc::channel(1);
        routes.lock().unwrap().push(("/f/a".into(), tx_a));
        routes.lock().unwrap().push(("/f/ab".into(), tx_b));
        let event = |path: &str| {
            Ok(
                notify::Event::new(notify::EventKind::Create(notify::event::CreateKind::File))
                    .add_path(path.into()),
            )
        };
        route(&routes, event("/f/ab/x"));
        assert!(rx_a.try_recv().is_err(), "/f/a does not hold /f/ab/x");
        assert!(rx_b.try_recv().is_ok());
        route(&routes, event("/f/a/.peerfold/index"));
        assert!(rx_a.try_recv().is_err(), "peerfold's own files");
        route(&routes, event("/f/a/y"));
        assert!(rx_a.try_recv().is_ok());
        let read = notify::Event::new(notify::EventKind::Access(notify::event::AccessKind::Any))
            .add_path("/f/a/y".into());
        route(&routes, Ok(read));
        assert!(rx_a.try_recv().is_err(), "reads change nothing");
    }
}
