//! Relayed paths (Syncthing's relay protocol v1, `shared/specs/relay-v1.md`): this device
//! holds a permanent slot on one relay of its listen addresses, so devices that cannot reach
//! it directly can ask that relay for a session; and it asks a peer's relay for a session
//! when it dials a `relay://` address. A joined session becomes a path of the first QUIC
//! endpoint (`mux`): the connection over it is dialed, accepted and authenticated like a
//! direct one, with the same TLS and device-ID check, and the relay sees only ciphertext.
//! The side the invitation calls `ServerSocket` is the QUIC server.
//!
//! Who wakes me: the slot's relay (invitations, pings), the dialer (`open_session`),
//! `LiveConfig::changed` (`relaysEnabled`). Whom I wake: the accept loop of endpoint 0 (a
//! peer's QUIC handshake arrives over the session), global discovery (`joined` changed:
//! it announces the relay).

mod client;
mod mux;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{Message, RelayUrl};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use client::RelayClientError;
use client::{RelayConnection, RelayTarget};
pub(crate) use mux::{MuxSocket, PathHandle};

use crate::config::Address;
use crate::config::live::LiveConfig;
use crate::life::Life;

/// A slot's relay that says nothing for this long is taken for dead (it pings every minute).
const SILENCE_LIMIT: Duration = Duration::from_secs(150);
/// A joined session nobody's QUIC handshake used within this long is closed.
const UNUSED_SESSION: Duration = Duration::from_secs(30);
/// Waits between tries of the relay list, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(120);
/// How long a closed connection's last packets get to reach the session stream.
const CLOSE_FLUSH: Duration = Duration::from_millis(200);
/// Sessions from invitations being joined or not yet used, at most.
const MAX_PENDING_SESSIONS: usize = 32;

/// A relay among the listen addresses, as `/rest/system/status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySlot {
    /// The relay's URL as configured.
    pub url: String,
    /// Why this device holds no slot there, `None` while it does.
    pub error: Option<String>,
}

/// The relayed side of one engine's transport.
pub(crate) struct Relays {
    mux: Arc<MuxSocket>,
    identity: Arc<Identity>,
    life: Life,
    /// What each relayed path's stand-in address stands for: the relay's URL.
    paths: Mutex<HashMap<SocketAddr, RelayedPath>>,
    /// The relay this device holds a slot on now, as its URL (announced by discovery).
    joined: watch::Sender<Option<String>>,
    /// Each configured relay's state, by its configured URL (`RelaySlot::error`).
    slots: Mutex<BTreeMap<String, Option<String>>>,
}

struct RelayedPath {
    relay: String,
    handle: PathHandle,
    /// A QUIC connection was made over it.
    used: bool,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("joined", &*self.joined.borrow())
            .finish_non_exhaustive()
    }
}

impl Relays {
    /// The first endpoint's socket (STUN probes go through it too).
    pub(crate) fn mux(&self) -> &Arc<MuxSocket> {
        &self.mux
    }

