//! Folders a peer offers that are not shared with it here: recorded as pending for the
//! user, or, from a device marked `auto_accept_folders`, added under the default folder
//! path and shared with it without asking (Syncthing's autoAcceptFolders).
//!
//! A folder that already exists here is shared with the device. A new one goes to
//! `DEFAULT/LABEL`, or `DEFAULT/ID` when the label is not a plain directory name or that
//! path is taken; when both are taken, or neither is a plain name, the offer waits as
//! pending like any other. Nothing is ever placed outside the default path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use tracing::{info, warn};

use crate::daemon::Shared;
use crate::live_config;
use peerfold_engine::config::{Config, FolderConfig};
use peerfold_engine::store::PendingFolder;

/// A folder a peer offered: its ID and label.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    pub(crate) id: String,
    pub(crate) label: String,
}

/// Accepts `offers` from `peer` in one configuration change. The change reconnects the
/// peer, and the new session shares the folders. Offers that cannot be placed are recorded
/// as pending.
pub(crate) async fn accept(shared: Arc<Shared>, peer: DeviceId, offers: Vec<Offer>) {
    let mut refused = Vec::new();
    let result = live_config::change(&shared, |config| {
        refused = place(config, peer, &offers)?;
        Ok(())
    })
    .await;
    if let Err(e) = &result {
        warn!(device = %peer.short(), error = %e, "cannot auto-accept offered folders");
        refused = offers;
    }
    for offer in &refused {
        record_pending(&shared, peer, offer);
    }
}

/// An offer that waits for the user: recorded as pending, and announced
/// (PendingFoldersChanged). It is never created on its own.
pub(crate) fn record_pending(shared: &Shared, peer: DeviceId, offer: &Offer) {
    info!(device = %peer.short(), folder = %offer.id, label = %offer.label, "peer offers a folder not shared with it here; recorded as pending");
    let pending = PendingFolder {
        folder: offer.id.clone(),
        device: peer,
        label: offer.label.clone(),
        last_seen: jiff::Timestamp::now().as_second(),
    };
    if let Err(e) = shared.store().record_pending_folder(&pending) {
        warn!(error = %e, "cannot record a pending folder");
    }
    shared.events.emit(
        "PendingFoldersChanged",
        serde_json::json!({ "added": [{
            "deviceID": peer.to_string(),
            "folderID": offer.id,
            "folderLabel": offer.label,
        }] }),
    );
}

/// Adds or shares each offer in `config`; returns the offers that found no place.
fn place(config: &mut Config, peer: DeviceId, offers: &[Offer]) -> Result<Vec<Offer>, String> {
    let root = config
        .defaults
        .folder_root()
        .ok_or("no home directory to expand ~ in the default folder path")?;
    let mut refused = Vec::new();
    for offer in offers {
        if let Some(existing) = config.folders.iter_mut().find(|f| f.id == offer.id) {
            if !existing.devices.contains(&peer) {
                info!(folder = %offer.id, device = %peer.short(), "auto-accepted: shared the existing folder");
                existing.devices.push(peer);
            }
            continue;
        }
        let taken = |path: &Path| path.exists() || config.folders.iter().any(|f| f.path == path);
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
        config.folders.push(new_folder(offer, path, peer));
    }
    Ok(refused)
}

fn new_folder(offer: &Offer, path: PathBuf, peer: DeviceId) -> FolderConfig {
    let mut folder = FolderConfig::new(offer.id.clone(), offer.label.clone(), path);
    folder.devices.push(peer);
    folder
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

    fn peer() -> DeviceId {
        DeviceId::from_certificate_der(b"peer")
    }

    fn offer(id: &str, label: &str) -> Offer {
        Offer {
            id: id.into(),
            label: label.into(),
        }
    }

    #[test]
    fn offers_land_under_the_default_path_by_label_then_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("me".into(), "k".into());
        config.defaults.folder_path = dir.path().to_str().unwrap().into();
        std::fs::create_dir(dir.path().join("Taken")).unwrap();
        let refused = place(
            &mut config,
            peer(),
            &[
                offer("photos", "Photos"),
                offer("docs", "../../etc"),
                offer("music", "Taken"),
                offer("../up", ".."),
            ],
        )
        .unwrap();
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
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].id, "../up");
    }

    #[test]
    fn an_existing_folder_is_shared_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("me".into(), "k".into());
        config.defaults.folder_path = dir.path().to_str().unwrap().into();
        config.folders.push(new_folder(
            &offer("photos", ""),
            "/srv/photos".into(),
            peer(),
        ));
        config.folders[0].devices.clear();
        place(&mut config, peer(), &[offer("photos", "Photos")]).unwrap();
        place(&mut config, peer(), &[offer("photos", "Photos")]).unwrap();
        assert_eq!(config.folders.len(), 1);
        assert_eq!(config.folders[0].devices, vec![peer()]);
        assert_eq!(config.folders[0].path, PathBuf::from("/srv/photos"));
    }
}
