//! QUIC endpoints and connections: listen, dial known devices, authenticate peers by device
//! ID, keep one connection per device, and run a session on each.

mod framed;
pub(crate) mod session;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{self, PeerDecision, PeerPolicy};
use tracing::{debug, info, warn};

use crate::daemon::{DaemonError, Shared};

pub(crate) use framed::{FrameReader, StreamError, send};

/// QUIC application close codes.
pub(crate) mod close {
    /// Normal close (shutdown, duplicate connection).
    pub(crate) const NORMAL: u32 = 0;
    /// The peer is not a configured device here.
    pub(crate) const UNKNOWN_DEVICE: u32 = 1;
    /// The peer broke the protocol.
    pub(crate) const PROTOCOL: u32 = 2;
    /// The peer is paused here.
    pub(crate) const PAUSED: u32 = 3;
}

/// How long a QUIC connection may stay silent before it is dropped; keep-alives every 10 s
/// keep healthy ones open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The first reconnect backoff; it doubles up to the `reconnectionIntervalS` option.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// How long the device with the higher ID waits before its first dial (see `dial_loop`).
const HIGHER_ID_DIAL_DELAY: Duration = Duration::from_secs(1);

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    // One stream per block request: allow many in flight.
    transport.max_concurrent_bidi_streams(1024u32.into());
    Arc::new(transport)
}

/// The client side of the TLS identity, kept to build one client config per dial.
#[derive(Clone)]
pub(crate) struct ClientIdentity(Arc<Identity>);

pub(crate) fn client_identity(identity: &Identity) -> ClientIdentity {
    // Identities are not Clone (they hold a private key); rebuild one from PEM.
    let copy = Identity::from_pem(
        identity.certificate_pem().as_bytes(),
        identity.private_key_pem().as_bytes(),
    )
    .expect("an identity re-reads its own PEM");
    ClientIdentity(Arc::new(copy))
}

/// Binds one endpoint per listen address (`quic://HOST:PORT`).
pub(crate) fn bind(
    shared: &Arc<Shared>,
    identity: &Identity,
    listen: &[String],
) -> Result<Vec<quinn::Endpoint>, DaemonError> {
    // Known devices are accepted; unknown ones finish the handshake so they can be recorded
    // as pending and told why they are closed.
    // Asks the live configuration, so a device accepted through the API gets in.
    let weak = Arc::downgrade(shared);
    let policy = PeerPolicy::new(move |peer| {
        if weak.upgrade().is_some_and(|shared| shared.is_known(peer)) {
            PeerDecision::Accept
        } else {
            PeerDecision::Pending
        }
    });
    let tls = tls::server_config(identity, policy)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).map_err(|e| {
        DaemonError::Listen {
            address: String::new(),
            reason: e.to_string(),
        }
    })?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    let mut endpoints = Vec::new();
    for address in listen {
        let addr = resolve(address).map_err(|reason| DaemonError::Listen {
            address: address.clone(),
            reason,
        })?;
        match endpoint(server.clone(), addr) {
            Ok(endpoint) => endpoints.push(endpoint),
            // `[::]` often covers IPv4 too and then collides with `0.0.0.0`: fine as long as
            // some listener is up.
            Err(e) if !endpoints.is_empty() && e.kind() == std::io::ErrorKind::AddrInUse => {
                debug!(%address, error = %e, "listen address already covered");
            }
            Err(e) => {
                return Err(DaemonError::Listen {
                    address: address.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(endpoints)
}

/// `quic://HOST:PORT` to a socket address.
/// Bytes the kernel may queue on a QUIC socket before it drops datagrams. The default
/// (about 200 KiB) drops thousands of packets per GiB on loopback, and every drop halves
/// the congestion window; the kernel caps the request at `net.core.rmem_max`.
const SOCKET_BUFFER: usize = 8 << 20;

/// A QUIC endpoint on a UDP socket with large buffers.
fn endpoint(server: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // `[::]` listens on IPv6 only; IPv4 gets its own socket from `0.0.0.0`.
        socket.set_only_v6(true)?;
    }
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            debug!(%addr, error = %e, "cannot enlarge the {what} buffer");
        }
    }
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket.into(),
        runtime,
    )
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    let host_port = address
        .strip_prefix("quic://")
        .ok_or_else(|| format!("{address:?} is not quic://HOST:PORT"))?;
    host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to nothing"))
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        let shared2 = shared.clone();
        shared.tasks.spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => run_connection(shared2, connection, false).await,
                Err(e) => debug!(%remote, error = %e, "incoming handshake failed"),
            }
        });
    }
}

