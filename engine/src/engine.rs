//! The engine: one device's sync engine behind one handle. It owns the life cycle (one
//! task tracker, one cancellation token) and the owners of its state: the live
//! configuration, the store, the running folders, the connected peers and the event log.
//! Adapters (REST, CLI, control socket) call its operations; nothing below this module
//! takes the whole engine: each task gets the handles it uses.
//!
//! Who wakes me: adapters (operations), and auto-accept requests from sessions. Whom I
//! wake: the folders and dial loops a configuration change concerns.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::diff::{self, Command, Why};
use crate::config::introduce::{self, IntroducedFolder};
use crate::config::live::LiveConfig;
use crate::config::{Address, Config, ConfigEdit, FolderConfig, Home, HomeError, Invalid};
use crate::disk::scanner::MARKER_DIR;
use crate::disk::watch;
use crate::events::{Event, EventLog, RemoteState};
use crate::folder::offers::{self, AutoAccept, ConfigRequest, Offers};
use crate::folder::pull::{self, PullContext};
use crate::folder::registry::FolderRegistry;
use crate::folder::{Folder, FolderHandle, scan_loop, summary_loop};
use crate::life::Life;
use crate::net::discovery::{DiscoveryMethod, GlobalDiscovery};
use crate::net::relay::RelaySlot;
use crate::net::stun::{PublicAddress, Stun};
use crate::net::{LocalDiscovery, NetError, Transport};
use crate::peers::address_book::AddressBook;
use crate::peers::connection::accept_loop;
use crate::peers::dialer::Dialer;
use crate::peers::punch::HolePunching;
use crate::peers::rate::RateLimits;
use crate::peers::session::SessionContext;
use crate::peers::{PeerRegistry, PeerStatus, Peers, Reason};
use crate::store::{PendingDevice, PendingFolder, StoreError, StoreHandle};

/// What a start overrides for one run (never saved).
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// QUIC listen addresses instead of the configured ones (when not empty).
    pub listen: Vec<Address>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The home is unusable.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The listeners could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The index is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// Whether the start failed for a listen address (which may free up in a moment).
    pub fn is_listen(&self) -> bool {
        matches!(self, Self::Net(NetError::Listen { .. }))
    }
}

/// Why a configuration change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigChangeError {
    /// The change makes no sense (unknown device, bad address, ...): the client's fault.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Saving failed.
    #[error(transparent)]
    Save(#[from] HomeError),
    /// A new folder's index could not be opened: it is refused rather than saved dead.
    #[error("folder {folder:?}: {source}")]
    FolderStart {
        /// The folder.
        folder: String,
        /// Why.
        source: StoreError,
    },
}

/// Why a folder operation found no folder.
#[derive(Debug, thiserror::Error)]
pub enum FolderLookupError {
    /// No folder with this ID.
    #[error("no folder {0:?}")]
    Unknown(String),
    /// The folder is paused: it does not run.
    #[error("folder {0:?} is paused")]
    Paused(String),
}

/// The running engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    me: DeviceId,
    started: jiff::Timestamp,
    config: Arc<LiveConfig>,
    store: StoreHandle,
    events: Arc<EventLog>,
    folders: Arc<FolderRegistry>,
    registry: Arc<PeerRegistry>,
    offers: Arc<Offers>,
    transport: Arc<Transport>,
    dialer: Arc<Dialer>,
    book: Arc<AddressBook>,
    global: Arc<GlobalDiscovery>,
    local_discovery: Arc<LocalDiscovery>,
    stun: Arc<Stun>,
    rates: Arc<RateLimits>,
    /// The one file-system watcher every folder's changes come through.
    watchers: Arc<watch::Watchers>,
    life: Life,
    /// A stop was asked for so that the engine starts again.
    restart: AtomicBool,
    /// What index to erase before it starts again (`db reset`).
    reset: std::sync::Mutex<Option<IndexReset>>,
}

/// An index to erase at a restart (Syncthing's `/rest/system/reset`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexReset {
    /// Every folder's.
    All,
    /// One folder's.
    Folder(String),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.inner.me)
            .finish_non_exhaustive()
    }
}

/// How long an adapter's answer gets before a requested stop takes effect.
const STOP_GRACE: Duration = Duration::from_millis(100);

