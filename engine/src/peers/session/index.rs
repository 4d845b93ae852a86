//! Index exchange: this device's entries go out in batches, the peer's come in and are
//! stored.

use std::collections::HashMap;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::wire::{self, message::Body};
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{SessionContext, SessionError, deltas};
use crate::events::{Event, EventLog};
use crate::folder::FolderHandle;
use crate::folder::refused::Malformed;
use crate::model::announce;
use crate::model::entry::FileEntry;
use crate::peers::link::FrameReceiver;
use crate::store::{ReceivedBatch, StoreError};

/// Entries per index batch, at most.
const BATCH_ENTRIES: usize = 1000;
/// Encoded bytes per index batch, at most (far below the control frame limit).
const BATCH_BYTES: usize = 1 << 20;
/// Entries of a peer's batch stored per transaction: a frame can hold 80,000, which took
/// the writer for 1.3-2 s in one transaction with 200,000 rows held and 4-15 s towards
/// 1,000,000 (a shared 2-core machine); scans,
/// pulls and other peers' batches get their turn between slices.
const RECEIVE_SLICE: usize = 5_000;
/// Rows of a peer's old index dropped per transaction when its index ID changes: about
/// 0.1 s of the writer each (200,000 rows took 3.9 s in slices of 10,000 on a shared 2-core
/// machine), so scans, pulls and other peers' batches get their turn between slices.
const FORGET_SLICE: usize = 5_000;
/// How often an index sender looks for new local entries when nothing woke it.
const INDEX_POLL: Duration = Duration::from_secs(1);

/// Sends the folder's local entries with sequence numbers after `start`, then keeps sending
/// new ones as they appear, until the session's writer is gone. A peer that takes block
/// lists as changes (`deltas_to`: its ID and the ID of its index now) gets large files'
/// lists as changes to what it announced (`deltas`).
pub(super) async fn send_index(
    folder: FolderHandle,
    start: u64,
    outbox: mpsc::Sender<wire::Message>,
    deltas_to: Option<(DeviceId, u64)>,
) {
    let mut after = start;
    let mut first = true;
    loop {
        let idx = folder.idx;
        let batch = match folder
            .store
            .read(move |r| r.local_entries_since(idx, after, BATCH_ENTRIES))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                warn!(error = %e, "cannot read the index");
                Vec::new()
            }
        };
        let bases = match deltas_to {
            Some(peer) => deltas::bases(&folder, peer, &batch).await,
            None => HashMap::new(),
        };
        let (folder_type, me) = (folder.folder_type(), folder.me.short());
        let mut files = Vec::new();
        let mut bytes = 0;
        for entry in &batch {
            let mut info = announce::announced(entry, folder_type, me);
            deltas::shorten(&mut info, entry, bases.get(&entry.name));
            bytes += info.encoded_len();
            if bytes > BATCH_BYTES && !files.is_empty() {
                break;
            }
            after = entry.sequence;
            files.push(info);
        }
        if files.is_empty() {
            // Woken by this device's scans and folder actions; the poll also catches
            // entries the puller recorded and `peerfold scan` run beside the daemon.
            tokio::select! {
                biased;
                () = outbox.closed() => return,
                () = folder.local_changed.notified() => continue,
                () = tokio::time::sleep(INDEX_POLL) => continue,
            }
        }
        let body = if first && start == 0 {
            Body::Index(wire::Index {
                folder: folder.id.clone(),
                files,
            })
        } else {
            Body::IndexUpdate(wire::IndexUpdate {
                folder: folder.id.clone(),
                files,
            })
        };
        first = false;
        if outbox
            .send(wire::Message { body: Some(body) })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads the peer's control messages: index batches go to the store.
pub(super) async fn receive(
    context: &SessionContext,
    peer: DeviceId,
    reader: &mut FrameReceiver,
    their_index_ids: &HashMap<String, u64>,
) -> Result<(), SessionError> {
    while let Some(message) = reader.next().await? {
        // A full index may replace what we held of the device: every name can change.
        let (folder_id, files, full) = match message.body {
            Some(Body::Index(index)) => (index.folder, index.files, true),
            Some(Body::IndexUpdate(update)) => (update.folder, update.files, false),
            Some(Body::Close(close)) => {
                debug!(reason_bytes = close.reason.len(), "peer closed");
                return Ok(());
            }
            _ => continue,
        };
        let Some(folder) = context.folders.get(&folder_id) else {
            return Err(SessionError::Protocol(format!(
                "index for folder {folder_id:?}, which is not configured here"
            )));
        };
        if !folder.shares_with(peer) {
            return Err(SessionError::Protocol(format!(
                "index for folder {folder_id:?}, which is not shared with this device"
            )));
        }
        let (files, base_gone) = deltas::expand(&folder, files).await?;
        let mut entries = Vec::with_capacity(files.len());
        let mut malformed = Malformed::default();
        for info in files {
            match FileEntry::from_wire(info) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    // Its kind and size: the name is the peer's.
                    debug!(
                        name_bytes = e.name().len(),
                        problem = e.what(),
                        "refused an index entry"
                    );
                    malformed.push(e);
                }
            }
        }
        let index_id = their_index_ids.get(&folder_id).copied().unwrap_or(0);
        // Stored and announced on a task of its own: a session replaced by a better link
        // drops this reader wherever it waits, and a batch it had begun was then committed
        // with nobody told (the new link's plan, made before the commit, missed its names
        // until the next full plan, ten minutes on).
        let (done, finished) = tokio::sync::oneshot::channel();
        let events = context.events.clone();
        context.life.spawn(async move {
            store_and_announce(&folder, &events, peer, index_id, (entries, malformed), full).await;
            let _ = done.send(());
        });
        let _ = finished.await;
        if let Some(sequence) = base_gone {
            return Err(SessionError::DeltaBaseGone { sequence });
        }
    }
    Ok(())
}

