//! What a folder makes of how a peer's index batch was taken: entries refused as malformed
//! (`FileEntry::from_wire`: hostile names, blocks that do not add up) and, by the store
//! (`Store::receive_remote_index`), for claiming version counters this device never issued
//! are logged (their kind and size, never their content) and listed with the folder's
//! errors, where `peerfold status` and `/rest/folder/errors` show them until the peer sends
//! that name again or its whole index without it; local entries that got a newer version
//! wake the index senders.
//!
//! (Choice: the folder's error list rather than an event alone. A refused entry leaves the
//! name out of sync with that peer for as long as the peer holds it, which is what the list
//! is for, and a user looking at `peerfold status` would not see an event that scrolled by;
//! a FolderErrors event with the whole list is sent too, as the pull rounds do.)

use std::collections::BTreeMap;

use peerfold_protocol::DeviceId;
use tracing::{info, warn};

use super::Folder;
use super::handle::lock;
use crate::events::Event;
use crate::model::entry::EntryError;
use crate::store::ReceivedBatch;

/// What a batch held that could not be read as entries: the first
/// [`MAX_LISTED`](crate::model::refused::MAX_LISTED) refusals (the list keeps no more of a
/// device) and how many there were in all.
#[derive(Debug, Default)]
pub(crate) struct Malformed {
    pub(crate) first: Vec<EntryError>,
    pub(crate) count: usize,
}

impl Malformed {
    /// Counts a refusal, keeping it while there is room.
    pub(crate) fn push(&mut self, error: EntryError) {
        self.count += 1;
        if self.first.len() < crate::model::refused::MAX_LISTED {
            self.first.push(error);
        }
    }
}

impl Folder {
    /// Takes in what became of a batch from `peer`: `names` are the names stored, `None` for
    /// a full index (which replaces everything the peer said before); `malformed` the
    /// entries refused before the store saw them, `received` what the store did.
    pub(crate) fn note_received(
        &self,
        peer: DeviceId,
        names: Option<&[String]>,
        malformed: &Malformed,
        received: &ReceivedBatch,
    ) {
        {
            let mut refused = lock(&self.refused);
            match names {
                None => refused.clear_device(peer),
                Some(names) if refused.lists(peer) => {
                    for name in names {
                        refused.clear(peer, name);
                    }
                }
                Some(_) => {}
            }
            for error in &malformed.first {
                refused.note(
                    peer,
                    error.name(),
                    format!("malformed entry: {}", error.what()),
                );
            }
            for (name, why) in &received.refused {
                refused.note(peer, name, why.to_string());
            }
        }
        if let Some(first) = malformed.first.first() {
            warn!(
                folder = %self.id,
                device = %peer.short(),
                refused = malformed.count,
                first_name_bytes = first.name().len(),
                first_problem = first.what(),
                "refused malformed index entries"
            );
        }
        if let Some((name, why)) = received.refused.first() {
            warn!(
                folder = %self.id,
                device = %peer.short(),
                refused = received.refused.len(),
                first_name_bytes = name.len(),
                claimed = why.claimed,
                ceiling = why.ceiling,
                "refused an index entry claiming a version counter this device never issued"
            );
        }
        if malformed.count > 0 || !received.refused.is_empty() {
            self.events.emit(Event::FolderErrors {
                folder: self.id.clone(),
                errors: self.errors().into_iter().collect(),
            });
        }
        for stuck in &received.stuck {
            warn!(folder = %self.id, name_bytes = stuck.name.len(), error = %stuck.source,
                "a local entry the peer outdates cannot get a newer version");
        }
        if !received.outdated.is_empty() {
            info!(
                folder = %self.id,
                device = %peer.short(),
                entries = received.outdated.len(),
                "gave local entries newer versions: the peer holds higher counters of this \
                 device for them, issued before its index was rebuilt"
            );
            self.local_changed.notify_waiters();
        }
    }

    /// Names that cannot sync, with why: the last pull round's failures and the entries
    /// refused from peers.
    pub fn errors(&self) -> BTreeMap<String, String> {
        let mut errors = lock(&self.refused).list();
        // A pull error says what happens to the name here now: it wins.
        errors.extend(self.pull_errors());
        errors
    }
}