impl Engine {
    /// Starts the engine of `home`: opens the index, listens, starts every folder (each
    /// scans at once) and dials the configured devices.
    pub async fn start(home: &Home, options: StartOptions) -> Result<Self, EngineError> {
        let config = home.config()?;
        let identity = home.identity()?;
        let me = identity.device_id();
        let store = StoreHandle::new(home.store()?);
        let events = Arc::new(EventLog::default());
        let listen = if options.listen.is_empty() {
            config.listen.clone()
        } else {
            options.listen
        };
        let live = Arc::new(LiveConfig::new(home.clone(), config.clone()));
        // The TLS policy asks the live configuration, so a device accepted later gets in.
        let weak = Arc::downgrade(&live);
        let accept = move |peer| weak.upgrade().is_some_and(|c| c.is_known(peer));
        let life = Life::default();
        let transport = Arc::new(Transport::bind(&identity, accept, &listen, &life)?);
        let folders = Arc::new(FolderRegistry::default());
        let registry = Arc::new(PeerRegistry::new(me));
        let (requests_tx, requests) = mpsc::channel(16);
        let offers = Arc::new(Offers {
            config: live.clone(),
            folders: folders.clone(),
            store: store.clone(),
            events: events.clone(),
            requests: requests_tx,
        });
        // The first endpoint's public address, learned by STUN on its own socket.
        let stun = Arc::new(Stun::new(
            transport.relays().mux().clone(),
            live.clone(),
            listen.clone(),
        ));
        let rates = Arc::new(RateLimits::default());
        rates.apply(&config);
        let session = Arc::new(SessionContext {
            me,
            rates: rates.clone(),
            config: live.clone(),
            store: store.clone(),
            folders: folders.clone(),
            offers: offers.clone(),
            registry: registry.clone(),
            events: events.clone(),
            punching: Arc::new(HolePunching::new(stun.clone())),
            life: life.clone(),
        });
        let book = Arc::new(AddressBook::new(events.clone()));
        let global = Arc::new(GlobalDiscovery::new(
            Arc::new(identity),
            live.clone(),
            book.clone(),
            transport.local_addrs(),
            transport.relays().joined(),
            stun.announced(),
        ));
        let dialer = Arc::new(Dialer::new(
            transport.clone(),
            vec![book.clone(), global.clone()],
            book.clone(),
            session.clone(),
        ));
        // mDNS on the LAN, while `localAnnounceEnabled` is on (it follows the option live).
        let local_discovery = LocalDiscovery::start(
            me,
            &transport.local_addrs(),
            book.clone(),
            live.clone(),
            &life,
        );
        let engine = Self {
            inner: Arc::new(Inner {
                me,
                started: jiff::Timestamp::now(),
                config: live,
                store,
                events,
                folders,
                registry,
                offers,
                transport: transport.clone(),
                dialer,
                book,
                global: global.clone(),
                local_discovery,
                stun: stun.clone(),
                rates,
                watchers: Arc::default(),
                life,
                restart: AtomicBool::new(false),
                reset: std::sync::Mutex::new(None),
            }),
        };
        for folder in config.folders.iter().filter(|f| !f.paused) {
            engine.start_folder(folder.clone()).await?;
        }
        for index in 0..transport.endpoint_count() {
            engine
                .inner
                .life
                .spawn(accept_loop(transport.clone(), index, session.clone()));
        }
        engine
            .inner
            .life
            .spawn(engine.clone().config_requests(requests));
        let life = engine.inner.life.clone();
        engine.inner.life.spawn_in(
            tracing::info_span!("global_discovery"),
            global.run(life.clone()),
        );
        engine
            .inner
            .life
            .spawn_in(tracing::info_span!("stun"), stun.run(life));
        // A slot on one of the relays among the listen addresses, for devices that cannot
        // reach this one directly.
        let relays: Vec<Address> = listen
            .iter()
            .filter(|a| matches!(a, Address::Relay { .. }))
            .cloned()
            .collect();
        if !relays.is_empty() {
            let slot = transport
                .relays()
                .clone()
                .hold_slot(relays, engine.inner.config.clone());
            engine
                .inner
                .life
                .spawn_in(tracing::info_span!("relay_slot"), slot);
        }
        for device in &config.devices {
            engine.inner.dialer.dial(device.id);
        }
        engine
            .inner
            .events
            .emit(Event::StartupComplete { device: me });
        Ok(engine)
    }

    /// Every device discovery knows addresses for now (LAN and global lookups), configured
    /// or not, with those addresses: Syncthing's `/rest/system/discovery`.
    pub fn discovered(&self) -> Vec<(DeviceId, Vec<Address>)> {
        self.inner.book.snapshot()
    }

