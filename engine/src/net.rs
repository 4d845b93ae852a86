//! The transport: QUIC endpoints (quinn) with TLS pinned to device IDs (rustls), dialing
//! and accepting, and the `Link` a QUIC connection is to the rest of the engine. The only
//! module that names quinn, rustls or socket2, and (in `mdns`) mdns-sd; `relay` holds
//! this device's slot on a relay and turns relay sessions into paths of the first endpoint;
//! `stun` learns the first endpoint's public address on its own socket.

mod bep_greeting;
pub(crate) mod discovery;
mod mdns;
mod quic_link;
pub(crate) mod relay;
pub(crate) mod stun;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{self, PeerDecision, PeerPolicy, TlsConfigError};
use tracing::{debug, info, warn};

use crate::config::Address;
use crate::life::Life;
use crate::peers::Reason;
use crate::peers::flow::Windows;
use crate::peers::link::Link;
pub(crate) use mdns::LocalDiscovery;
use quic_link::QuicLink;
use relay::{MuxSocket, Relays};

/// How long a QUIC connection may stay silent before it is dropped; keep-alives every 10 s
/// keep healthy ones open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Bytes the kernel may queue on a QUIC socket before it drops datagrams. The default
/// (about 200 KiB) drops thousands of packets per GiB on loopback, and every drop halves
/// the congestion window; the kernel caps the request at `net.core.rmem_max`.
const SOCKET_BUFFER: usize = 8 << 20;

/// Why the transport could not start, or a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A listen address cannot be used.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// QUIC refused the TLS configuration.
    #[error("QUIC cannot use the TLS configuration: {0}")]
    Crypto(String),
    /// An address this transport cannot dial.
    #[error("{0} is not a QUIC or relay address")]
    NotQuic(Address),
    /// A relay could not give a session.
    #[error("relay: {0}")]
    Relay(#[from] relay::RelayClientError),
    /// An address that resolves to nothing.
    #[error("{address} does not resolve: {source}")]
    Resolve {
        /// The address.
        address: Address,
        /// Why.
        source: std::io::Error,
    },
    /// The dial failed.
    #[error("{0}")]
    Connect(String),
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    // One stream per block request: allow many in flight.
    transport.max_concurrent_bidi_streams(1024u32.into());
    // What a peer may send that this device has not read yet, over all streams (the
    // default is unbounded: 1,024 streams of 1.25 MB each), and what this device may have
    // sent unacknowledged (default 10 MB): the windows of a link with no round trip to
    // speak of; `QuicLink` sizes them to the handshake's round trip (peers/flow).
    let windows = Windows::for_round_trip(Duration::ZERO);
    transport.send_window(windows.send.into());
    transport.receive_window(windows.receive.into());
    Arc::new(transport)
}

/// The QUIC endpoints of one engine.
pub(crate) struct Transport {
    endpoints: Vec<quinn::Endpoint>,
    identity: Arc<Identity>,
    /// Relayed paths, all under the first endpoint.
    relays: Arc<Relays>,
}

/// A connection being accepted: the handshake may take a while, so it is finished in a
/// task of its own.
pub(crate) struct Incoming(quinn::Incoming, Arc<Relays>);

/// An authenticated link and the device at the other end.
pub(crate) type Accepted = (Arc<dyn Link>, DeviceId);

impl Incoming {
    /// Completes the handshake. A Syncthing device is told `our_name` in BEP's Hello.
    pub(crate) async fn finish(self, our_name: &str) -> Result<Accepted, NetError> {
        let remote = self.0.remote_address();
        let relayed = self.1.claim(remote);
        let connection = self
            .0
            .await
            .map_err(|e| NetError::Connect(format!("{remote}: {e}")))?;
        if bep_greeting::is_bep(&connection) {
            let device = peer_device(&connection).map(|d| d.to_string());
            let greeted = bep_greeting::greet(&connection, our_name).await;
            info!(?device, %remote, hello = ?greeted, "a Syncthing device dialed in; it is told our name and closed (peerfold does not speak BEP)");
            return Err(NetError::Connect(format!(
                "{remote}: a Syncthing (BEP) connection"
            )));
        }
        let Some(peer) = peer_device(&connection) else {
            connection.close(
                Reason::Protocol(String::new()).code().into(),
                b"no certificate",
            );
            return Err(NetError::Connect(format!("{remote}: no certificate")));
        };
        let link = match relayed {
            Some((relay, path)) => {
                self.1.tie(&connection, path);
                QuicLink::relayed(connection, relay)
            }
            None => QuicLink::new(connection),
        };
        Ok((Arc::new(link), peer))
    }
}

