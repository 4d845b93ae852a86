//! Announces a folder's counts when they may have changed: Syncthing's FolderSummary for
//! this device and FolderCompletion for each device the folder is shared with, read from
//! the store's counters, at most once a second.
//!
//! Who wakes me: `counts_changed` (scans that changed something, index updates from
//! peers, pull rounds). Whom I wake: nobody; I emit events.

use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;

use super::FolderHandle;
use crate::config::live::LiveConfig;
use crate::events::{Event, RemoteState};
use crate::peers::Peers;

/// The least time between two announcements of a folder's counts.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
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
        // Let a burst of changes settle into one announcement.
        tokio::select! {
            biased;
            () = folder.stop.cancelled() => return,
            () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
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
            state_changed: folder.state_changed(),
            errors: folder.errors().len(),
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
