//! What the folders make of a peer's ClusterConfig: where each shared folder's index
//! exchange starts, and what happens to folders it offers that are not shared with it
//! here: recorded as pending for the user or, from a device marked `auto_accept_folders`,
//! handed to the engine to add under the default folder path (Syncthing's
//! autoAcceptFolders).
//!
//! Auto-accept: a folder that already exists here is shared with the device. A new one
//! goes to `DEFAULT/LABEL`, or `DEFAULT/ID` when the label is not a plain directory name or
//! that path is taken; when both are taken, or neither is a plain name, the offer waits as
//! pending like any other. Nothing is ever placed outside the default path.
//!
//! Who wakes me: sessions, at each ClusterConfig. Whom I wake: the engine's command task
//! (an auto-accept request), and pollers of PendingFoldersChanged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::FolderHandle;
use super::registry::FolderRegistry;
use crate::config::introduce::{IntroducedDevice, IntroducedFolder};
use crate::config::live::LiveConfig;
use crate::config::{self, Config, ConfigEdit};
use crate::events::{Event, EventLog, PendingFolderSeen};
use crate::store::{PendingFolder, StoreError, StoreHandle};

/// Folder offers taken (recorded or accepted) per ClusterConfig, at most.
const MAX_OFFERS_TAKEN: usize = 256;
/// Bytes of an offer's label kept while it waits: a line in a list is all a user reads of
/// it, and 8 KiB labels from a peer would take 8 MB in the pending table (the store keeps
/// 1,024 offers) and in the event ring alike.
const MAX_PENDING_LABEL_BYTES: usize = 256;

/// A folder a peer offered: its ID and label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) id: String,
    pub(crate) label: String,
}

/// One folder of a peer's ClusterConfig, as the session read it.
#[derive(Clone, Debug)]
pub(crate) struct OfferedFolder {
    pub(crate) offer: Offer,
    /// The other devices the peer shares it with (for introductions).
    pub(crate) others: Vec<IntroducedDevice>,
    /// The index ID the peer holds of this device's index, and its highest sequence.
    pub(crate) ours_held: Option<(u64, u64)>,
    /// The peer's own index ID.
    pub(crate) their_index_id: u64,
}

/// Where a shared folder's index exchange with the peer starts.
#[derive(Clone, Debug)]
pub(crate) struct IndexStart {
    pub(crate) folder: FolderHandle,
    /// Send this device's entries after this sequence (0: everything, as a full index).
    pub(crate) send_after: u64,
    /// The peer's index ID, for storing what it sends.
    pub(crate) their_index_id: u64,
}

/// Offers from a device with auto-accept, for the engine to place in one config change.
#[derive(Debug)]
pub(crate) struct AutoAccept {
    pub(crate) peer: DeviceId,
    pub(crate) offers: Vec<Offer>,
}

/// A configuration change a peer's ClusterConfig asks the engine for.
#[derive(Debug)]
pub(crate) enum ConfigRequest {
    /// Offers to place (the peer auto-accepts).
    Accept(AutoAccept),
    /// Who shares the folders an introducer shares with this device.
    Introduce {
        introducer: DeviceId,
        folders: Vec<IntroducedFolder>,
    },
}

/// The folders' answer to ClusterConfigs.
pub(crate) struct Offers {
    pub(crate) config: Arc<LiveConfig>,
    pub(crate) folders: Arc<FolderRegistry>,
    pub(crate) store: StoreHandle,
    pub(crate) events: Arc<EventLog>,
    /// The engine's configuration requests (auto-accepted offers, introductions).
    pub(crate) requests: mpsc::Sender<ConfigRequest>,
}

