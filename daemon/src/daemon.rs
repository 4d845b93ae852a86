//! The running daemon: owns the store, the folders' tasks and the network, and stops them
//! together.
//!
//! Every task belongs to one `TaskTracker` and watches one `CancellationToken`; `shutdown`
//! cancels, closes the QUIC endpoints with a reason, and waits for the tasks to finish the
//! step they are in (a pulled file is either renamed into place or left as a temp file).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

mod folder;
mod scan;

pub(crate) use folder::{Folder, FolderState, Replan};
pub(crate) use scan::scan;

use crate::events::EventLog;
use crate::net;
use crate::puller;
use peerfold_engine::config::{Config, FolderConfig};
use peerfold_engine::config::{Home, HomeError};
use peerfold_engine::store::{Store, StoreError, StoreHandle};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The home is unusable.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A listen address is malformed or cannot be bound.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] peerfold_protocol::tls::TlsConfigError),
}

/// State shared by the daemon's tasks.
pub(crate) struct Shared {
    /// The configuration as it stands (changed live through the REST API).
    config: RwLock<Config>,
    pub(crate) home: Home,
    pub(crate) me: DeviceId,
    pub(crate) device_name: String,
    store: StoreHandle,
    folders: RwLock<HashMap<String, Arc<Folder>>>,
    /// What dialing a newly added device needs.
    dialer: Mutex<Option<Dialer>>,
    /// Serialises configuration changes, so none is lost.
    pub(crate) config_change: tokio::sync::Mutex<()>,
    /// Woken (all waiters) after each configuration change, so dial loops look again.
    pub(crate) config_changed: Notify,
    /// Devices a dial loop runs for (at most one each).
    dialing: Mutex<HashSet<DeviceId>>,
    /// `POST /rest/system/restart` asked for a restart (the daemon stops, then `serve`
    /// starts it again).
    restart: std::sync::atomic::AtomicBool,
    /// A change that only takes effect after a restart (listen or API address) was saved.
    pub(crate) restart_required: std::sync::atomic::AtomicBool,
    pub(crate) peers: Mutex<HashMap<DeviceId, quinn::Connection>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) events: Arc<EventLog>,
    pub(crate) started: jiff::Timestamp,
    /// Where the QUIC listeners and the REST API are bound (known once bound).
    bound: Mutex<Bound>,
    /// What each connected peer said about itself.
    peers_info: Mutex<HashMap<DeviceId, PeerInfo>>,
    /// When each device was last connected, and for how long (since the start).
    last_seen: Mutex<HashMap<DeviceId, (jiff::Timestamp, f64)>>,
}

/// The endpoint and identity devices are dialed with.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) identity: net::ClientIdentity,
}

#[derive(Debug, Default)]
struct Bound {
    quic: Vec<SocketAddr>,
    api: Option<SocketAddr>,
}

/// A connected peer, as `/rest/system/connections` shows it.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) started_at: jiff::Timestamp,
    /// We dialed it (a client connection) rather than it us.
    pub(crate) dialed: bool,
    pub(crate) client_version: String,
}

