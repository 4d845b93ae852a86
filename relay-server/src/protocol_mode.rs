//! Protocol mode: a TLS connection whose client certificate names a device. Its first
//! message decides what it is:
//! - `JoinRelayRequest`: a device that waits for peers (permanent). It is pinged, answers
//!   pings, and receives the invitations other devices' requests push to its outbox, until
//!   it is silent for the network timeout or the relay stops.
//! - `ConnectRequest`: a device that wants a peer (temporary). It gets an invitation or "not
//!   found", the peer gets the mirror invitation, and the connection closes.
//!
//! Only complete messages count as hearing from a client, so one that trickles a message
//! byte by byte is cut by the same clocks as one that sends nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::relay::{ALPN, Message, Response, SessionInvitation};
use peerfold_protocol::tls::peer_device_id;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::server::TlsStream;

use crate::framing::{self, FrameError, MessageReader};
use crate::server::Relay;

/// How long a `ConnectRequest` waits for room in the target's outbox (strelaysrv: 1 s).
const OUTBOX_WAIT: Duration = Duration::from_secs(1);
/// How long closing a connection may take to say goodbye (TLS close_notify).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Tls = TlsStream<TcpStream>;

/// Serves one protocol-mode connection after its TLS handshake.
pub(crate) async fn serve(relay: Arc<Relay>, mut tls: Tls, addr: SocketAddr) {
    let (_, connection) = tls.get_ref();
    let device = connection.peer_certificates().and_then(peer_device_id);
    // strelaysrv insists on the ALPN and on a certificate; rustls already required one.
    let (Some(device), Some(ALPN)) = (device, connection.alpn_protocol()) else {
        tracing::debug!(%addr, "no client certificate or no bep-relay ALPN, closing");
        return;
    };
    let _counted = relay.stats.connections.enter();
    let Ok(_permit) = relay.client_permits.try_acquire() else {
        tracing::debug!(%addr, %device, "relay full");
        let _ = send(&relay, &mut tls, &Message::RelayFull).await;
        close(tls).await;
        return;
    };
    let mut reader = MessageReader::default();
    // The first message must come within one ping interval.
    let first = tokio::select! {
        () = relay.cancel.cancelled() => return,
        first = tokio::time::timeout(relay.config.ping_interval, reader.next(&mut tls)) => first,
    };
    let outcome = match first {
        Err(_) => Err(Ended::Timeout),
        Ok(Err(error)) => Err(Ended::Frame(error)),
        Ok(Ok(Message::JoinRelayRequest { token })) => {
            permanent(&relay, &mut tls, reader, device, &token).await
        }
        Ok(Ok(Message::ConnectRequest { id })) => {
            temporary(&relay, &mut tls, device, addr, id).await
        }
        Ok(Ok(other)) => {
            tracing::debug!(%addr, %device, kind = other.kind(), "unexpected first message");
            respond(&relay, &mut tls, Response::UNEXPECTED_MESSAGE).await
        }
    };
    match outcome {
        Ok(()) => {}
        Err(ended) => tracing::debug!(%addr, %device, %ended, "protocol connection ended"),
    }
    close(tls).await;
}

/// Why a protocol-mode connection ended early.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("silent for too long")]
    Timeout,
    #[error("writing took too long")]
    WriteTimeout,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

async fn permanent(
    relay: &Relay,
    tls: &mut Tls,
    mut reader: MessageReader,
    device: DeviceId,
    token: &str,
) -> Result<(), Ended> {
    if !relay.config.token.is_empty() && token != relay.config.token {
        return respond(relay, tls, Response::WRONG_TOKEN).await;
    }
    let Some((_membership, mut inbox)) = relay.registry.join(device, &relay.sessions) else {
        return respond(relay, tls, Response::ALREADY_CONNECTED).await;
    };
    respond(relay, tls, Response::SUCCESS).await?;
    tracing::debug!(%device, "device joined");
    let config = &relay.config;
    let mut pings =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            () = relay.cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(heard + config.network_timeout) => {
                return Err(Ended::Timeout);
            }
            _ = pings.tick() => send(relay, tls, &Message::Ping).await?,
            invitation = inbox.recv() => {
                // The registry holds the sender for as long as we hold the membership.
                let Some(invitation) = invitation else { return Ok(()) };
                send(relay, tls, &Message::SessionInvitation(invitation)).await?;
            }
            message = reader.next(tls) => {
                heard = Instant::now();
                match message? {
                    Message::Ping => send(relay, tls, &Message::Pong).await?,
                    Message::Pong => {}
                    // Joined already: say so and carry on, as strelaysrv does.
                    Message::JoinRelayRequest { .. } => {
                        send(relay, tls, &Message::Response(Response::new(
                            Response::ALREADY_CONNECTED,
                        ))).await?;
                    }
                    _ => return respond(relay, tls, Response::UNEXPECTED_MESSAGE).await,
                }
            }
        }
    }
}

async fn temporary(
    relay: &Relay,
    tls: &mut Tls,
    requester: DeviceId,
    addr: SocketAddr,
    target: DeviceId,
) -> Result<(), Ended> {
    // Every request makes the relay push an invitation to someone else: bound them per IP.
    if !relay.connect_limiter.allow(addr.ip(), Instant::now()) {
        tracing::debug!(%addr, "connect requests over the per-IP rate");
        let reply = Response {
            code: Response::INTERNAL_ERROR,
            message: "too many connect requests".to_owned(),
        };
        return send(relay, tls, &Message::Response(reply)).await;
    }
    let Some(outbox) = relay.registry.outbox(&target) else {
        return respond(relay, tls, Response::NOT_FOUND).await;
    };
    let keys = match relay.sessions.create(target, requester) {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(%error, "no session for a connect request");
            return respond(relay, tls, Response::INTERNAL_ERROR).await;
        }
    };
    let invitation = |from, key, server_socket| SessionInvitation {
        from,
        key,
        address: relay.config.ext_ip,
        port: relay.session_port,
        server_socket,
    };
    send(
        relay,
        tls,
        &Message::SessionInvitation(invitation(target, keys.client, false)),
    )
    .await?;
    let mirror = invitation(requester, keys.server, true);
    if outbox.send_timeout(mirror, OUTBOX_WAIT).await.is_err() {
        // The session times out unjoined; the requester's side learns it when joining.
        tracing::debug!(%target, "target's outbox full, invitation dropped");
    }
    tracing::debug!(from = %requester, to = %target, "session offered");
    Ok(())
}

async fn respond(relay: &Relay, tls: &mut Tls, code: i32) -> Result<(), Ended> {
    send(relay, tls, &Message::Response(Response::new(code))).await
}

/// Writes a message, bounded by the network timeout: a client that stops reading is gone.
async fn send(relay: &Relay, tls: &mut Tls, message: &Message) -> Result<(), Ended> {
    tokio::time::timeout(relay.config.network_timeout, framing::write(tls, message))
        .await
        .map_err(|_| Ended::WriteTimeout)??;
    Ok(())
}

/// Sends TLS close_notify (so clients read a clean end) without waiting long for it.
async fn close(mut tls: Tls) {
    let _ = tokio::time::timeout(CLOSE_WAIT, tls.shutdown()).await;
}