    /// Each discovery method's state, as Syncthing names them: `global@URL` per server,
    /// and `IPv4 local` / `IPv6 local` for mDNS while `localAnnounceEnabled` is on (one
    /// mDNS responder serves both, so both report its state).
    pub fn discovery_status(&self) -> Vec<DiscoveryMethod> {
        let mut methods = self.inner.global.status();
        if let Some(local) = self.inner.local_discovery.status() {
            let error = local.err().map(|e| e.to_string());
            for name in ["IPv4 local", "IPv6 local"] {
                methods.push(DiscoveryMethod {
                    name: name.to_owned(),
                    error: error.clone(),
                });
            }
        }
        methods
    }

    /// The relays among the listen addresses: which one this device holds a slot on
    /// (error `None`), and why not on the others.
    pub fn relay_slots(&self) -> Vec<RelaySlot> {
        self.inner.transport.relays().slots()
    }

    /// This device's ID.
    pub fn device_id(&self) -> DeviceId {
        self.inner.me
    }

    /// When the engine started.
    pub fn started(&self) -> jiff::Timestamp {
        self.inner.started
    }

    /// The first QUIC listener's public address as STUN servers see it, and what that says
    /// about the NAT (`stunServers`).
    pub fn public_address(&self) -> PublicAddress {
        self.inner.stun.public_address()
    }

