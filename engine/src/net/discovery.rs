//! The global discovery client (Syncthing's Global Discovery v3): announces this device's
//! listen addresses to every configured server, and looks up devices whose address is
//! `dynamic` for the dialer. Hits go to the `AddressBook` for 5 minutes; misses are not
//! asked again for 1 minute.
//!
//! Who wakes me: configuration changes (servers or `globalAnnounceEnabled`: the announce
//! loops restart) and the dialer (`addresses`, a lookup). Whom I wake: the dial loops,
//! through the book, when a lookup finds a new address.

mod https;
mod server_url;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::{Method, StatusCode};
use peerfold_protocol::DeviceId;
use peerfold_protocol::discovery::{Announcement, LookupReply, REANNOUNCE_AFTER, RETRY_AFTER};
use peerfold_protocol::identity::Identity;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Address;
use crate::config::live::LiveConfig;
use crate::life::Life;
use crate::peers::address_book::{AddressBook, Via};
use crate::peers::addresses::AddressSource;
use server_url::ServerUrl;

/// The first announce waits a little, as Syncthing's does, so a daemon that is restarted
/// in a loop does not hammer its servers.
const FIRST_ANNOUNCE: Duration = Duration::from_secs(5);
/// Re-announce interval when a server does not say (`Reannounce-After`).
const REANNOUNCE_DEFAULT: Duration = Duration::from_secs(30 * 60);
/// Retry interval after a failed announce when the server does not say (`Retry-After`).
const RETRY_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Bounds on what a server may ask for: no tight loop, no silence for days.
const WAIT_MIN: Duration = Duration::from_secs(10);
const WAIT_MAX: Duration = Duration::from_secs(2 * 3600);
/// How long a lookup's answer is trusted (Syncthing's cache times).
const HIT_TTL: Duration = Duration::from_secs(5 * 60);
const MISS_TTL: Duration = Duration::from_secs(60);
/// Devices whose lookup time is remembered at most (older entries are swept first).
const MAX_ASKED: usize = 4096;

/// One discovery method's state, as `/rest/system/status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryMethod {
    /// `global@URL`, or `IPv4 local` / `IPv6 local`.
    pub name: String,
    /// The last failure, `None` while it works (or has not failed yet).
    pub error: Option<String>,
}

/// The client, shared by the announce loops and the dialer.
pub(crate) struct GlobalDiscovery {
    identity: Arc<Identity>,
    config: Arc<LiveConfig>,
    book: Arc<AddressBook>,
    /// Where this device's endpoints listen (fixed for the engine's life).
    listening: Vec<SocketAddr>,
    /// The relay this device holds a slot on, if any (announced beside the listen
    /// addresses; a change is announced at once).
    relay: watch::Receiver<Option<String>>,
    /// The first endpoint's public address as STUN learned it (announced beside the listen
    /// addresses unless the NAT is symmetric; a change is announced at once).
    public: watch::Receiver<Option<SocketAddr>>,
    /// When each looked-up device may be asked again. Held for map updates only.
    asked: Mutex<HashMap<DeviceId, Instant>>,
    /// Each configured server's last failure, by its configured URL. Held for updates only.
    status: Mutex<BTreeMap<String, Option<String>>>,
}

impl std::fmt::Debug for GlobalDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalDiscovery")
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

