//! Configuration changes on a running daemon: checked, saved to `config.toml` atomically,
//! then applied without a restart.
//!
//! Changes are serialised (`Shared::config_change`), and each one edits the configuration
//! as it stands, so concurrent changes never lose one another. Applying one:
//! - a device added is dialed, and its pending entry dropped; a device removed is
//!   disconnected and no longer dialed or accepted;
//! - a folder added starts (its root and `.peerfold` marker are created); a folder removed
//!   or paused stops, leaving its files and index alone; a folder resumed starts again;
//! - a folder whose sharing or type changed gets its new settings, and the connections to
//!   the devices concerned are closed, so they reconnect with a fresh ClusterConfig.

use std::collections::BTreeSet;
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use tracing::{info, warn};

use crate::daemon::Shared;
use peerfold_engine::config::{Config, FolderConfig};
use peerfold_engine::disk::scanner::MARKER_DIR;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigChangeError {
    /// The change makes no sense (unknown device, bad address, ...): the client's fault.
    #[error("{0}")]
    Invalid(String),
    /// Saving or applying failed.
    #[error("{0}")]
    Failed(String),
}

/// Applies `edit` to the configuration as it stands; returns the new configuration.
pub(crate) async fn change(
    shared: &Arc<Shared>,
    edit: impl FnOnce(&mut Config) -> Result<(), String>,
) -> Result<Config, ConfigChangeError> {
    let _one_at_a_time = shared.config_change.lock().await;
    let old = shared.config();
    let mut new = old.clone();
    edit(&mut new).map_err(ConfigChangeError::Invalid)?;
    new.check().map_err(ConfigChangeError::Invalid)?;
    // Every new root is checked before any is made: a refused change leaves nothing behind.
    for folder in &new.folders {
        if old.folder(&folder.id).is_none_or(|o| o.path != folder.path) {
            check_root(folder).map_err(ConfigChangeError::Invalid)?;
        }
    }
    for folder in &new.folders {
        if old.folder(&folder.id).is_none_or(|o| o.path != folder.path) {
            prepare_root(folder).map_err(ConfigChangeError::Invalid)?;
            // The folder's index must open before the change is saved: a folder that
            // cannot start is refused rather than saved and left dead.
            shared
                .store()
                .ensure_folder(&folder.id)
                .map_err(|e| ConfigChangeError::Failed(format!("folder {:?}: {e}", folder.id)))?;
        }
    }
    shared
        .home
        .save_config(&new)
        .map_err(|e| ConfigChangeError::Failed(e.to_string()))?;
    shared.set_config(new.clone());
    apply(shared, &old, &new);
    shared.config_changed.notify_waiters();
    shared.events.emit(
        "ConfigSaved",
        serde_json::json!({ "version": crate::api::CONFIG_VERSION }),
    );
    info!("configuration changed and saved");
    Ok(new)
}

/// A new folder's root must be absolute, and without `..` (which could lead anywhere).
fn check_root(folder: &FolderConfig) -> Result<(), String> {
    if !folder.path.is_absolute() {
        return Err(format!(
            "folder {:?}: path {} must be absolute",
            folder.id,
            folder.path.display()
        ));
    }
    if folder
        .path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "folder {:?}: path {} must not contain \"..\"",
            folder.id,
            folder.path.display()
        ));
    }
    Ok(())
}

/// A new folder's root must exist (it is created if its parent does) and gets the marker.
fn prepare_root(folder: &FolderConfig) -> Result<(), String> {
    std::fs::create_dir_all(folder.path.join(MARKER_DIR)).map_err(|e| {
        format!(
            "folder {:?}: cannot create {}: {e}",
            folder.id,
            folder.path.display()
        )
    })
}

fn apply(shared: &Arc<Shared>, old: &Config, new: &Config) {
    if old.listen != new.listen || old.api.address != new.api.address {
        shared
            .restart_required
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let old_devices: BTreeSet<DeviceId> = old.devices.iter().map(|d| d.id).collect();
    let new_devices: BTreeSet<DeviceId> = new.devices.iter().map(|d| d.id).collect();
    let mut reconnect = BTreeSet::new();
    for device in &new.devices {
        let before = old.devices.iter().find(|d| d.id == device.id);
        if before.is_none()
            && let Err(e) = shared.store().forget_pending_device(device.id)
        {
            warn!(error = %e, "cannot forget a pending device");
        }
        if device.paused {
            if before.is_some_and(|b| !b.paused) {
                disconnect(shared, device.id, "paused");
            }
        } else {
            // New or resumed (a running dial loop takes any other change itself).
            shared.dial(device.id);
        }
    }
    for removed in old_devices.difference(&new_devices) {
        disconnect(shared, *removed, "removed from the configuration");
    }
    for folder in &old.folders {
        if new.folder(&folder.id).is_none() {
            shared.stop_folder(&folder.id);
            reconnect.extend(folder.devices.iter().copied());
        }
    }
    for folder in &new.folders {
        let before = old.folder(&folder.id);
        if before != Some(folder) {
            let was_running = before.is_some_and(|b| !b.paused);
            if folder.paused {
                shared.stop_folder(&folder.id);
            } else if !was_running || before.is_some_and(|b| b.path != folder.path) {
                // New, resumed, or at a new root (a different folder on disk): start over.
                shared.stop_folder(&folder.id);
                if let Err(e) = shared.start_folder(folder.clone()) {
                    warn!(folder = %folder.id, error = %e, "cannot start the folder");
                }
            } else if let Some(running) = shared.folder(&folder.id) {
                running.set_config(folder.clone());
                running.rescan.notify_one();
            }
            // What peers are told about the folder changed: they get a new ClusterConfig.
            let announced_changed = before.is_none_or(|b| {
                b.devices != folder.devices
                    || b.folder_type != folder.folder_type
                    || b.path != folder.path
                    || b.paused != folder.paused
            });
            if announced_changed {
                reconnect.extend(before.iter().flat_map(|b| b.devices.iter().copied()));
                reconnect.extend(folder.devices.iter().copied());
            }
        }
        for device in &folder.devices {
            if let Err(e) = shared
                .store()
                .forget_pending_folder(&folder.id, Some(*device))
            {
                warn!(error = %e, "cannot forget a pending folder");
            }
        }
    }
    for device in reconnect.intersection(&new_devices) {
        disconnect(shared, *device, "configuration changed; reconnect");
    }
}

fn disconnect(shared: &Shared, device: DeviceId, reason: &str) {
    if let Some(connection) = shared.connection(device) {
        connection.close(crate::net::close::NORMAL.into(), reason.as_bytes());
    }
}