impl Shared {
    /// The store's writer, for a short critical section that never spans an `.await`
    /// (transitional: see `StoreHandle::lock_writer_blocking`).
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock_writer_blocking()
    }

    /// The store handle: writes and reads on blocking threads, readers beside the writer.
    pub(crate) fn store_handle(&self) -> &StoreHandle {
        &self.store
    }

    /// A copy of the configuration as it stands.
    pub(crate) fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The REST API's key as configured now.
    pub(crate) fn api_key(&self) -> String {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .api
            .key
            .clone()
    }

    /// The configured device, if `id` is one.
    pub(crate) fn is_known(&self, id: DeviceId) -> bool {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .devices
            .iter()
            .any(|d| d.id == id)
    }

    /// Whether `id` is a configured device that is paused.
    pub(crate) fn is_paused(&self, id: DeviceId) -> bool {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .devices
            .iter()
            .any(|d| d.id == id && d.paused)
    }

    /// The running folder `id`.
    pub(crate) fn folder(&self, id: &str) -> Option<Arc<Folder>> {
        self.folders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every running folder, in ID order.
    pub(crate) fn folders(&self) -> Vec<Arc<Folder>> {
        let mut all: Vec<Arc<Folder>> = self
            .folders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Folders shared with `device`.
    pub(crate) fn folders_shared_with(&self, device: DeviceId) -> Vec<Arc<Folder>> {
        self.folders()
            .into_iter()
            .filter(|f| f.shares_with(device))
            .collect()
    }

    /// Starts a folder: registers it and spawns its scan loop, watcher and puller.
    pub(crate) fn start_folder(self: &Arc<Self>, config: FolderConfig) -> Result<(), StoreError> {
        let idx = self.store().ensure_folder(&config.id)?;
        let folder = Arc::new(Folder::new(
            config,
            idx,
            self.events.clone(),
            self.cancel.child_token(),
        ));
        self.folders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(folder.id.clone(), folder.clone());
        self.tasks
            .spawn(scan::scan_loop(self.clone(), folder.clone()));
        self.tasks.spawn(crate::watch::run(folder.clone()));
        self.tasks
            .spawn(crate::summary::announce(self.clone(), folder.clone()));
        self.tasks.spawn(puller::run(self.clone(), folder));
        Ok(())
    }

    /// Stops a folder's tasks and forgets it; its files and index stay.
    pub(crate) fn stop_folder(&self, id: &str) {
        let removed = self
            .folders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(folder) = removed {
            folder.stop.cancel();
        }
    }

    /// Starts dialing a device, unless a dial loop already runs for it (that one picks up
    /// the change).
    pub(crate) fn dial(self: &Arc<Self>, device: DeviceId) {
        let dialer = self
            .dialer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(dialer) = dialer else { return };
        if self.dialable(device).is_none()
            || !self
                .dialing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(device)
        {
            return;
        }
        self.tasks.spawn(net::dial_loop(
            self.clone(),
            dialer.endpoint,
            self.me,
            device,
            dialer.identity,
        ));
    }

    /// The device's settings while its dial loop should go on; `None` (and the loop
    /// unregistered) once it is removed or paused. Checked under the `dialing` lock, so a
    /// `dial` for a device resumed just now either sees the loop or starts a new one.
    pub(crate) fn dialable(
        &self,
        device: DeviceId,
    ) -> Option<peerfold_engine::config::DeviceConfig> {
        let mut dialing = self.dialing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self
            .config()
            .devices
            .into_iter()
            .find(|d| d.id == device && !d.paused);
        if current.is_none() {
            dialing.remove(&device);
        }
        current
    }

    /// Unregisters a dial loop that ends because the daemon stops.
    pub(crate) fn stop_dialing(&self, device: DeviceId) {
        self.dialing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&device);
    }

    /// Stops the daemon so that `serve` starts it again.
    pub(crate) fn request_restart(&self) {
        self.restart
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.cancel.cancel();
    }

    /// Where the QUIC listeners are bound.
    pub(crate) fn listening(&self) -> Vec<SocketAddr> {
        self.bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .quic
            .clone()
    }

    /// Where the REST API is bound.
    pub(crate) fn api_address(&self) -> Option<SocketAddr> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner()).api
    }

    /// What `device` said about itself, while it is connected.
    pub(crate) fn peer_info(&self, device: DeviceId) -> Option<PeerInfo> {
        self.peers_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&device)
            .cloned()
    }

    /// Records (or with `None`, forgets) what `device` said about itself. Forgetting it
    /// (the device disconnected) records when it was last seen and for how long.
    pub(crate) fn set_peer_info(&self, device: DeviceId, info: Option<PeerInfo>) {
        let mut all = self.peers_info.lock().unwrap_or_else(|p| p.into_inner());
        match info {
            Some(info) => {
                all.insert(device, info);
            }
            None => {
                if let Some(gone) = all.remove(&device) {
                    let now = jiff::Timestamp::now();
                    let seconds = now.duration_since(gone.started_at).as_secs_f64();
                    self.last_seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(device, (now, seconds));
                }
            }
        }
    }

    /// When `device` was last connected (now, while it is) and how long that lasted.
    pub(crate) fn last_seen(&self, device: DeviceId) -> Option<(jiff::Timestamp, f64)> {
        if let Some(info) = self.peer_info(device) {
            let now = jiff::Timestamp::now();
            return Some((now, now.duration_since(info.started_at).as_secs_f64()));
        }
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&device)
            .copied()
    }

    /// The connection to `device`, if there is one.
    pub(crate) fn connection(&self, device: DeviceId) -> Option<quinn::Connection> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&device)
            .cloned()
    }
}

