//! The [`Server`]: binds the relay port and the status port, runs the accept loop, and shuts
//! everything down through one cancellation token and one task tracker.
//!
//! Every accepted connection is sorted by its first byte (peeked, so nothing is consumed):
//! `0x16` opens a TLS handshake, so protocol mode; anything else is a plaintext
//! `JoinSessionRequest`, so session mode. Connection-level limits live here: a hard cap on
//! open sockets (closed on accept), and the handshake timeout, which bounds both the wait
//! for the first byte and the TLS handshake, so a client that connects and stalls costs a
//! socket for seconds, not forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::relay::RelayUrl;
use peerfold_protocol::tls::relay_server_config;
use peerfold_server_kit::{identity, stun};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::limits::PerIpLimiter;
use crate::registry::Registry;
use crate::session::{SessionLimits, Sessions};
use crate::stats::{SAMPLE_EVERY, Stats};
use crate::{protocol_mode, session, status};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Sockets beyond the protocol clients and two per session: room for handshakes in flight.
const SPARE_SOCKETS: usize = 256;

/// What every task of one relay shares.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) config: Config,
    /// The port put in invitations: `--ext-address`'s, else the one we listen on.
    pub(crate) session_port: u16,
    pub(crate) registry: Registry,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) connect_limiter: PerIpLimiter,
    /// One per protocol-mode connection, `max_clients` in all.
    pub(crate) client_permits: Semaphore,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// A running relay.
///
/// Start it with [`Server::bind`], read [`Server::url`] (what clients put in their relay
/// list), [`Server::local_addr`] and [`Server::status_addr`], and stop it with
/// [`Server::shutdown`]. Dropping the handle stops the tasks too, without waiting.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    status_addr: Option<SocketAddr>,
    stun_addr: Option<SocketAddr>,
    device_id: DeviceId,
    url: RelayUrl,
    relay: Arc<Relay>,
}