/// Stores one batch of `peer`'s index (`full`: all of it), then tells the folder: its
/// counts, an event, the names to plan again, and the puller.
async fn store_and_announce(
    folder: &FolderHandle,
    events: &EventLog,
    peer: DeviceId,
    index_id: u64,
    (entries, malformed): (Vec<FileEntry>, Malformed),
    full: bool,
) {
    forget_old_index(folder, peer, index_id).await;
    let items = entries.len();
    let names: Option<Vec<String>> =
        (!full).then(|| entries.iter().map(|e| e.name.clone()).collect());
    let started = std::time::Instant::now();
    let stored = store_in_slices(folder, peer, index_id, entries).await;
    debug!(entries = items, full, took = ?started.elapsed(), "stored an index batch");
    match stored {
        Ok(received) => folder.note_received(peer, names.as_deref(), &malformed, &received),
        Err(e) => {
            warn!(error = %e, "cannot store the peer's index");
            let none = ReceivedBatch::default();
            folder.note_received(peer, Some(&[]), &malformed, &none);
        }
    }
    events.emit(Event::RemoteIndexUpdated {
        device: peer,
        folder: folder.id.clone(),
        items,
    });
    folder.counts_changed.notify_one();
    match &names {
        None => folder.replan_everything(),
        Some(names) => folder.replan_names(names.iter().map(String::as_str)),
    }
    folder.pull.notify_one();
}

/// Stores a peer's batch in transactions of at most [`RECEIVE_SLICE`] entries, in the
/// order of their sequence numbers: each records the highest sequence it stored as seen,
/// so a crash between two leaves nothing below a recorded sequence unstored.
async fn store_in_slices(
    folder: &FolderHandle,
    peer: DeviceId,
    index_id: u64,
    mut entries: Vec<FileEntry>,
) -> Result<ReceivedBatch, StoreError> {
    let (idx, me) = (folder.idx, folder.me.short());
    entries.sort_by_key(|e| e.sequence);
    let mut received = ReceivedBatch::default();
    while !entries.is_empty() {
        let rest = entries.split_off(entries.len().min(RECEIVE_SLICE));
        let slice = std::mem::replace(&mut entries, rest);
        let part = folder
            .store
            .write(move |s| s.receive_remote_index(idx, peer, index_id, &slice, me))
            .await?;
        received.refused.extend(part.refused);
        received.outdated.extend(part.outdated);
        received.stuck.extend(part.stuck);
    }
    Ok(received)
}

/// When `peer` announces a new index ID for the folder, drops what was held of its old
/// index in slices of [`FORGET_SLICE`] rows, each its own transaction, before the first
/// batch of the new one is stored (which would drop it in one statement, holding the
/// writer for as long). The old index's ID and sequence stay recorded until then, so a
/// restart in between resumes with the peer sending its whole new index again.
async fn forget_old_index(folder: &FolderHandle, peer: DeviceId, index_id: u64) {
    let idx = folder.idx;
    match folder
        .store
        .read(move |r| r.remote_index_state(idx, peer))
        .await
    {
        Ok(Some((held, _))) if held != index_id => {}
        Ok(_) => return,
        Err(e) => {
            warn!(error = %e, "cannot read what is held of the peer's index");
            return;
        }
    }
    let (started, mut dropped) = (std::time::Instant::now(), 0);
    loop {
        match folder
            .store
            .write(move |s| s.forget_remote_slice(idx, peer, FORGET_SLICE))
            .await
        {
            Ok(gone) => {
                dropped += gone;
                if gone < FORGET_SLICE {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot drop the peer's old index");
                return;
            }
        }
    }
    info!(
        folder = %folder.id,
        entries = dropped,
        took = ?started.elapsed(),
        "the peer's index ID changed; dropped what was held of its old index"
    );
}