impl Offers {
    /// Settles what `peer` offered: index starts for the folders shared with it, pending
    /// records (or an auto-accept request) for the others. A store error fails the session
    /// rather than silently resending everything.
    pub(crate) async fn on_cluster_config(
        &self,
        peer: DeviceId,
        offered: &[OfferedFolder],
    ) -> Result<Vec<IndexStart>, StoreError> {
        let config = self.config.get();
        let accepting = config
            .devices
            .iter()
            .any(|d| d.id == peer && d.auto_accept_folders);
        let ignored = |id: &str| {
            config
                .devices
                .iter()
                .any(|d| d.id == peer && d.ignored_folders.iter().any(|f| f.id == id))
        };
        if config.devices.iter().any(|d| d.id == peer && d.introducer) {
            let folders = offered
                .iter()
                .map(|f| IntroducedFolder {
                    id: f.offer.id.clone(),
                    devices: f.others.clone(),
                })
                .collect();
            let request = ConfigRequest::Introduce {
                introducer: peer,
                folders,
            };
            // Waits for room: an introduction missed would wait for the next connection.
            let _ = self.requests.send(request).await;
        }
        let mut starts = Vec::new();
        let (mut taken, mut to_accept) = (0, Vec::new());
        for folder in offered {
            let id = &folder.offer.id;
            let Some(running) = self.folders.get(id).filter(|f| f.shares_with(peer)) else {
                let paused_here = config
                    .folder(id)
                    .is_some_and(|f| f.paused && f.devices.contains(&peer));
                // A peer cannot fill the database (or the configuration) with offers; an
                // offer the user ignored stays unrecorded.
                if paused_here
                    || ignored(id)
                    || taken >= MAX_OFFERS_TAKEN
                    || config::check_folder_id(id).is_err()
                {
                    continue;
                }
                taken += 1;
                if accepting {
                    to_accept.push(folder.offer.clone());
                } else {
                    self.record_pending(peer, &folder.offer).await;
                }
                continue;
            };
            // Shared now: an earlier offer is settled.
            let (settled, idx) = (id.clone(), running.idx);
            let ours = self
                .store
                .write(move |s| {
                    s.forget_pending_folder(&settled, Some(peer))?;
                    s.index_id(idx)
                })
                .await?;
            let send_after = match folder.ours_held {
                Some((index_id, max_sequence)) if index_id == ours => max_sequence,
                _ => 0,
            };
            starts.push(IndexStart {
                folder: running,
                send_after,
                their_index_id: folder.their_index_id,
            });
        }
        if !to_accept.is_empty() {
            let request = ConfigRequest::Accept(AutoAccept {
                peer,
                offers: to_accept,
            });
            if let Err(full) = self.requests.try_send(request) {
                // The engine is busy with others: these wait for the user instead.
                let (mpsc::error::TrySendError::Full(ConfigRequest::Accept(request))
                | mpsc::error::TrySendError::Closed(ConfigRequest::Accept(request))) = full
                else {
                    return Ok(starts);
                };
                for offer in &request.offers {
                    self.record_pending(peer, offer).await;
                }
            }
        }
        Ok(starts)
    }

