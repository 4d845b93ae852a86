//! What a folder makes of how the store took a peer's index batch
//! (`Store::receive_remote_index`): entries refused for claiming version counters this
//! device never issued are logged (their size, never their content) and listed with the
//! folder's errors, where `peerfold status` and `/rest/folder/errors` show them until the
//! peer sends that name again; local entries that got a newer version wake the index
//! senders.
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
use crate::store::ReceivedBatch;

impl Folder {
    /// Takes in what the store did with a batch from `peer`: `names` are the batch's names,
    /// `None` for a full index (which replaces everything the peer said before).
    pub(crate) fn note_received(
        &self,
        peer: DeviceId,
        names: Option<&[String]>,
        received: &ReceivedBatch,
    ) {
        {
            let mut refused = lock(&self.refused);
            match names {
                None => refused.clear_device(peer),
                Some(names) if !refused.is_empty() => {
                    for name in names {
                        refused.clear(peer, name);
                    }
                }
                Some(_) => {}
            }
            for (name, why) in &received.refused {
                refused.note(peer, name, why.to_string());
            }
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