impl Transport {
    /// Binds one endpoint per listen address. Devices `accept` says yes to are let in;
    /// others finish the handshake so they can be recorded as pending and told why they
    /// are closed.
    pub(crate) fn bind(
        identity: &Identity,
        accept: impl Fn(DeviceId) -> bool + Send + Sync + 'static,
        listen: &[Address],
        life: &Life,
    ) -> Result<Self, NetError> {
        let policy = PeerPolicy::new(move |peer| {
            if accept(peer) {
                PeerDecision::Accept
            } else {
                PeerDecision::Pending
            }
        });
        let mut tls = tls::server_config(identity, policy)?;
        // Syncthing devices are greeted, not served (net/bep_greeting).
        tls.alpn_protocols
            .push(peerfold_protocol::bep_hello::BEP_ALPN.to_vec());
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
            .map_err(|e| NetError::Crypto(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport_config());
        let mut endpoints = Vec::new();
        let mut mux = None;
        // Relays are held by `relay`; with only relays to listen on, QUIC still needs a
        // socket of its own (any port) for the paths they give.
        let mut direct: Vec<Address> = listen
            .iter()
            .filter(|a| matches!(a, Address::Quic { .. }))
            .cloned()
            .collect();
        if direct.is_empty() {
            direct.push(Address::quic("0.0.0.0", 0));
        }
        for address in &direct {
            let listen_error = |source| NetError::Listen {
                address: address.to_string(),
                source,
            };
            let addr = resolve(address).map_err(|e| match e {
                NetError::Resolve { source, .. } => listen_error(source),
                other => other,
            })?;
            match endpoint(server.clone(), addr, endpoints.is_empty()) {
                Ok((endpoint, socket)) => {
                    mux = mux.or(socket);
                    endpoints.push(endpoint);
                }
                // `[::]` often covers IPv4 too and then collides with `0.0.0.0`: fine as
                // long as some listener is up.
                Err(e) if !endpoints.is_empty() && e.kind() == std::io::ErrorKind::AddrInUse => {
                    debug!(%address, error = %e, "listen address already covered");
                }
                Err(e) => return Err(listen_error(e)),
            }
        }
        // Identities are not Clone (they hold a private key): one copy, from PEM.
        let identity = Identity::from_pem(
            identity.certificate_pem().as_bytes(),
            identity.private_key_pem().as_bytes(),
        )
        .map_err(|e| NetError::Crypto(e.to_string()))?;
        let identity = Arc::new(identity);
        let mux = mux.ok_or_else(|| NetError::Crypto("no endpoint for relayed paths".into()))?;
        Ok(Self {
            endpoints,
            relays: Arc::new(Relays::new(mux, identity.clone(), life.clone())),
            identity,
        })
    }

    /// The relayed side: the slot task, and what it joined.
    pub(crate) fn relays(&self) -> &Arc<Relays> {
        &self.relays
    }

    /// Where the endpoints are bound.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// How many endpoints there are (one accept loop each).
    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The next connection on endpoint `index`; `None` once it is closed.
    pub(crate) async fn accept(&self, index: usize) -> Option<Incoming> {
        let incoming = self.endpoints.get(index)?.accept().await?;
        Some(Incoming(incoming, self.relays.clone()))
    }

    /// Dials `device` at `address` (the first endpoint's socket), checking it is that device.
    pub(crate) async fn dial(
        &self,
        address: &Address,
        device: DeviceId,
    ) -> Result<Arc<dyn Link>, NetError> {
        let (addr, relayed) = match address {
            Address::Quic { .. } => (resolve_without_blocking(address).await?, None),
            Address::Relay { .. } => {
                let (stand_in, relay, path) = self.relays.open_session(address, device).await?;
                (stand_in, Some((relay, path)))
            }
            Address::Dynamic => return Err(NetError::NotQuic(address.clone())),
        };
        let endpoint = self
            .endpoints
            .first()
            .ok_or_else(|| NetError::Connect("no endpoint to dial from".into()))?;
        // Pinned to `device`; who answered instead is kept, so a wrong device is told apart
        // from other failures (a discovered address may be claimed by anyone).
        let presented = Arc::new(std::sync::Mutex::new(None));
        let seen = presented.clone();
        let policy = PeerPolicy::new(move |peer| {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(peer);
            if peer == device {
                PeerDecision::Accept
            } else {
                PeerDecision::Reject
            }
        });
        let tls = tls::client_config(&self.identity, policy)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
            .map_err(|e| NetError::Crypto(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config());
        let name = match tls::server_name() {
            rustls::pki_types::ServerName::DnsName(name) => name.as_ref().to_owned(),
            _ => "peerfold".to_owned(),
        };
        let connecting = endpoint.connect_with(client, addr, &name);
        let connection = connecting
            .map_err(|e| NetError::Connect(e.to_string()))?
            .await
            .map_err(|e| {
                let answered = *presented.lock().unwrap_or_else(|p| p.into_inner());
                match answered {
                    Some(other) if other != device => {
                        warn!(
                            %address,
                            device = %device.short(),
                            answered = %other.short(),
                            "address claimed by a device that is not the one dialed; not trusted"
                        );
                        NetError::Connect(format!("{address} is not {}", device.short()))
                    }
                    _ => NetError::Connect(e.to_string()),
                }
            });
        match (connection, relayed) {
            (Ok(connection), None) => Ok(Arc::new(QuicLink::new(connection))),
            (Ok(connection), Some((relay, path))) => {
                self.relays.tie(&connection, path);
                Ok(Arc::new(QuicLink::relayed(connection, relay)))
            }
            (Err(e), relayed) => {
                if let Some((_, path)) = relayed {
                    path.ended.cancel();
                }
                Err(e)
            }
        }
    }

    /// Closes every endpoint (and connection) with a reason.
    pub(crate) fn close(&self, reason: &Reason) {
        for endpoint in &self.endpoints {
            endpoint.close(reason.code().into(), reason.to_string().as_bytes());
        }
    }

    /// Waits (at most `limit` each) for the endpoints to finish closing.
    pub(crate) async fn wait_idle(&self, limit: Duration) {
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(limit, endpoint.wait_idle()).await;
        }
    }
}

/// A QUIC endpoint on a UDP socket with large buffers; with `relayed_paths`, its socket is
/// a [`MuxSocket`] that also carries relayed paths (returned too).
fn endpoint(
    server: quinn::ServerConfig,
    addr: SocketAddr,
    relayed_paths: bool,
) -> std::io::Result<(quinn::Endpoint, Option<Arc<MuxSocket>>)> {
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
    let udp = runtime.wrap_udp_socket(socket.into())?;
    let (socket, mux): (Arc<dyn quinn::AsyncUdpSocket>, _) = if relayed_paths {
        let mux = Arc::new(MuxSocket::new(udp));
        (mux.clone(), Some(mux))
    } else {
        (udp, None)
    };
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )?;
    Ok((endpoint, mux))
}