/// Why an announce or a lookup failed (the text is what `discoveryErrors` shows).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoveryError {
    #[error(transparent)]
    Url(#[from] server_url::ServerUrlError),
    #[error(transparent)]
    Request(#[from] https::RequestError),
    #[error("{what} refused: {status} {body}")]
    Refused {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error(transparent)]
    Reply(#[from] peerfold_protocol::discovery::MessageError),
}

/// What a server answered to one lookup.
enum Lookup {
    Found(Vec<Address>),
    NotFound,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the map whole: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl GlobalDiscovery {
    pub(crate) fn new(
        identity: Arc<Identity>,
        config: Arc<LiveConfig>,
        book: Arc<AddressBook>,
        listening: Vec<SocketAddr>,
        relay: watch::Receiver<Option<String>>,
        public: watch::Receiver<Option<SocketAddr>>,
    ) -> Self {
        Self {
            identity,
            config,
            book,
            listening,
            relay,
            public,
            asked: Mutex::new(HashMap::new()),
            status: Mutex::new(BTreeMap::new()),
        }
    }

    /// The servers the configuration names, if global discovery is on. `default` stands
    /// for no server: peerfold runs no public discovery servers (devices find each other
    /// on the LAN, or through servers their users run).
    /// Each with its configured text, which keys its status.
    fn servers(&self) -> Vec<(String, Result<ServerUrl, server_url::ServerUrlError>)> {
        let config = self.config.get();
        if !config.options.global_announce_enabled {
            return Vec::new();
        }
        config
            .options
            .global_announce_servers
            .iter()
            .filter(|s| s.as_str() != "default")
            .map(|s| (s.clone(), ServerUrl::parse(s)))
            .collect()
    }

    fn record(&self, server: &str, error: Option<String>) {
        lock(&self.status).insert(server.to_owned(), error);
    }

    /// Every configured server's state (`global@URL`).
    pub(crate) fn status(&self) -> Vec<DiscoveryMethod> {
        lock(&self.status)
            .iter()
            .map(|(server, error)| DiscoveryMethod {
                name: format!("global@{server}"),
                error: error.clone(),
            })
            .collect()
    }

    /// Runs the announce loops until the engine stops, restarting them when the servers
    /// or `globalAnnounceEnabled` change.
    pub(crate) async fn run(self: Arc<Self>, life: Life) {
        loop {
            let options = self.config.get().options.clone();
            let servers = self.servers();
            let stop = life.child_token();
            {
                let mut status = lock(&self.status);
                status.clear();
                for (text, server) in &servers {
                    let error = server.as_ref().err().map(ToString::to_string);
                    status.insert(text.clone(), error);
                }
            }
            let usable = servers.into_iter().filter_map(|(_, server)| server.ok());
            for server in usable.filter(|s| s.announce) {
                let span = tracing::info_span!("announce", server = %server);
                life.spawn_in(span, self.clone().announce_loop(server, stop.clone()));
            }
            // Wait for a change that concerns discovery.
            loop {
                tokio::select! {
                    () = life.cancelled() => return,
                    () = self.config.changed() => {}
                }
                let now = &self.config.get().options;
                if now.global_announce_enabled != options.global_announce_enabled
                    || now.global_announce_servers != options.global_announce_servers
                {
                    break;
                }
            }
            stop.cancel();
            lock(&self.asked).clear();
        }
    }

    async fn announce_loop(self: Arc<Self>, server: ServerUrl, stop: CancellationToken) {
        let tls = match https::client_config(server.check, Some(&self.identity)) {
            Ok(tls) => tls,
            Err(e) => return self.record(&server.text, Some(e.to_string())),
        };
        let mut wait = FIRST_ANNOUNCE;
        let mut relay = self.relay.clone();
        relay.borrow_and_update();
        let mut public = self.public.clone();
        public.borrow_and_update();
        let mut announced = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                // A relay slot taken or lost, or a new public address: announced now
                // (after the first wait).
                Ok(()) = relay.changed(), if announced => {}
                Ok(()) = public.changed(), if announced => {}
            }
            relay.borrow_and_update();
            public.borrow_and_update();
            announced = true;
            let (error, next) = match self.announce(&server, tls.clone()).await {
                Ok(next) => (None, next),
                Err((error, next)) => {
                    warn!(%error, retry_in = ?next, "global announce failed");
                    (Some(error.to_string()), next)
                }
            };
            if stop.is_cancelled() {
                return;
            }
            self.record(&server.text, error);
            wait = next.clamp(WAIT_MIN, WAIT_MAX);
        }
    }

    /// This device's announced addresses: the listen addresses as they are, an unspecified
    /// host (`0.0.0.0`, `[::]`) left for the server to fill in with the address it sees,
    /// then the public address STUN learned (if any), then the relay slot.
    fn announcement(&self) -> Announcement {
        let mut addresses: Vec<String> = self
            .listening
            .iter()
            .map(|a| Address::quic(a.ip().to_string(), a.port()).to_string())
            .collect();
        addresses.dedup();
        if let Some(public) = *self.public.borrow() {
            let public = Address::quic(public.ip().to_string(), public.port()).to_string();
            if !addresses.contains(&public) {
                addresses.push(public);
            }
        }
        addresses.extend(self.relay.borrow().clone());
        Announcement { addresses }
    }

    /// One announce; the wait until the next, or why it failed and the wait until a retry.
    async fn announce(
        &self,
        server: &ServerUrl,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Duration, (DiscoveryError, Duration)> {
        let body = self.announcement().encode();
        let reply = https::send(server, tls, Method::POST, &server.target, Some(body))
            .await
            .map_err(|e| (e.into(), RETRY_DEFAULT))?;
        if reply.status.is_success() {
            let next = reply
                .seconds(REANNOUNCE_AFTER)
                .unwrap_or(REANNOUNCE_DEFAULT);
            debug!(?next, "announced");
            return Ok(next);
        }
        let retry = reply.seconds(RETRY_AFTER).unwrap_or(RETRY_DEFAULT);
        let refused = DiscoveryError::Refused {
            what: "announce",
            status: reply.status,
            body: reply.body_text(),
        };
        Err((refused, retry))
    }

    /// Asks `server` for `device`'s addresses (without our certificate).
    async fn lookup(&self, server: &ServerUrl, device: DeviceId) -> Result<Lookup, DiscoveryError> {
        let tls = https::client_config(server.check, None)?;
        let target = server.lookup_target(device);
        let reply = https::send(server, tls, Method::GET, &target, None).await?;
        match reply.status {
            StatusCode::OK => {
                let found = LookupReply::decode(&reply.body)?;
                // Addresses this device cannot dial (Syncthing's tcp://) are left out.
                let addresses = found
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<Address>().ok())
                    .filter(|a| *a != Address::Dynamic)
                    .collect();
                Ok(Lookup::Found(addresses))
            }
            StatusCode::NOT_FOUND => Ok(Lookup::NotFound),
            status => Err(DiscoveryError::Refused {
                what: "lookup",
                status,
                body: reply.body_text(),
            }),
        }
    }

    /// Whether `device` was asked about recently; if not, marks it asked for `ttl`.
    fn ask_now(&self, device: DeviceId, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut asked = lock(&self.asked);
        if asked.get(&device).is_some_and(|until| *until > now) {
            return false;
        }
        if asked.len() >= MAX_ASKED {
            asked.retain(|_, until| *until > now);
        }
        asked.insert(device, now + ttl);
        true
    }
}

/// Lookups, for the dialer: a hit is also kept in the book, which the dialer asks first.
#[async_trait::async_trait]
impl AddressSource for GlobalDiscovery {
    async fn addresses(&self, device: DeviceId) -> Vec<Address> {
        let servers: Vec<ServerUrl> = self
            .servers()
            .into_iter()
            .filter_map(|(_, server)| server.ok())
            .filter(|s| s.lookup)
            .collect();
        if servers.is_empty() || !self.ask_now(device, MISS_TTL) {
            return Vec::new();
        }
        for server in &servers {
            match self.lookup(server, device).await {
                Ok(Lookup::Found(addresses)) if !addresses.is_empty() => {
                    info!(device = %device.short(), %server, ?addresses, "found by global discovery");
                    self.book.learn(device, Via::Global, &addresses, HIT_TTL);
                    lock(&self.asked).insert(device, Instant::now() + HIT_TTL);
                    if !server.announce {
                        self.record(&server.text, None);
                    }
                    return addresses;
                }
                Ok(_) => debug!(device = %device.short(), %server, "not known to the server"),
                Err(error) => {
                    debug!(device = %device.short(), %server, %error, "lookup failed");
                    // A server that only looks up has no announce to report on.
                    if !server.announce {
                        self.record(&server.text, Some(error.to_string()));
                    }
                }
            }
        }
        Vec::new()
    }
}
