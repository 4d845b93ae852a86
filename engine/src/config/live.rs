//! The configuration of a running engine: a snapshot everyone reads without waiting, and
//! changes made one at a time and saved before they take effect.
//!
//! Who wakes me: `Engine::change_config`. Whom I wake: dial loops (`changed`), which look
//! at the device's settings again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use peerfold_protocol::DeviceId;
use tokio::sync::{MutexGuard, Notify};

use super::{Config, DeviceConfig, Home, HomeError};

/// The configuration as it stands, and the one way to change it.
#[derive(Debug)]
pub(crate) struct LiveConfig {
    home: Home,
    current: RwLock<Arc<Config>>,
    /// Serialises changes, so none is lost: each edits the configuration as it stands.
    changes: tokio::sync::Mutex<()>,
    /// Woken (all waiters) after each change.
    changed: Notify,
    /// A change that only takes effect after a restart (listen or API address) was saved.
    restart_required: AtomicBool,
}

/// Held while one change is made.
pub(crate) struct ChangeGuard<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl LiveConfig {
    pub(crate) fn new(home: Home, config: Config) -> Self {
        Self {
            home,
            current: RwLock::new(Arc::new(config)),
            changes: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            restart_required: AtomicBool::new(false),
        }
    }

    /// The configuration now. (The lock only guards swapping the snapshot; a poisoned
    /// one still holds a whole snapshot.)
    pub(crate) fn get(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configured device `id`.
    pub(crate) fn device(&self, id: DeviceId) -> Option<DeviceConfig> {
        self.get().devices.iter().find(|d| d.id == id).cloned()
    }

    /// Whether `id` is a configured device.
    pub(crate) fn is_known(&self, id: DeviceId) -> bool {
        self.get().devices.iter().any(|d| d.id == id)
    }

    /// Whether `id` is a device the user chose to ignore.
    pub(crate) fn is_ignored(&self, id: DeviceId) -> bool {
        self.get().ignored_devices.iter().any(|d| d.id == id)
    }

    /// Whether `id` is a configured device that is paused.
    pub(crate) fn is_paused(&self, id: DeviceId) -> bool {
        self.get().devices.iter().any(|d| d.id == id && d.paused)
    }

    /// Starts a change; the next waits until this one is saved.
    pub(crate) async fn begin(&self) -> ChangeGuard<'_> {
        ChangeGuard(self.changes.lock().await)
    }

    /// Saves `new` (atomically, on a blocking thread) and makes it current.
    pub(crate) async fn commit(
        &self,
        _change: &ChangeGuard<'_>,
        new: Config,
    ) -> Result<(), HomeError> {
        let (home, to_save) = (self.home.clone(), new.clone());
        tokio::task::spawn_blocking(move || home.save_config(&to_save))
            .await
            .map_err(|e| HomeError::Io {
                path: self.home.config_path(),
                source: std::io::Error::other(e),
            })??;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(())
    }

    /// Tells dial loops to look again.
    pub(crate) fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Resolves at the next change.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    pub(crate) fn set_restart_required(&self) {
        self.restart_required.store(true, Ordering::Relaxed);
    }

    pub(crate) fn restart_required(&self) -> bool {
        self.restart_required.load(Ordering::Relaxed)
    }
}
