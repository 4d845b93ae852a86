//! A folder's counts as `peerfold status` and the REST API show them: what one device has,
//! what the global version holds, and what that device still needs.

use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use serde_json::json;

use crate::daemon::{Folder, Shared};
use peerfold_engine::model::entry::{FileEntry, FileKind};
use peerfold_engine::model::planner::{self, Announced};
use peerfold_engine::store::StoreError;

/// Entries by kind, and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) files: u64,
    pub(crate) directories: u64,
    pub(crate) symlinks: u64,
    pub(crate) deleted: u64,
    pub(crate) bytes: u64,
}

impl Counts {
    fn add(&mut self, entry: &FileEntry) {
        if entry.deleted {
            self.deleted += 1;
            return;
        }
        match entry.kind {
            FileKind::File => self.files += 1,
            FileKind::Directory => self.directories += 1,
            FileKind::Symlink => self.symlinks += 1,
        }
        self.bytes += entry.size;
    }

    /// Files, directories and symlinks (not deletions).
    pub(crate) fn items(&self) -> u64 {
        self.files + self.directories + self.symlinks
    }
}

/// One folder's counts from one device's point of view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FolderSummary {
    /// What the device has (deletions counted apart).
    pub(crate) local: Counts,
    /// The global version of every name.
    pub(crate) global: Counts,
    /// What the device lacks of the global version; `deleted` counts deletions it has
    /// not carried out yet.
    pub(crate) need: Counts,
}

impl FolderSummary {
    /// Syncthing's completion percentage: the share of global bytes the device has.
    pub(crate) fn completion(&self) -> f64 {
        if self.global.bytes == 0 {
            if self.need.items() + self.need.deleted == 0 {
                100.0
            } else {
                95.0
            }
        } else {
            100.0 * (1.0 - self.need.bytes as f64 / self.global.bytes as f64)
        }
    }
}

/// This device's view of the folder.
pub(crate) fn folder_summary(
    shared: &Shared,
    folder: &Folder,
) -> Result<FolderSummary, StoreError> {
    device_summary(shared, folder, shared.me)
}

/// `device`'s view of the folder, from what it announced (this device's own entries for
/// `shared.me`).
pub(crate) fn device_summary(
    shared: &Shared,
    folder: &Folder,
    device: DeviceId,
) -> Result<FolderSummary, StoreError> {
    Ok(device_summaries(shared, folder, &[device])?.remove(0))
}

/// Several devices' views of the folder from one walk of the index. Walks on a read-only
/// connection of its own, so the walk does not hold up the writer.
pub(crate) fn device_summaries(
    shared: &Shared,
    folder: &Folder,
    devices: &[DeviceId],
) -> Result<Vec<FolderSummary>, StoreError> {
    let mut summaries = vec![FolderSummary::default(); devices.len()];
    let reader = shared.store().reader()?;
    reader.for_each_name(folder.idx, shared.me, |entries| {
        let candidates: Vec<Announced<'_>> = entries
            .iter()
            .map(|(device, entry)| Announced {
                device: *device,
                entry,
            })
            .collect();
        let global = planner::global(&candidates);
        for (device, summary) in devices.iter().zip(&mut summaries) {
            let theirs = entries.iter().find(|(d, _)| d == device).map(|(_, e)| e);
            if let Some(e) = theirs.filter(|e| !e.invalid) {
                summary.local.add(e);
            }
            let Some(g) = &global else { continue };
            summary.global.add(g.entry);
            let has_it = theirs.is_some_and(|t| t.version == g.entry.version);
            if g.entry.deleted {
                if theirs.is_some_and(|t| !t.deleted && !has_it) {
                    summary.need.deleted += 1;
                }
            } else if !has_it {
                summary.need.add(g.entry);
            }
        }
        Ok::<(), StoreError>(())
    })?;
    Ok(summaries)
}