    /// An offer that waits for the user: recorded as pending, and announced
    /// (PendingFoldersChanged). It is never created on its own.
    /// The store keeps the newest offers only (store/write.rs has the caps).
    pub(crate) async fn record_pending(&self, peer: DeviceId, offer: &Offer) {
        // The folder ID passed `check_folder_id` (at most 256 bytes, no control characters).
        info!(device = %peer.short(), folder = %offer.id, label_bytes = offer.label.len(), "peer offers a folder not shared with it here; recorded as pending");
        let label = truncated(&offer.label, MAX_PENDING_LABEL_BYTES).to_owned();
        let pending = PendingFolder {
            folder: offer.id.clone(),
            device: peer,
            label: label.clone(),
            last_seen: jiff::Timestamp::now().as_second(),
        };
        if let Err(e) = self
            .store
            .write(move |s| s.record_pending_folder(&pending))
            .await
        {
            warn!(error = %e, "cannot record a pending folder");
        }
        self.events
            .emit(Event::PendingFolderAdded(PendingFolderSeen {
                device: peer,
                folder: offer.id.clone(),
                label,
            }));
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Why auto-accepted offers could not be placed at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlaceError {
    #[error("no home directory to expand ~ in the default folder path")]
    NoHome,
}

/// The edit that adds or shares each offer, and the offers that found no place.
pub(crate) fn place(
    config: &Config,
    peer: DeviceId,
    offers: &[Offer],
) -> Result<(ConfigEdit, Vec<Offer>), PlaceError> {
    let root = config.defaults.folder_root().ok_or(PlaceError::NoHome)?;
    let mut edits = Vec::new();
    let mut new_paths: Vec<PathBuf> = Vec::new();
    let mut refused = Vec::new();
    for offer in offers {
        if config.folder(&offer.id).is_some() {
            info!(folder = %offer.id, device = %peer.short(), "auto-accepted: shared the existing folder");
            edits.push(ConfigEdit::ShareFolder {
                folder: offer.id.clone(),
                device: peer,
            });
            continue;
        }
        let taken = |path: &Path| {
            path.exists()
                || config.folders.iter().any(|f| f.path == path)
                || new_paths.iter().any(|p| p == path)
        };
        let path = [offer.label.as_str(), offer.id.as_str()]
            .into_iter()
            .filter(|name| is_plain_name(name))
            .map(|name| root.join(name))
            .find(|path| !taken(path));
        let Some(path) = path else {
            info!(folder = %offer.id, "auto-accept found no free directory for the folder; left pending");
            refused.push(offer.clone());
            continue;
        };
        info!(folder = %offer.id, device = %peer.short(), path = %path.display(), "auto-accepted a new folder");
        let mut folder =
            config
                .defaults
                .new_folder(offer.id.clone(), offer.label.clone(), path.clone());
        folder.devices.push(peer);
        new_paths.push(path);
        edits.push(ConfigEdit::AddFolder(folder));
    }
    Ok((ConfigEdit::Several(edits), refused))
}

/// One directory name a peer may choose: no separators, no `.`/`..`, no control
/// characters, not hidden, at most 255 bytes.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.trim() == name
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Address, DeviceConfig, FolderConfig};

    const ME: DeviceId = DeviceId::from_bytes([1; 32]);

    fn peer() -> DeviceId {
        DeviceId::from_certificate_der(b"peer")
    }

    fn offer(id: &str, label: &str) -> Offer {
        Offer {
            id: id.into(),
            label: label.into(),
        }
    }

    fn config_in(dir: &Path) -> Config {
        let mut config = Config::new("me".into(), "k".into());
        config.defaults.folder_path = dir.to_str().unwrap().into();
        config.devices.push(DeviceConfig::new(
            peer(),
            String::new(),
            vec![Address::Dynamic],
        ));
        config
    }

