//! Sessions: two single-use keys per session, the wait for both sides to join (plaintext
//! session mode), then the splice (`splice.rs`) until either side ends or its devices leave.
//!
//! A session's own task owns its lifetime: it waits up to `message_timeout` for the two
//! joined sockets to arrive over a channel, forgets the unused keys, splices, and finally
//! removes the session. Joining only hands a socket to that task, so a key taken by a join
//! that then fails simply never delivers, and the session times out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::relay::{KEY_LEN, Message, Response, SessionKey};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::framing::{self, FrameError};
use crate::limits::ByteRate;
use crate::server::Relay;
use crate::splice::{Splice, splice};
use crate::stats::Stats;

/// The keys of a new session: the requester (client side) gets one, the target (server
/// side) the other.
#[derive(Debug)]
pub(crate) struct Keys {
    pub(crate) client: SessionKey,
    pub(crate) server: SessionKey,
}

/// Why no session was made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    /// `max_sessions` are waiting or proxying.
    #[error("too many sessions")]
    TooManySessions,
    /// `max_pending_keys` keys are unused.
    #[error("too many pending session keys")]
    TooManyKeys,
}

/// Limits and timeouts of sessions.
#[derive(Debug)]
pub(crate) struct SessionLimits {
    pub(crate) max_sessions: usize,
    pub(crate) max_pending_keys: usize,
    pub(crate) message_timeout: Duration,
    pub(crate) network_timeout: Duration,
    pub(crate) per_session_rate: u64,
}

/// Every session, waiting or proxying.
#[derive(Debug)]
pub(crate) struct Sessions {
    state: Mutex<State>,
    limits: SessionLimits,
    global_rate: Option<Arc<ByteRate>>,
    stats: Arc<Stats>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    /// Unused keys, each the way into its session's task.
    pending: HashMap<SessionKey, (u64, mpsc::Sender<TcpStream>)>,
    sessions: HashMap<u64, Entry>,
    next_id: u64,
}

#[derive(Debug)]
struct Entry {
    devices: [DeviceId; 2],
    keys: [SessionKey; 2],
    cancel: CancellationToken,
}

/// A claimed key: hands the joined socket to its session.
#[derive(Debug)]
pub(crate) struct Slot(mpsc::Sender<TcpStream>);

impl Slot {
    fn join(self, stream: TcpStream) {
        // The channel holds both sides and each key is claimed once, so it is never full;
        // a closed one means the session just ended, and dropping the socket closes it.
        let _ = self.0.try_send(stream);
    }
}

impl Sessions {
    pub(crate) fn new(
        limits: SessionLimits,
        global_rate: u64,
        stats: Arc<Stats>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::default(),
            limits,
            global_rate: ByteRate::new(global_rate).map(Arc::new),
            stats,
            tasks,
            cancel,
        }
    }

    /// A session between `server` (the joined device asked for) and `client` (the one
    /// asking), with two fresh random keys; its task starts waiting for both sides now.
    pub(crate) fn create(
        self: &Arc<Self>,
        server: DeviceId,
        client: DeviceId,
    ) -> Result<Keys, CreateError> {
        let keys = Keys {
            client: rand::random::<[u8; KEY_LEN]>(),
            server: rand::random::<[u8; KEY_LEN]>(),
        };
        let (tx, rx) = mpsc::channel(2);
        let cancel = self.cancel.child_token();
        let id = {
            let mut state = self.lock();
            if state.sessions.len() >= self.limits.max_sessions {
                return Err(CreateError::TooManySessions);
            }
            if state.pending.len() + 2 > self.limits.max_pending_keys {
                return Err(CreateError::TooManyKeys);
            }
            let id = state.next_id;
            state.next_id += 1;
            state.pending.insert(keys.client, (id, tx.clone()));
            state.pending.insert(keys.server, (id, tx));
            let entry = Entry {
                devices: [server, client],
                keys: [keys.client, keys.server],
                cancel: cancel.clone(),
            };
            state.sessions.insert(id, entry);
            id
        };
        self.tasks.spawn(self.clone().run(id, rx, cancel));
        Ok(keys)
    }

    /// Takes a key out of the pending set: each works once.
    pub(crate) fn claim(&self, key: &SessionKey) -> Option<Slot> {
        self.lock().pending.remove(key).map(|(_, tx)| Slot(tx))
    }

    /// Ends every session `device` is part of (its permanent connection is gone).
    pub(crate) fn drop_device(&self, device: &DeviceId) {
        for entry in self.lock().sessions.values() {
            if entry.devices.contains(device) {
                entry.cancel.cancel();
            }
        }
    }

    /// Keys handed out and not used yet.
    pub(crate) fn pending_keys(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(
        self: Arc<Self>,
        id: u64,
        mut joined: mpsc::Receiver<TcpStream>,
        cancel: CancellationToken,
    ) {
        let both = async {
            let first = joined.recv().await?;
            let second = joined.recv().await?;
            Some((first, second))
        };
        let sockets = tokio::select! {
            () = cancel.cancelled() => None,
            result = tokio::time::timeout(self.limits.message_timeout, both) => {
                result.ok().flatten()
            }
        };
        // From here on the keys lead nowhere: used ones are gone, unused ones go now.
        {
            let mut state = self.lock();
            if let Some(keys) = state.sessions.get(&id).map(|entry| entry.keys) {
                for key in &keys {
                    state.pending.remove(key);
                }
            }
        }
        match sockets {
            Some((a, b)) => {
                let _active = self.stats.active_sessions.enter();
                let _proxies = (self.stats.proxies.enter(), self.stats.proxies.enter());
                tracing::debug!(session = id, "session started");
                let result = splice(Splice {
                    a,
                    b,
                    idle: self.limits.network_timeout,
                    session_rate: ByteRate::new(self.limits.per_session_rate),
                    global_rate: self.global_rate.as_deref(),
                    stats: &self.stats,
                    cancel: &cancel,
                })
                .await;
                tracing::debug!(session = id, %result, "session ended");
            }
            None => tracing::debug!(session = id, "session discarded before both sides joined"),
        }
        self.lock().sessions.remove(&id);
    }
}

/// Session mode: one plaintext connection that must send `JoinSessionRequest` within the
/// handshake timeout, and is handed to its session on success.
pub(crate) async fn serve(relay: Arc<Relay>, mut tcp: TcpStream, addr: SocketAddr) {
    let timeout = relay.config.handshake_timeout;
    let message = match tokio::time::timeout(timeout, framing::read_one(&mut tcp)).await {
        Ok(Ok(message)) => message,
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "session-mode connection failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "no session join request in time");
            return;
        }
    };
    let (reply, slot) = match message {
        Message::JoinSessionRequest { key } => match relay.sessions.claim(&key) {
            Some(slot) => (Response::SUCCESS, Some(slot)),
            None => (Response::NOT_FOUND, None),
        },
        _ => (Response::UNEXPECTED_MESSAGE, None),
    };
    let reply = Message::Response(Response::new(reply));
    match tokio::time::timeout(timeout, framing::write(&mut tcp, &reply)).await {
        Ok(Ok(())) => {
            if let Some(slot) = slot {
                slot.join(tcp);
            }
        }
        Ok(Err(FrameError::Io(error))) => tracing::debug!(%addr, %error, "writing a reply failed"),
        _ => tracing::debug!(%addr, "writing a reply failed"),
    }
}