impl Server {
    /// Makes or loads the relay's identity in `config.data`, binds the relay port and (if
    /// configured) the status port, and starts serving.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let data = config.data.clone();
        // Files block: read or write them off the runtime.
        let identity = tokio::task::spawn_blocking(move || identity::load_or_create(&data))
            .await
            .expect("the identity thread does not panic")?;
        let tls = TlsAcceptor::from(Arc::new(relay_server_config(&identity)?));
        let listener = bind(config.listen).await?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let status_listener = match config.status_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let status_addr = status_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        // STUN on UDP at the same port number as the relay's TCP port.
        let stun_socket = stun::bind(config.stun, local_addr, config.listen.port() == 0)
            .await
            .map_err(|(addr, source)| Error::Bind { addr, source })?;
        let stun_addr = stun_socket
            .as_ref()
            .and_then(|socket| socket.local_addr().ok());

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let stats = Arc::new(Stats::new());
        let sessions = Arc::new(Sessions::new(
            SessionLimits {
                max_sessions: config.max_sessions,
                max_pending_keys: config.max_pending_keys,
                message_timeout: config.message_timeout,
                network_timeout: config.network_timeout,
                per_session_rate: config.per_session_rate,
            },
            config.global_rate,
            stats.clone(),
            tasks.clone(),
            cancel.clone(),
        ));
        let max_sockets = config
            .max_clients
            .saturating_add(config.max_sessions.saturating_mul(2))
            .saturating_add(SPARE_SOCKETS);
        let device_id = identity.device_id();
        let url = RelayUrl {
            host: config.ext_ip.unwrap_or_else(|| local_addr.ip()).to_string(),
            port: config.ext_port.unwrap_or(local_addr.port()),
            id: Some(device_id),
            token: Some(config.token.clone()).filter(|token| !token.is_empty()),
        };
        let relay = Arc::new(Relay {
            session_port: config.ext_port.unwrap_or(local_addr.port()),
            registry: Registry::default(),
            sessions,
            stats,
            connect_limiter: PerIpLimiter::new(config.connect_rate, config.connect_burst),
            client_permits: Semaphore::new(config.max_clients),
            cancel,
            tasks,
            config,
        });
        relay.tasks.spawn(accept_loop(
            relay.clone(),
            listener,
            tls,
            Arc::new(Semaphore::new(max_sockets)),
        ));
        if let Some(listener) = status_listener {
            relay.tasks.spawn(status::serve(relay.clone(), listener));
        }
        if let Some(socket) = stun_socket {
            let limiter = PerIpLimiter::new(stun::RATE, f64::from(stun::BURST));
            let allow = move |ip, now| limiter.allow(ip, now);
            relay
                .tasks
                .spawn(stun::serve(socket, relay.cancel.clone(), allow));
        }
        relay.tasks.spawn(sample_loop(relay.clone()));
        tracing::info!(addr = %local_addr, device = %device_id, "relay started");
        Ok(Self {
            local_addr,
            status_addr,
            stun_addr,
            device_id,
            url,
            relay,
        })
    }

    /// The address the relay port is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain-HTTP status listener's address, if one was asked for.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// The UDP address STUN Binding requests are answered at (the relay's port number), if
    /// STUN is on.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// The relay's device ID: the SHA-256 of its certificate, for clients' `?id=` pinning.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The relay's URL as parts: the external address if configured, else the bound one
    /// (`0.0.0.0` as is when bound to every interface), its ID, and its token if private.
    pub fn relay_url(&self) -> &RelayUrl {
        &self.url
    }

    /// `relay://HOST:PORT/?id=RELAY-ID` (plus `&token=...` on a private relay): what
    /// devices put in their relay list.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    /// Stops accepting, closes every connection and session, and waits for all tasks.
    pub async fn shutdown(self) {
        self.relay.cancel.cancel();
        self.relay.tasks.close();
        self.relay.tasks.wait().await;
        tracing::info!(addr = %self.local_addr, "relay stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.relay.cancel.cancel();
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

async fn accept_loop(
    relay: Arc<Relay>,
    listener: TcpListener,
    tls: TlsAcceptor,
    sockets: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = relay.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = sockets.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "too many sockets, closing");
            continue;
        };
        relay
            .tasks
            .spawn(handle(relay.clone(), tcp, addr, tls.clone(), permit));
    }
}

/// Sorts a connection into protocol or session mode and serves it.
async fn handle(
    relay: Arc<Relay>,
    tcp: TcpStream,
    addr: SocketAddr,
    tls: TlsAcceptor,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let cancel = relay.cancel.clone();
    let timeout = relay.config.handshake_timeout;
    let started = Instant::now();
    let mut first = [0; 1];
    let peeked = tokio::select! {
        () = cancel.cancelled() => return,
        peeked = tokio::time::timeout(timeout, tcp.peek(&mut first)) => peeked,
    };
    match peeked {
        Ok(Ok(1..)) => {}
        Ok(Ok(0)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "reading the first byte failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "no first byte in time");
            return;
        }
    }
    if first[0] != TLS_HANDSHAKE {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = session::serve(relay.clone(), tcp, addr) => {}
        }
        return;
    }
    // One budget for the first byte and the handshake together.
    let handshake = tokio::time::timeout_at(started + timeout, tls.accept(tcp));
    let stream = tokio::select! {
        () = cancel.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%addr, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%addr, "TLS handshake timed out");
                return;
            }
        },
    };
    protocol_mode::serve(relay, stream, addr).await;
}

/// Samples the byte count for the `/status` rates.
async fn sample_loop(relay: Arc<Relay>) {
    let mut ticks = tokio::time::interval_at(Instant::now() + SAMPLE_EVERY, SAMPLE_EVERY);
    loop {
        tokio::select! {
            () = relay.cancel.cancelled() => break,
            now = ticks.tick() => relay.stats.sample(now),
        }
    }
}