/// The least time between two announcements of a folder's counts.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Announcing may take at most about a tenth of the time (the walk is costly on large
/// folders).
const ANNOUNCE_COST_FACTOR: u32 = 10;

/// Announces a folder's counts when they may have changed (`Folder::counts_changed`):
/// Syncthing's FolderSummary for this device and FolderCompletion for each device the
/// folder is shared with. One walk serves them all, and walks are spaced out so that a
/// large folder in heavy sync spends little time on them.
pub(crate) async fn announce(shared: Arc<Shared>, folder: Arc<Folder>) {
    loop {
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = folder.counts_changed.notified() => {}
        }
        // Let a burst of changes settle into one walk.
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
        let started = std::time::Instant::now();
        let mut devices = vec![shared.me];
        devices.extend(folder.config().devices);
        let (shared2, folder2, devices2) = (shared.clone(), folder.clone(), devices.clone());
        let walked =
            tokio::task::spawn_blocking(move || device_summaries(&shared2, &folder2, &devices2))
                .await;
        let Ok(Ok(summaries)) = walked else { continue };
        let sequence = shared.store().sequence(folder.idx).unwrap_or(0);
        emit_summary(&shared, &folder, &summaries[0], sequence);
        for (device, summary) in devices.iter().zip(&summaries).skip(1) {
            emit_completion(&shared, &folder, *device, summary, sequence);
        }
        let cost = started.elapsed() * ANNOUNCE_COST_FACTOR;
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = tokio::time::sleep(cost.saturating_sub(ANNOUNCE_EVERY)) => {}
        }
    }
}

/// Syncthing's FolderSummary, with the fields `/rest/db/status` has for them.
fn emit_summary(shared: &Shared, folder: &Folder, s: &FolderSummary, sequence: u64) {
    shared.events.emit(
        "FolderSummary",
        json!({
            "folder": folder.id,
            "summary": {
                "globalFiles": s.global.files,
                "globalDirectories": s.global.directories,
                "globalSymlinks": s.global.symlinks,
                "globalDeleted": s.global.deleted,
                "globalBytes": s.global.bytes,
                "globalTotalItems": s.global.items() + s.global.deleted,
                "localFiles": s.local.files,
                "localDirectories": s.local.directories,
                "localSymlinks": s.local.symlinks,
                "localDeleted": s.local.deleted,
                "localBytes": s.local.bytes,
                "localTotalItems": s.local.items() + s.local.deleted,
                "needFiles": s.need.files,
                "needDirectories": s.need.directories,
                "needSymlinks": s.need.symlinks,
                "needDeletes": s.need.deleted,
                "needBytes": s.need.bytes,
                "needTotalItems": s.need.items() + s.need.deleted,
                "inSyncFiles": s.global.files.saturating_sub(s.need.files),
                "inSyncBytes": s.global.bytes.saturating_sub(s.need.bytes),
                "state": folder.state().name(),
                "sequence": sequence,
            },
        }),
    );
}

/// Syncthing's FolderCompletion: how far `device` has come, from what it announced.
fn emit_completion(
    shared: &Shared,
    folder: &Folder,
    device: DeviceId,
    s: &FolderSummary,
    sequence: u64,
) {
    shared.events.emit(
        "FolderCompletion",
        json!({
            "folder": folder.id,
            "device": device.to_string(),
            "completion": s.completion(),
            "globalBytes": s.global.bytes,
            "globalItems": s.global.items(),
            "needBytes": s.need.bytes,
            "needItems": s.need.items(),
            "needDeletes": s.need.deleted,
            "remoteState": remote_state(shared, device),
            "sequence": sequence,
        }),
    );
}

/// Syncthing's remoteState: `valid` while connected, `paused`, or `unknown`.
pub(crate) fn remote_state(shared: &Shared, device: DeviceId) -> &'static str {
    if shared.is_paused(device) {
        "paused"
    } else if shared.connection(device).is_some() {
        "valid"
    } else {
        "unknown"
    }
}