/// A QUIC address to a socket address (names resolved here).
fn resolve(address: &Address) -> Result<SocketAddr, NetError> {
    let host_port = address
        .host_port()
        .ok_or_else(|| NetError::NotQuic(address.clone()))?;
    let resolve_error = |source| NetError::Resolve {
        address: address.clone(),
        source,
    };
    host_port
        .to_socket_addrs()
        .map_err(resolve_error)?
        .next()
        .ok_or_else(|| resolve_error(std::io::Error::other("no address")))
}

/// [`resolve`] on a blocking thread (a name lookup can take seconds).
async fn resolve_without_blocking(address: &Address) -> Result<SocketAddr, NetError> {
    let owned = address.clone();
    tokio::task::spawn_blocking(move || resolve(&owned))
        .await
        .map_err(|e| NetError::Connect(e.to_string()))?
}

fn peer_device(connection: &quinn::Connection) -> Option<DeviceId> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::peer_device_id(&chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A discovered address is anybody's claim: dialing it checks the ID, and a device
    /// that answers for another is refused and told apart from other failures.
    #[tokio::test]
    async fn a_device_answering_for_another_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listen = [Address::quic("127.0.0.1", 0)];
        let impostor = Identity::generate().unwrap();
        let server = Transport::bind(&impostor, |_| true, &listen, &Life::default()).unwrap();
        let me = Identity::generate().unwrap();
        let client = Transport::bind(&me, |_| true, &listen, &Life::default()).unwrap();
        let claimed = Identity::generate().unwrap().device_id();
        let port = server.local_addrs()[0].port();
        // Accept in the background so the handshake can run.
        let accepting = tokio::spawn(async move {
            if let Some(incoming) = server.accept(0).await {
                let _ = incoming.finish("test").await;
            }
            server
        });
        let Err(e) = client
            .dial(&Address::quic("127.0.0.1", port), claimed)
            .await
        else {
            panic!("the impostor was taken for the claimed device");
        };
        assert!(e.to_string().contains("is not"), "{e}");
        accepting.abort();
    }
}
