//! File-system notifications (inotify through the notify crate), debounced into rescans.
//!
//! A change anywhere in the folder wakes the folder's scan loop after a short quiet period,
//! so it reaches the index within about a second. Events about peerfold's own files (the
//! marker directory, temp files) are ignored. When watching is impossible (too many
//! watches, unsupported file system) the periodic rescan still catches every change.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::disk::scanner::MARKER_DIR;

/// How long the folder must be quiet before a rescan starts, unless configured.
pub(crate) const DEFAULT_QUIET: Duration = Duration::from_millis(250);

/// Watches the folder at `root` until `stop`, calling `changed` after each burst of
/// changes, once the folder has been `quiet` for that long.
pub(crate) async fn run(
    root: PathBuf,
    quiet: Duration,
    stop: CancellationToken,
    changed: impl Fn() + Send,
) {
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
            warn!(error = %e, "cannot watch; relying on periodic rescans");
            return;
        }
    };
    if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
        warn!(error = %e, "cannot watch; relying on periodic rescans");
        return;
    }
    debug!("watching");
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            event = rx.recv() => if event.is_none() { return },
        }
        // Wait for a quiet moment so a burst of writes costs one scan.
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                event = rx.recv() => if event.is_none() { return },
                () = tokio::time::sleep(quiet) => break,
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
    fn own_files_do_not_trigger_scans() {
        let root = Path::new("/f");
        assert!(is_internal(root, Path::new("/f/.peerfold/x")));
        assert!(is_internal(root, Path::new("/f/a/.peerfold.b.tmp")));
        assert!(!is_internal(root, Path::new("/f/a/b")));
        assert!(!is_internal(root, Path::new("/f/a/.peerfold")));
    }
}