    pub(crate) fn new(mux: Arc<MuxSocket>, identity: Arc<Identity>, life: Life) -> Self {
        Self {
            mux,
            identity,
            life,
            paths: Mutex::new(HashMap::new()),
            joined: watch::Sender::new(None),
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// Each relay among the listen addresses: held, or why not.
    pub(crate) fn slots(&self) -> Vec<RelaySlot> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .map(|(url, error)| RelaySlot {
                url: url.clone(),
                error: error.clone(),
            })
            .collect()
    }

    fn set_slot(&self, relay: &Address, error: Option<String>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.insert(relay.to_string(), error);
    }

    fn paths(&self) -> MutexGuard<'_, HashMap<SocketAddr, RelayedPath>> {
        // Inserts and removals only: a poisoned map is still whole.
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The relay this device holds a slot on, announced as `relay://HOST:PORT/?id=ID` (the
    /// only parameter Syncthing announces).
    pub(crate) fn joined(&self) -> watch::Receiver<Option<String>> {
        self.joined.subscribe()
    }

    /// The relay a stand-in address's path goes through, marking the path used (a QUIC
    /// connection came over it); `None` for a real address.
    pub(crate) fn claim(&self, stand_in: SocketAddr) -> Option<(String, PathHandle)> {
        let mut paths = self.paths();
        let path = paths.get_mut(&stand_in)?;
        path.used = true;
        Some((path.relay.clone(), path.handle.clone()))
    }

    /// Ties a QUIC connection and its relayed path together: the path closes (after the
    /// connection's last packets, a close among them, are written) when the connection
    /// does, and the connection closes at once when the path ends (the relay went away),
    /// rather than at QUIC's idle timeout.
    pub(crate) fn tie(&self, connection: &quinn::Connection, path: PathHandle) {
        let connection = connection.clone();
        self.life.spawn(async move {
            tokio::select! {
                _ = connection.closed() => {
                    tokio::time::sleep(CLOSE_FLUSH).await;
                    path.ended.cancel();
                }
                () = path.ended.cancelled() => {
                    connection.close(0u32.into(), b"relay session ended");
                }
            }
        });
    }

    /// Asks `relay` for a session with `device` and joins it: the stand-in address to
    /// dial it at (this side is the QUIC client), the relay's URL and the path.
    pub(crate) async fn open_session(
        self: &Arc<Self>,
        relay: &Address,
        device: DeviceId,
    ) -> Result<(SocketAddr, String, PathHandle), RelayClientError> {
        let target = RelayTarget::parse(&relay.to_string())?;
        let connection = RelayConnection::open(&target, &self.identity).await?;
        let invitation = connection.request_session(device).await?;
        if invitation.invitation.server_socket {
            // The requester is the client in Syncthing's relays; a relay saying otherwise
            // would have both sides wait for the other.
            return Err(RelayClientError::Unexpected {
                url: target.text,
                what: "invitation as the server side".into(),
            });
        }
        let stream = invitation.join().await?;
        let handle = self.mux.attach(stream, &self.life);
        self.paths().insert(
            handle.stand_in,
            RelayedPath {
                relay: target.text.clone(),
                handle: handle.clone(),
                used: true,
            },
        );
        self.forget_when_ended(handle.clone());
        Ok((handle.stand_in, target.text, handle))
    }

    /// Removes a path from the table once its session stream ends.
    fn forget_when_ended(self: &Arc<Self>, handle: PathHandle) {
        let relays = Arc::downgrade(self);
        self.life.spawn(async move {
            handle.ended.cancelled().await;
            if let Some(relays) = relays.upgrade() {
                relays.paths().remove(&handle.stand_in);
            }
        });
    }

    /// Holds a slot on the first relay of `relays` that takes this device, moving to the
    /// next when it is lost, while `relaysEnabled` is on; joins the sessions its relay
    /// invites this device to. Runs until the engine stops.
    pub(crate) async fn hold_slot(self: Arc<Self>, relays: Vec<Address>, config: Arc<LiveConfig>) {
        let mut backoff = RETRY_MIN;
        let mut next = 0;
        let not_yet = || Some("no slot taken yet".to_owned());
        for relay in &relays {
            self.set_slot(relay, not_yet());
        }
        loop {
            while !config.get().options.relays_enabled {
                self.joined.send_replace(None);
                for relay in &relays {
                    self.set_slot(relay, Some("relays are disabled (relaysEnabled)".into()));
                }
                tokio::select! {
                    () = self.life.cancelled() => return,
                    () = config.changed() => {}
                }
            }
            let relay = &relays[next % relays.len()];
            next += 1;
            let held = tokio::select! {
                () = self.life.cancelled() => return,
                () = wait_disabled(&config) => Ok(()),
                held = self.hold(relay) => held,
            };
            self.joined.send_replace(None);
            match held {
                Ok(()) => {
                    backoff = RETRY_MIN;
                    self.set_slot(relay, not_yet());
                }
                Err(e) => {
                    warn!(relay = %relay, error = %e, "relay slot lost or refused; trying the next relay");
                    self.set_slot(relay, Some(e.to_string()));
                    // A full turn of the list without luck waits before the next.
                    if next % relays.len() == 0 {
                        tokio::select! {
                            () = self.life.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }

    /// One slot on `relay` until it is lost.
    async fn hold(self: &Arc<Self>, relay: &Address) -> Result<(), RelayClientError> {
        let target = RelayTarget::parse(&relay.to_string())?;
        let mut connection = RelayConnection::open(&target, &self.identity).await?;
        connection.join().await?;
        let announced = announced_url(&target.url);
        info!(relay = %announced, "holding a slot on the relay");
        self.joined.send_replace(Some(announced));
        self.set_slot(relay, None);
        loop {
            let message = tokio::time::timeout(SILENCE_LIMIT, connection.receive())
                .await
                .map_err(|_| RelayClientError::Timeout(target.text.clone()))??;
            match message {
                Message::Ping => connection.send(&Message::Pong).await?,
                Message::Pong => {}
                Message::SessionInvitation(invitation) => {
                    let invitation = connection.invitation(invitation);
                    self.accept_invitation(invitation);
                }
                Message::RelayFull => {
                    return Err(RelayClientError::Full {
                        url: target.text.clone(),
                    });
                }
                other => debug!(?other, "unexpected message from the relay; ignored"),
            }
        }
    }

    /// Joins a session a peer asked for; its QUIC handshake then reaches endpoint 0's
    /// accept loop over it. Unused sessions are closed after [`UNUSED_SESSION`].
    fn accept_invitation(self: &Arc<Self>, invitation: client::Invitation) {
        if !invitation.invitation.server_socket {
            debug!("invitation as the client side from a slot; ignored");
            return;
        }
        if self.paths().values().filter(|p| !p.used).count() >= MAX_PENDING_SESSIONS {
            warn!("too many relayed sessions waiting for a handshake; invitation ignored");
            return;
        }
        let relays = self.clone();
        self.life.spawn(async move {
            let from = invitation.invitation.from;
            let stream = match invitation.join().await {
                Ok(stream) => stream,
                Err(e) => return debug!(device = %from.short(), error = %e, "cannot join the relayed session"),
            };
            let handle = relays.mux.attach(stream, &relays.life);
            debug!(device = %from.short(), stand_in = %handle.stand_in, "joined a relayed session");
            relays.paths().insert(
                handle.stand_in,
                RelayedPath {
                    relay: invitation.target.text.clone(),
                    handle: handle.clone(),
                    used: false,
                },
            );
            tokio::select! {
                () = handle.ended.cancelled() => {}
                () = tokio::time::sleep(UNUSED_SESSION) => {
                    let unused = relays.paths().get(&handle.stand_in).is_some_and(|p| !p.used);
                    if unused {
                        debug!(device = %from.short(), "relayed session unused; closed");
                        handle.ended.cancel();
                    }
                    handle.ended.cancelled().await;
                }
            }
            relays.paths().remove(&handle.stand_in);
        });
    }
}

/// Resolves once `relaysEnabled` is off.
async fn wait_disabled(config: &LiveConfig) {
    while config.get().options.relays_enabled {
        config.changed().await;
    }
}

/// `relay://HOST:PORT/?id=ID`: a relay URL as announced (other parameters dropped).
fn announced_url(url: &RelayUrl) -> String {
    let announced = RelayUrl {
        token: None,
        ..url.clone()
    };
    announced.to_string()
}
