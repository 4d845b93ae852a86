//! A folder's scans: at start, when the watcher or a client asks, and every
//! `rescan_interval_s`; never beside a pull round or a folder action (the folder's `busy`
//! lock).
//!
//! Who wakes me: the watcher and `rescan` (clients, the puller after conflicts, settings
//! changes). Whom I wake: the index senders (`local_changed`), the puller (`pull`) and the
//! summary task (`counts_changed`) when a scan recorded changes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Folder, FolderState};
use crate::disk::scanner::{ChangeKind, ScanNotice};
use crate::disk::{scanner, versions};
use crate::events::{DiskAction, Event};
use crate::store::LocalChange;

/// How often a running scan announces its progress (Syncthing's scanProgressIntervalS).
const SCAN_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Why a scan did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ScanFailed {
    /// The scanner failed as a whole (root or marker missing, the index unusable, ...).
    #[error(transparent)]
    Scan(#[from] scanner::ScanError),
    /// The scan's thread died.
    #[error("the scan was interrupted")]
    Interrupted,
}

/// Scans a folder at start, when woken, and every `rescan_interval_s`.
pub(crate) async fn scan_loop(folder: super::FolderHandle) {
    loop {
        let interval = Duration::from_secs(folder.config().rescan_interval_s.max(1));
        let (root, settings) = (folder.path(), versions::Settings::of(&folder.config()));
        match tokio::task::spawn_blocking(move || versions::clean(&root, &settings)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(removed = n, "cleaned out old versions"),
            Ok(Err(e)) => warn!(error = %e, "cleaning versions"),
            Err(e) => warn!(error = %e, "cleaning versions"),
        }
        if let Err(e) = folder.scan().await {
            warn!(error = %e, "scan failed");
        }
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = folder.rescan.notified() => {}
            () = folder.watched.notified() => {
                if !while_pulling(&folder, WATCH_DEFERRED_AT_MOST).await {
                    return;
                }
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// How long a change the watcher saw may wait for the puller to finish. Every file the
/// puller installs wakes the watcher, and each rescan holds the folder alone: rescanning
/// on each wake-up during a long pull cost a walk of the whole folder per few files (a
/// first pull of a million files slowed from about a thousand files a second to 70).
/// Syncthing's folder likewise scans between pulls.
const WATCH_DEFERRED_AT_MOST: Duration = Duration::from_secs(60);

/// Waits while the puller has work, at most `limit`; false if the folder stopped. (Not the
/// folder's state: a scan shows its own, and the next watched change found the folder
/// "idle" after each scan, so scans ran back to back beside a long pull.)
async fn while_pulling(folder: &Folder, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while folder.pulling.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return false,
            // An explicit request does not wait.
            () = folder.rescan.notified() => return true,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    true
}

impl Folder {
    /// Scans the folder now (between pull rounds), and tells the index senders and the
    /// puller when something changed. Returns whether it did.
    pub async fn scan(self: &super::FolderHandle) -> Result<bool, ScanFailed> {
        let busy = self.busy.write().await;
        let (folder, span) = (self.clone(), tracing::Span::current());
        let result = tokio::task::spawn_blocking(move || span.in_scope(|| folder.scan_now())).await;
        drop(busy);
        let changed = result.map_err(|_| ScanFailed::Interrupted)??;
        if changed {
            self.local_changed.notify_waiters();
            // Local changes can settle or create needs.
            self.replan_everything();
            self.pull.notify_one();
            self.counts_changed.notify_one();
            self.events.emit(Event::LocalIndexUpdated {
                folder: self.id.clone(),
            });
        }
        Ok(changed)
    }

    /// Runs one scan on this (blocking) thread; returns whether anything changed. The
    /// scanner takes the store's writer for one batch at a time, never for the walk.
    fn scan_now(&self) -> Result<bool, scanner::ScanError> {
        let root = self.path();
        self.set_state(FolderState::Scanning);
        let started = Instant::now();
        let mut last_event: Option<Instant> = None;
        let label = self.label();
        let ignore_permissions = self.config().ignore_permissions;
        let report = scanner::scan_folder_noting(
            &self.store,
            &self.id,
            &root,
            self.me.short(),
            ignore_permissions,
            |notice| {
                let p = match notice {
                    ScanNotice::Progress(p) => p,
                    ScanNotice::Recorded(change, kind) => {
                        self.note_local_change(&label, change, kind);
                        return;
                    }
                };
                self.set_scan_progress(Some(p));
                // Announced once there is something to hash, then every couple of seconds.
                if p.to_hash > 0 && last_event.is_none_or(|t| t.elapsed() >= SCAN_PROGRESS_EVERY) {
                    last_event = Some(Instant::now());
                    let rate = p.hashed as f64 / started.elapsed().as_secs_f64().max(0.001);
                    self.events.emit(Event::FolderScanProgress {
                        folder: self.id.clone(),
                        current: p.hashed,
                        total: p.to_hash,
                        rate: rate.round(),
                    });
                }
            },
        );
        self.set_scan_progress(None);
        let report = match report {
            Ok(report) => {
                self.set_state(if self.pulling.load(Ordering::Relaxed) {
                    FolderState::Syncing
                } else {
                    FolderState::Idle
                });
                self.note_scan(started.elapsed());
                report
            }
            Err(e) => {
                self.set_state(FolderState::Error(e.to_string()));
                return Err(e);
            }
        };
        for issue in &report.issues {
            warn!(name = %issue.name, problem = %issue.message, "scan");
        }
        let changed = report.added + report.changed + report.deleted + report.ignored > 0;
        if changed {
            info!(
                added = report.added,
                changed = report.changed,
                deleted = report.deleted,
                "scanned"
            );
        }
        Ok(changed)
    }
}

impl Folder {
    /// A `LocalChangeDetected` event for a change a scan recorded (a name newly ignored is
    /// not a change on disk).
    fn note_local_change(&self, label: &str, change: &LocalChange, kind: ChangeKind) {
        let action = match kind {
            ChangeKind::Ignored => return,
            _ if change.deleted => DiskAction::Deleted,
            ChangeKind::Added => DiskAction::Added,
            ChangeKind::Changed => DiskAction::Modified,
        };
        self.events.emit(Event::LocalChangeDetected {
            folder: self.id.clone(),
            label: label.to_owned(),
            path: change.name.clone(),
            action,
            kind: change.kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use std::sync::atomic::Ordering;

    use super::while_pulling;
    use crate::testing::Node;

    #[tokio::test(start_paused = true)]
    async fn a_watched_change_waits_while_the_folder_syncs_at_most_the_limit() {
        let node = Node::new(&[]);
        let folder = node.folder();
        let limit = Duration::from_secs(60);
        // Idle: at once.
        let start = Instant::now();
        assert!(while_pulling(&folder, limit).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Pulling: until it is done.
        folder.pulling.store(true, Ordering::Relaxed);
        let waiting = tokio::spawn({
            let folder = folder.clone();
            async move { while_pulling(&folder, limit).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished());
        folder.pulling.store(false, Ordering::Relaxed);
        assert!(waiting.await.unwrap());
        assert!(start.elapsed() < Duration::from_secs(6));
        // Pulling for good: not longer than the limit.
        folder.pulling.store(true, Ordering::Relaxed);
        let start = Instant::now();
        assert!(while_pulling(&folder, limit).await);
        assert!((limit..limit + Duration::from_secs(1)).contains(&start.elapsed()));
        // An explicit rescan does not wait.
        let start = Instant::now();
        folder.rescan.notify_one();
        assert!(while_pulling(&folder, limit).await);
        assert!(start.elapsed() < Duration::from_secs(1));
        // A stopped folder ends the wait.
        folder.stop.cancel();
        assert!(!while_pulling(&folder, limit).await);
    }
}