    #[test]
    fn offers_land_under_the_default_path_by_label_then_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        std::fs::create_dir(dir.path().join("Taken")).unwrap();
        let (edit, refused) = place(
            &config,
            peer(),
            &[
                offer("photos", "Photos"),
                offer("docs", "../../etc"),
                offer("music", "Taken"),
                offer("../up", ".."),
            ],
        )
        .unwrap();
        edit.apply(&mut config, ME).unwrap();
        let paths: Vec<_> = config
            .folders
            .iter()
            .map(|f| (f.id.as_str(), f.path.clone(), f.devices.clone()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("photos", dir.path().join("Photos"), vec![peer()]),
                ("docs", dir.path().join("docs"), vec![peer()]),
                ("music", dir.path().join("music"), vec![peer()]),
            ]
        );
        assert_eq!(refused, vec![offer("../up", "..")]);
    }

    #[test]
    fn auto_accepted_folders_start_from_the_default_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        let mut template = FolderConfig::new(String::new(), String::new(), "/ignored".into());
        template.ignore_delete = true;
        template.rescan_interval_s = 60;
        config.defaults.folder = Some(template);
        let (edit, _) = place(&config, peer(), &[offer("photos", "Photos")]).unwrap();
        let ConfigEdit::Several(edits) = edit else {
            panic!("{edit:?}")
        };
        let [ConfigEdit::AddFolder(folder)] = edits.as_slice() else {
            panic!("{edits:?}")
        };
        assert_eq!(folder.id, "photos");
        assert_eq!(folder.path, dir.path().join("Photos"));
        assert!(folder.ignore_delete);
        assert_eq!(folder.rescan_interval_s, 60);
        assert_eq!(folder.devices, vec![peer()]);
    }

    #[test]
    fn an_existing_folder_is_shared_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        config.folders.push(FolderConfig::new(
            "photos".into(),
            String::new(),
            "/srv/photos".into(),
        ));
        for _ in 0..2 {
            let (edit, _) = place(&config, peer(), &[offer("photos", "Photos")]).unwrap();
            edit.apply(&mut config, ME).unwrap();
        }
        assert_eq!(config.folders.len(), 1);
        assert_eq!(config.folders[0].devices, vec![peer()]);
        assert_eq!(config.folders[0].path, PathBuf::from("/srv/photos"));
    }

    fn offered(id: &str, ours_held: Option<(u64, u64)>) -> OfferedFolder {
        OfferedFolder {
            others: Vec::new(),
            offer: offer(id, id),
            ours_held,
            their_index_id: 9,
        }
    }

    #[tokio::test]
    async fn a_cluster_config_starts_shared_folders_and_records_the_rest() {
        let peer = DeviceId::from_bytes([5; 32]);
        let mut node = crate::testing::Node::new(&[peer]);
        let offers = node.context.offers.clone();
        let idx = node.folder().idx;
        let ours = node
            .context
            .store
            .read(move |r| r.index_id(idx))
            .await
            .unwrap();
        // The peer holds our index up to 7: sending resumes after 7; a stale index ID
        // means everything again.
        let starts = offers
            .on_cluster_config(
                peer,
                &[offered("docs", Some((ours, 7))), offered("photos", None)],
            )
            .await
            .unwrap();
        assert_eq!(starts.len(), 1);
        assert_eq!((starts[0].send_after, starts[0].their_index_id), (7, 9));
        let stale = offers
            .on_cluster_config(peer, &[offered("docs", Some((ours + 1, 7)))])
            .await
            .unwrap();
        assert_eq!(stale[0].send_after, 0);
        let pending = node
            .context
            .store
            .read(|r| r.pending_folders())
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].folder.as_str(), pending[0].device),
            ("photos", peer)
        );
        assert!(node.events().await.iter().any(|e| matches!(
            &**e,
            Event::PendingFolderAdded(seen) if seen.folder == "photos"
        )));
        assert!(node.requests.try_recv().is_err(), "nothing to auto-accept");
    }

    #[tokio::test]
    async fn offers_from_an_auto_accepting_device_go_to_the_engine() {
        let peer = DeviceId::from_bytes([5; 32]);
        let mut node = crate::testing::Node::new(&[peer]);
        {
            let live = &node.context.config;
            let change = live.begin().await;
            let mut config = (*live.get()).clone();
            config.devices[0].auto_accept_folders = true;
            live.commit(&change, config).await.unwrap();
        }
        let hostile: Vec<OfferedFolder> = (0..MAX_OFFERS_TAKEN + 10)
            .map(|i| offered(&format!("f{i}"), None))
            .collect();
        node.context
            .offers
            .on_cluster_config(peer, &hostile)
            .await
            .unwrap();
        let Ok(ConfigRequest::Accept(request)) = node.requests.try_recv() else {
            panic!("an auto-accept request")
        };
        assert_eq!(request.peer, peer);
        assert_eq!(
            request.offers.len(),
            MAX_OFFERS_TAKEN,
            "offers per ClusterConfig are capped"
        );
        let pending = node
            .context
            .store
            .read(|r| r.pending_folders())
            .await
            .unwrap();
        assert!(pending.is_empty());
    }

    #[test]
    fn two_offers_with_one_label_get_two_directories() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        let (edit, refused) =
            place(&config, peer(), &[offer("a", "Same"), offer("b", "Same")]).unwrap();
        edit.apply(&mut config, ME).unwrap();
        assert!(refused.is_empty());
        assert_eq!(config.folders[0].path, dir.path().join("Same"));
        assert_eq!(config.folders[1].path, dir.path().join("b"));
    }

    #[test]
    fn labels_are_cut_on_a_character_boundary() {
        assert_eq!(truncated("short", 256), "short");
        assert_eq!(truncated("abcdef", 3), "abc");
        // "é" is two bytes: a cut through it keeps the whole characters before it.
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated(&"é".repeat(200), 256).len(), 256);
    }
}
