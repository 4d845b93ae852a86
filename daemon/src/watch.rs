//! File-system notifications (inotify through the notify crate), debounced into rescans.
//!
//! A change anywhere in the folder wakes the folder's scan loop after a short quiet period,
//! so it reaches the index within about a second. Events about peerfold's own files (the
//! marker directory, temp files) are ignored. When watching is impossible (too many
//! watches, unsupported file system) the periodic rescan still catches every change.

use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How long the folder must be quiet before a rescan starts.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Watches one folder until the daemon stops.
pub(crate) async fn run(folder: Arc<crate::daemon::Folder>) {
    let folder_id = folder.id.clone();
    let root = folder.path();
    // A trigger channel: one pending wake-up is all that matters.
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let filter_root = root.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (our own scans and peers' block requests open files) change nothing.
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
            && event.paths.iter().any(|p| !is_internal(&filter_root, p))
        {
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            warn!(folder = %folder_id, error = %e, "cannot watch; relying on periodic rescans");
            return;
        }
    };
    if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
        warn!(folder = %folder_id, error = %e, "cannot watch; relying on periodic rescans");
        return;
    }
    debug!(folder = %folder_id, "watching");
    loop {
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            event = rx.recv() => if event.is_none() { return },
        }
        // Wait for a quiet moment so a burst of writes costs one scan.
        loop {
            tokio::select! {
                biased;
                () = folder.stop.cancelled() => return,
                event = rx.recv() => if event.is_none() { return },
                () = tokio::time::sleep(DEBOUNCE) => break,
            }
        }
        debug!(folder = %folder_id, "change noticed; rescanning");
        folder.rescan.notify_one();
    }
}

/// Paths peerfold writes itself: the root's marker directory and temp files anywhere.
fn is_internal(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let mut components = relative.components();
    if let Some(Component::Normal(first)) = components.clone().next()
        && first == peerfold_engine::disk::scanner::MARKER_DIR
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
    fn own_files_do_not_trigger_scans() {
        let root = Path::new("/f");
        assert!(is_internal(root, Path::new("/f/.peerfold/x")));
        assert!(is_internal(root, Path::new("/f/a/.peerfold.b.tmp")));
        assert!(!is_internal(root, Path::new("/f/a/b")));
        assert!(!is_internal(root, Path::new("/f/a/.peerfold")));
    }
}
