//! Announces a folder's counts when they may have changed: Syncthing's FolderSummary for
//! this device and FolderCompletion for each device the folder is shared with. One walk of
//! the index serves them all, and walks are spaced out so that a large folder in heavy
//! sync spends little time on them.
//!
//! Who wakes me: `counts_changed` (scans that changed something, index updates from
//! peers, pull rounds). Whom I wake: nobody; I emit events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use peerfold_protocol::DeviceId;

use super::FolderHandle;
use crate::config::live::LiveConfig;
use crate::events::{Event, RemoteState};
use crate::peers::Peers;

/// The least time between two announcements of a folder's counts.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Announcing may take at most about a tenth of the time (the walk is costly on large
/// folders)...
const ANNOUNCE_COST_FACTOR: u32 = 10;
/// ...but the rest after a walk is at most this: `/rest/db/status` answers a large folder
/// from the last walk (`summary_cache`), so a longer rest left it showing counts minutes
/// old after a peer's 1,000,000 entries.
const MAX_REST: Duration = Duration::from_secs(10);

/// Runs until the folder stops.
pub(crate) async fn summary_loop(
    folder: FolderHandle,
    peers: Arc<dyn Peers>,
    config: Arc<LiveConfig>,
) {
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
        let started = Instant::now();
        let mut devices = vec![folder.me];
        devices.extend(folder.config().devices);
        let (Ok(summaries), Ok(sequence)) =
            (folder.summaries(&devices).await, folder.sequence().await)
        else {
            continue;
        };
        folder.events.emit(Event::FolderSummary {
            folder: folder.id.clone(),
            summary: summaries[0],
            state: folder.state().name(),
            sequence,
        });
        for (device, summary) in devices.iter().zip(&summaries).skip(1) {
            folder.events.emit(Event::FolderCompletion {
                folder: folder.id.clone(),
                device: *device,
                summary: *summary,
                remote_state: remote_state(&*peers, &config, *device),
                sequence,
            });
        }
        let cost = (started.elapsed() * ANNOUNCE_COST_FACTOR).min(MAX_REST + ANNOUNCE_EVERY);
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = tokio::time::sleep(cost.saturating_sub(ANNOUNCE_EVERY)) => {}
        }
    }
}

/// Syncthing's remoteState: `valid` while connected, `paused`, or `unknown`.
pub(crate) fn remote_state(
    peers: &dyn Peers,
    config: &LiveConfig,
    device: DeviceId,
) -> RemoteState {
    if config.is_paused(device) {
        RemoteState::Paused
    } else if peers.is_connected(device) {
        RemoteState::Valid
    } else {
        RemoteState::Unknown
    }
}
