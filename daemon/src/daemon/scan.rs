//! A folder's scans: at start, when the watcher or a client asks, and every
//! `rescan_interval_s`; never beside a pull round (the folder's `busy` lock).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Folder, FolderState, Shared};
use crate::puller;
use peerfold_engine::disk::scanner;

/// Scans a folder at start, when woken, and every `rescan_interval_s`.
pub(super) async fn scan_loop(shared: Arc<Shared>, folder: Arc<Folder>) {
    let folder_id = folder.id.clone();
    loop {
        let interval = Duration::from_secs(folder.config().rescan_interval_s.max(1));
        match puller::clean_versions(&folder) {
            Ok(0) => {}
            Ok(n) => info!(folder = %folder_id, removed = n, "cleaned out old versions"),
            Err(e) => warn!(folder = %folder_id, error = %e, "cleaning versions"),
        }
        if let Err(e) = scan(&shared, &folder_id).await {
            warn!(folder = %folder_id, error = %e, "scan failed");
        }
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = folder.rescan.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Scans a folder between pull rounds and tells the index senders and the puller when
/// something changed. Returns whether it did.
pub(crate) async fn scan(shared: &Arc<Shared>, folder_id: &str) -> Result<bool, String> {
    let folder = shared
        .folder(folder_id)
        .ok_or_else(|| format!("no folder {folder_id:?}"))?;
    let (shared2, id) = (shared.clone(), folder_id.to_owned());
    let busy = folder.busy.lock().await;
    let result = tokio::task::spawn_blocking(move || scan_now(&shared2, &id)).await;
    drop(busy);
    let changed = result
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if changed {
        folder.local_changed.notify_waiters();
        // Local changes can settle or create needs.
        folder.replan_everything();
        folder.pull.notify_one();
        folder.counts_changed.notify_one();
        folder.events.emit(
            "LocalIndexUpdated",
            serde_json::json!({ "folder": folder_id }),
        );
    }
    Ok(changed)
}

/// How often a running scan announces its progress (Syncthing's scanProgressIntervalS).
const SCAN_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Syncthing's FolderScanProgress: bytes hashed of those found changed, and the rate.
fn emit_scan_progress(folder: &Folder, progress: scanner::ScanProgress, elapsed: Duration) {
    let rate = progress.hashed as f64 / elapsed.as_secs_f64().max(0.001);
    folder.events.emit(
        "FolderScanProgress",
        serde_json::json!({
            "folder": folder.id,
            "current": progress.hashed,
            "total": progress.to_hash,
            "rate": rate.round(),
        }),
    );
}

/// Runs one scan; returns whether anything changed.
fn scan_now(shared: &Shared, folder_id: &str) -> Result<bool, scanner::ScanError> {
    let Some(folder) = shared.folder(folder_id) else {
        return Ok(false);
    };
    let root: PathBuf = folder.path();
    folder.set_state(FolderState::Scanning);
    let started = std::time::Instant::now();
    let mut last_event: Option<std::time::Instant> = None;
    let store = shared.store_handle();
    let report = scanner::scan_folder(store, folder_id, &root, shared.me.short(), |p| {
        folder.set_scan_progress(Some(p));
        // Announced once there is something to hash, then every couple of seconds.
        if p.to_hash > 0 && last_event.is_none_or(|t| t.elapsed() >= SCAN_PROGRESS_EVERY) {
            last_event = Some(std::time::Instant::now());
            emit_scan_progress(&folder, p, started.elapsed());
        }
    });
    folder.set_scan_progress(None);
    let report = match report {
        Ok(report) => {
            folder.set_state(FolderState::Idle);
            folder.note_scan(started.elapsed());
            report
        }
        Err(e) => {
            folder.set_state(FolderState::Error(e.to_string()));
            return Err(e);
        }
    };
    for issue in &report.issues {
        warn!(folder = %folder_id, name = %issue.name, problem = %issue.message, "scan");
    }
    let changed = report.added + report.changed + report.deleted + report.ignored > 0;
    if changed {
        info!(
            folder = %folder_id,
            added = report.added,
            changed = report.changed,
            deleted = report.deleted,
            "scanned"
        );
    }
    Ok(changed)
}