/// What `peerfold serve` overrides for one run.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// QUIC listen addresses instead of the configured ones (when not empty).
    pub listen: Vec<String>,
    /// The REST API's address instead of the configured one.
    pub api: Option<String>,
}

/// A running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    endpoints: Vec<quinn::Endpoint>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("device", &self.shared.me)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Starts the daemon of `home`: scans every folder, listens, dials known devices.
    /// `listen` overrides the configured listen addresses when not empty.
    pub async fn start(home: &Home, options: StartOptions) -> Result<Self, DaemonError> {
        // The overrides hold for this run only: the configuration (saved again by live
        // changes) keeps what the file says.
        let config = home.config()?;
        let listen = if options.listen.is_empty() {
            config.listen.clone()
        } else {
            options.listen.clone()
        };
        let identity = home.identity()?;
        let store = home.store()?;
        let events = Arc::new(EventLog::default());
        let shared = Arc::new(Shared {
            me: identity.device_id(),
            device_name: config.device_name.clone(),
            config: RwLock::new(config.clone()),
            home: home.clone(),
            store: StoreHandle::new(store),
            folders: RwLock::new(HashMap::new()),
            dialer: Mutex::new(None),
            config_change: tokio::sync::Mutex::new(()),
            config_changed: Notify::new(),
            dialing: Mutex::new(HashSet::new()),
            restart: std::sync::atomic::AtomicBool::new(false),
            restart_required: std::sync::atomic::AtomicBool::new(false),
            peers: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            events,
            started: jiff::Timestamp::now(),
            bound: Mutex::new(Bound::default()),
            peers_info: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
        });
        let endpoints = net::bind(&shared, &identity, &listen)?;
        let api_address = options.api.unwrap_or_else(|| config.api.address.clone());
        let api_listener =
            crate::api::bind(&api_address)
                .await
                .map_err(|e| DaemonError::Listen {
                    address: api_address.clone(),
                    reason: format!(
                        "{e} (the REST API; choose another with --api or [api] address)"
                    ),
                })?;
        {
            let mut bound = shared.bound.lock().unwrap_or_else(|p| p.into_inner());
            bound.quic = endpoints
                .iter()
                .filter_map(|e| e.local_addr().ok())
                .collect();
            bound.api = api_listener.local_addr().ok();
        }
        shared
            .tasks
            .spawn(crate::api::serve(shared.clone(), api_listener));
        for folder in config.folders.iter().filter(|f| !f.paused) {
            shared
                .start_folder(folder.clone())
                .map_err(|e| DaemonError::Home(HomeError::Store(e)))?;
        }
        for endpoint in &endpoints {
            shared
                .tasks
                .spawn(net::accept_loop(shared.clone(), endpoint.clone()));
        }
        match crate::control::bind(home) {
            Ok(listener) => {
                shared.tasks.spawn(crate::control::serve(
                    shared.clone(),
                    listener,
                    crate::control::socket_path(home),
                ));
            }
            Err(e) => warn!(error = %e, "no status socket; `peerfold status` will not work"),
        }
        if let Some(endpoint) = endpoints.first() {
            *shared.dialer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Dialer {
                endpoint: endpoint.clone(),
                identity: net::client_identity(&identity),
            });
            for device in &config.devices {
                shared.dial(device.id);
            }
        }
        shared.events.emit(
            "StartupComplete",
            serde_json::json!({ "myID": shared.me.to_string() }),
        );
        Ok(Self { shared, endpoints })
    }

    /// The addresses the QUIC listeners are bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// This device's ID.
    pub fn device_id(&self) -> DeviceId {
        self.shared.me
    }

    /// Where the REST API listens.
    pub fn api_address(&self) -> Option<SocketAddr> {
        self.shared.api_address()
    }

    /// Resolves when something asked the daemon to stop (`POST /rest/system/shutdown` or
    /// `/rest/system/restart`).
    pub async fn stop_requested(&self) {
        self.shared.cancel.cancelled().await;
    }

    /// Whether the stop was a request to restart.
    pub fn restart_requested(&self) -> bool {
        self.shared
            .restart
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops every task and closes connections with a reason.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        for endpoint in &self.endpoints {
            endpoint.close(0u32.into(), b"peerfold is shutting down");
        }
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.shared.tasks.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop within 10 s");
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        // Drop what keeps the sockets open, so a restart in this process can bind the
        // same addresses.
        *self.shared.dialer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shared
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.shared
            .folders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