    /// Where the QUIC listeners are bound.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.inner.transport.local_addrs()
    }

    /// The configuration as it stands.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.get()
    }

    /// Whether a saved change waits for a restart (listen or API address).
    pub fn restart_required(&self) -> bool {
        self.inner.config.restart_required()
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// Every running folder, in ID order.
    pub fn folders(&self) -> Vec<FolderHandle> {
        self.inner.folders.all()
    }

    /// The running folder `id`.
    pub fn folder(&self, id: &str) -> Result<FolderHandle, FolderLookupError> {
        self.inner.folders.get(id).ok_or_else(|| {
            if self.config().folder(id).is_some_and(|f| f.paused) {
                FolderLookupError::Paused(id.to_owned())
            } else {
                FolderLookupError::Unknown(id.to_owned())
            }
        })
    }

    /// The connected peer `device`.
    pub fn peer(&self, device: DeviceId) -> Option<PeerStatus> {
        self.inner.registry.status(device)
    }

    /// When `device` was last connected (now, while it is) and for how long, since the
    /// engine started.
    pub fn last_seen(&self, device: DeviceId) -> Option<(jiff::Timestamp, f64)> {
        self.inner.registry.last_seen(device)
    }

    /// Whether what `device` announced is current.
    pub fn remote_state(&self, device: DeviceId) -> RemoteState {
        summary_loop::remote_state(&*self.inner.registry, &self.inner.config, device)
    }

    /// Devices that knocked without being accepted (and still are not), newest first.
    pub async fn pending_devices(&self) -> Result<Vec<PendingDevice>, StoreError> {
        let pending = self.inner.store.read(|r| r.pending_devices()).await?;
        let config = self.config();
        Ok(pending
            .into_iter()
            .filter(|p| !config.devices.iter().any(|d| d.id == p.device))
            .collect())
    }

    /// Folders devices offered that are not shared with them here, newest first.
    pub async fn pending_folders(&self) -> Result<Vec<PendingFolder>, StoreError> {
        self.inner.store.read(|r| r.pending_folders()).await
    }

    /// Forgets a device that knocked.
    pub async fn forget_pending_device(&self, device: DeviceId) -> Result<(), StoreError> {
        self.inner
            .store
            .write(move |s| s.forget_pending_device(device))
            .await?;
        self.inner
            .events
            .emit(Event::PendingDeviceRemoved { device });
        Ok(())
    }

    /// Forgets the offers of `folder` (by `device`, or by everyone).
    pub async fn forget_pending_folder(
        &self,
        folder: &str,
        device: Option<DeviceId>,
    ) -> Result<(), StoreError> {
        let id = folder.to_owned();
        self.inner
            .store
            .write(move |s| s.forget_pending_folder(&id, device))
            .await?;
        self.inner.events.emit(Event::PendingFolderRemoved {
            folder: folder.to_owned(),
            device,
        });
        Ok(())
    }

    /// Applies one configuration change: edits the configuration as it stands (changes
    /// are serialised, so none is lost), checks it, prepares new folder roots, saves
    /// `config.toml` atomically, then carries out the difference without a restart.
    pub async fn change_config(&self, edit: ConfigEdit) -> Result<Arc<Config>, ConfigChangeError> {
        let inner = &self.inner;
        let change = inner.config.begin().await;
        let old = inner.config.get();
        let mut new = (*old).clone();
        edit.apply(&mut new, inner.me)?;
        new.check()?;
        let moved: Vec<&FolderConfig> = new
            .folders
            .iter()
            .filter(|f| old.folder(&f.id).is_none_or(|o| o.path != f.path))
            .collect();
        // Every new root is checked before any is made: a refused change leaves nothing.
        for folder in &moved {
            check_root(folder)?;
        }
        for folder in &moved {
            prepare_root(folder)?;
            // The folder's index must open before the change is saved.
            let id = folder.id.clone();
            inner
                .store
                .write(move |s| s.ensure_folder(&id))
                .await
                .map_err(|source| ConfigChangeError::FolderStart {
                    folder: folder.id.clone(),
                    source,
                })?;
        }
        inner.config.commit(&change, new.clone()).await?;
        inner.rates.apply(&new);
        for command in diff::diff(&old, &new) {
            self.carry_out(command).await;
        }
        inner.config.notify_changed();
        inner.events.emit(Event::ConfigSaved);
        info!("configuration changed and saved");
        Ok(inner.config.get())
    }

    async fn carry_out(&self, command: Command) {
        let inner = &self.inner;
        match command {
            Command::RestartRequired => inner.config.set_restart_required(),
            Command::ForgetPendingDevice(device) => {
                if let Err(e) = inner
                    .store
                    .write(move |s| s.forget_pending_device(device))
                    .await
                {
                    warn!(error = %e, "cannot forget a pending device");
                }
            }
            Command::Dial(device) => inner.dialer.dial(device),
            Command::Disconnect(device, why) => {
                let reason = match why {
                    Why::Paused => Reason::PausedNow,
                    Why::Removed => Reason::Removed,
                    Why::Reconfigured => Reason::Reconfigured,
                };
                inner.registry.disconnect(device, reason);
            }
            Command::StopFolder(id) => inner.folders.stop(&id),
            Command::StartFolder(config) => {
                inner.folders.stop(&config.id);
                let id = config.id.clone();
                if let Err(e) = self.start_folder(config).await {
                    warn!(folder = %id, error = %e, "cannot start the folder");
                }
            }
            Command::UpdateFolder(config) => {
                if let Some(running) = inner.folders.get(&config.id) {
                    running.set_config(config);
                    running.rescan.notify_one();
                }
            }
            Command::ForgetPendingFolder(folder, device) => {
                if let Err(e) = inner
                    .store
                    .write(move |s| s.forget_pending_folder(&folder, Some(device)))
                    .await
                {
                    warn!(error = %e, "cannot forget a pending folder");
                }
            }
        }
    }

    /// Starts a folder: registers it and spawns its scan loop, watcher, summary and puller.
    async fn start_folder(&self, config: FolderConfig) -> Result<(), StoreError> {
        let inner = &self.inner;
        let id = config.id.clone();
        let config_watch = (config.watch, watch::Quiet::of(config.watch_delay_s));
        let idx = inner.store.write(move |s| s.ensure_folder(&id)).await?;
        let folder = Arc::new(Folder::new(
            config,
            idx,
            inner.me,
            inner.store.clone(),
            inner.events.clone(),
            inner.life.child_token(),
        ));
        inner.folders.insert(folder.clone());
        let span = || tracing::info_span!("folder", id = %folder.id);
        let life = &inner.life;
        life.spawn_in(span(), scan_loop::scan_loop(folder.clone()));
        if config_watch.0 {
            let rescan = folder.clone();
            life.spawn_in(
                span(),
                watch::run(
                    inner.watchers.clone(),
                    folder.path(),
                    config_watch.1,
                    folder.stop.clone(),
                    move || rescan.watched.notify_one(),
                ),
            );
        } else {
            tracing::info!(folder = %folder.id, "not watched (fsWatcherEnabled is off): changes are found by the periodic rescan");
        }
        let peers: Arc<dyn Peers> = inner.registry.clone();
        life.spawn_in(
            span(),
            summary_loop::summary_loop(folder.clone(), peers.clone(), inner.config.clone()),
        );
        let context = PullContext {
            peers,
            folders: inner.folders.clone(),
        };
        life.spawn_in(span(), pull::pull_loop(folder, context));
        Ok(())
    }

    /// Carries out the configuration changes peers' ClusterConfigs ask for, one at a time.
    async fn config_requests(self, mut requests: mpsc::Receiver<ConfigRequest>) {
        loop {
            let request = tokio::select! {
                biased;
                () = self.inner.life.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            match request {
                ConfigRequest::Accept(request) => self.accept_offers(request).await,
                ConfigRequest::Introduce {
                    introducer,
                    folders,
                } => self.take_introductions(introducer, folders).await,
            }
        }
    }

    /// Adds (and removes) the devices an introducer shares folders with, in one change
    /// made against the configuration as it stands then.
    async fn take_introductions(&self, introducer: DeviceId, folders: Vec<IntroducedFolder>) {
        let before = self.config();
        if introduce::introduce(&before, self.inner.me, introducer, &folders).is_none() {
            return;
        }
        let edit = ConfigEdit::Introduce(introduce::Introduction {
            introducer,
            folders,
        });
        match self.change_config(edit).await {
            Ok(after) => info!(
                introducer = %introducer.short(),
                devices_before = before.devices.len(),
                devices_after = after.devices.len(),
                "took the introducer's devices and folders"
            ),
            Err(e) => {
                warn!(introducer = %introducer.short(), error = %e, "cannot take an introduction")
            }
        }
    }

    /// Places offers from a device with auto-accept, one configuration change per request
    /// (which reconnects the peer: its next session shares the new folders). Offers that
    /// find no place, or whose change is refused, wait as pending.
    async fn accept_offers(&self, request: AutoAccept) {
        let AutoAccept { peer, offers } = request;
        let mut refused = offers.clone();
        match offers::place(&self.config(), peer, &offers) {
            Ok((edit, left)) => match self.change_config(edit).await {
                Ok(_) => refused = left,
                Err(e) => {
                    warn!(device = %peer.short(), error = %e, "cannot auto-accept offered folders")
                }
            },
            Err(e) => {
                warn!(device = %peer.short(), error = %e, "cannot auto-accept offered folders")
            }
        }
        for offer in &refused {
            self.inner.offers.record_pending(peer, offer).await;
        }
    }

    /// Asks the engine to stop, after a moment (so an adapter can answer first).
    pub fn request_stop(&self) {
        let life = self.inner.life.clone();
        life.clone().spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            life.cancel();
        });
    }

    /// Asks the engine to stop so that its host starts it again.
    pub fn request_restart(&self) {
        self.inner.restart.store(true, Ordering::Relaxed);
        self.request_stop();
    }

    /// Asks the engine to stop so that its host erases `reset` and starts it again (the
    /// index is rebuilt from disk and from peers).
    pub fn request_reset(&self, reset: IndexReset) {
        *self.inner.reset.lock().unwrap_or_else(|e| e.into_inner()) = Some(reset);
        self.request_restart();
    }

    /// The index erase asked for, if any.
    pub fn reset_requested(&self) -> Option<IndexReset> {
        self.inner
            .reset
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the stop was a request to restart.
    pub fn restart_requested(&self) -> bool {
        self.inner.restart.load(Ordering::Relaxed)
    }

    /// Resolves once something asked the engine to stop.
    pub async fn stopped(&self) {
        self.inner.life.cancelled().await;
    }

    /// Stops every task and closes connections with a reason; waits for tasks to finish
    /// the step they are in (a pulled file is either renamed into place or left as a temp
    /// file). The sockets are released when the last clone of the engine is dropped.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.life.cancel();
        inner.registry.close_all(&Reason::Shutdown);
        inner.transport.close(&Reason::Shutdown);
        if !inner.life.wait(Duration::from_secs(10)).await {
            warn!("some tasks did not stop within 10 s");
        }
        inner.transport.wait_idle(Duration::from_secs(2)).await;
        inner.folders.stop_all();
    }
}

/// A new folder's root must be absolute, and without `..` (which could lead anywhere).
fn check_root(folder: &FolderConfig) -> Result<(), Invalid> {
    if !folder.path.is_absolute() {
        return Err(Invalid(format!(
            "folder {:?}: path {} must be absolute",
            folder.id,
            folder.path.display()
        )));
    }
    if folder
        .path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Invalid(format!(
            "folder {:?}: path {} must not contain \"..\"",
            folder.id,
            folder.path.display()
        )));
    }
    Ok(())
}

/// A new folder's root must exist (it is created if its parent does) and gets the marker.
fn prepare_root(folder: &FolderConfig) -> Result<(), Invalid> {
    let marker: &Path = &folder.path.join(MARKER_DIR);
    std::fs::create_dir_all(marker).map_err(|e| {
        Invalid(format!(
            "folder {:?}: cannot create {}: {e}",
            folder.id,
            folder.path.display()
        ))
    })
}