/// Keeps a connection to one configured device, redialing with backoff and jitter, until
/// the device is removed or paused (`Shared::dial` starts it again on resume).
pub(crate) async fn dial_loop(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    me: DeviceId,
    device: DeviceId,
    identity: ClientIdentity,
) {
    // When both sides dial at once, the connection dialed by the lower ID wins and the other
    // is closed, taking its in-flight requests with it. The higher ID dials a moment later,
    // so at start-up the lower one usually gets there first.
    if me > device {
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return shared.stop_dialing(device),
            () = tokio::time::sleep(HIGHER_ID_DIAL_DELAY) => {}
        }
    }
    let mut backoff = RETRY_MIN;
    loop {
        // The configuration may have changed: a removed or paused device is no longer
        // dialed, and changed addresses apply from the next attempt.
        let Some(current) = shared.dialable(device) else {
            return;
        };
        let retry_max = Duration::from_secs(shared.config().options.reconnection_interval_s);
        let addresses: Vec<String> = current
            .addresses
            .into_iter()
            .filter(|a| a.starts_with("quic://"))
            .collect();
        if shared.connection(device).is_none() {
            for address in &addresses {
                match dial(&endpoint, address, device, &identity).await {
                    Ok(connection) => {
                        let started = std::time::Instant::now();
                        run_connection(shared.clone(), connection, true).await;
                        // Only a session that lasted resets the backoff: a peer that
                        // refuses us right away is not redialed in a tight loop.
                        if started.elapsed() > Duration::from_secs(10) {
                            backoff = RETRY_MIN;
                        }
                        break;
                    }
                    Err(e) => {
                        debug!(device = %device.short(), %address, error = %e, "dial failed")
                    }
                }
            }
        }
        // Jitter from the device IDs and the attempt, so two devices do not dial in lockstep.
        let jitter = Duration::from_millis(u64::from(me.as_bytes()[0] ^ device.as_bytes()[0]) * 2);
        // A configuration change (new addresses, a pause) is looked at right away.
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return shared.stop_dialing(device),
            () = shared.config_changed.notified() => {}
            () = tokio::time::sleep(backoff.min(retry_max) + jitter) => {}
        }
        backoff = (backoff * 2).min(retry_max.max(RETRY_MIN));
    }
}

async fn dial(
    endpoint: &quinn::Endpoint,
    address: &str,
    expected: DeviceId,
    identity: &ClientIdentity,
) -> Result<quinn::Connection, String> {
    let addr = resolve(address)?;
    let tls =
        tls::client_config(&identity.0, PeerPolicy::only(expected)).map_err(|e| e.to_string())?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport());
    let server_name = tls::server_name();
    let name = match &server_name {
        rustls::pki_types::ServerName::DnsName(name) => name.as_ref().to_owned(),
        _ => "peerfold".to_owned(),
    };
    endpoint
        .connect_with(client, addr, &name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Authenticates the peer, keeps one connection per device, and runs the session.
async fn run_connection(shared: Arc<Shared>, connection: quinn::Connection, dialed: bool) {
    let remote = connection.remote_address();
    let Some(peer) = peer_device(&connection) else {
        connection.close(close::PROTOCOL.into(), b"no certificate");
        return;
    };
    if !shared.is_known(peer) {
        info!(device = %peer, %remote, "unknown device; recorded as pending");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Err(e) = shared
            .store()
            .record_pending_device(peer, "", &remote.to_string(), now)
        {
            warn!(error = %e, "cannot record pending device");
        }
        shared.events.emit(
            "PendingDevicesChanged",
            serde_json::json!({ "added": [{
                "deviceID": peer.to_string(),
                "name": "",
                "address": remote.to_string(),
            }] }),
        );
        connection.close(
            close::UNKNOWN_DEVICE.into(),
            b"this device is not accepted here: ask its owner to add your device ID",
        );
        return;
    }
    if shared.is_paused(peer) {
        debug!(device = %peer.short(), %remote, "paused device; connection refused");
        connection.close(close::PAUSED.into(), b"this device is paused here");
        return;
    }
    if !keep_one(&shared, peer, &connection, dialed) {
        connection.close(close::NORMAL.into(), b"duplicate connection");
        return;
    }
    info!(device = %peer.short(), %remote, dialed, "connected");
    // Pulls that failed for want of this peer can go on now.
    for folder in shared.folders_shared_with(peer) {
        folder.replan_everything();
        folder.pull.notify_one();
    }
    let result = session::run(&shared, peer, &connection, dialed).await;
    match (&result, connection.close_reason()) {
        (_, Some(reason)) => info!(device = %peer.short(), %reason, "disconnected"),
        (Ok(()), None) => info!(device = %peer.short(), "disconnected"),
        (Err(e), None) => warn!(device = %peer.short(), error = %e, "connection ended"),
    }
    if let Err(e) = result {
        connection.close(close::PROTOCOL.into(), e.to_string().as_bytes());
    }
    let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
    if peers
        .get(&peer)
        .is_some_and(|c| c.stable_id() == connection.stable_id())
    {
        peers.remove(&peer);
        drop(peers);
        shared.set_peer_info(peer, None);
        shared.events.emit(
            "DeviceDisconnected",
            serde_json::json!({
                "id": peer.to_string(),
                "error": connection.close_reason().map(|r| r.to_string()).unwrap_or_default(),
            }),
        );
    }
}

fn peer_device(connection: &quinn::Connection) -> Option<DeviceId> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::peer_device_id(&chain)
}

/// Registers `connection` unless a live one to `peer` should win. When both devices dial at
/// once, both keep the connection dialed by the device with the lower ID.
fn keep_one(shared: &Shared, peer: DeviceId, connection: &quinn::Connection, dialed: bool) -> bool {
    let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = peers.get(&peer)
        && existing.close_reason().is_none()
    {
        let dialer = if dialed { shared.me } else { peer };
        let preferred = shared.me.min(peer);
        if dialer != preferred {
            return false;
        }
        existing.close(close::NORMAL.into(), b"duplicate connection");
    }
    peers.insert(peer, connection.clone());
    true
}
