//! Keeps configured devices connected: one dial loop per device, redialing with backoff
//! and jitter over the addresses its sources know, until the device is removed or paused.
//!
//! Who wakes me: `Dialer::dial` (start, devices added or resumed), configuration
//! changes (`LiveConfig::changed`: new addresses, a pause), discovery (`AddressBook`:
//! a device gained an address) and the end of a session I started. Whom I wake: nobody; a
//! link I make runs its session in a task of its own, while I go on watching for a better
//! path: the lower of the two device IDs moves a link that does not run over a LAN address
//! local discovery found to that address (its new link replaces the old one on both
//! sides).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use peerfold_protocol::DeviceId;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::Reason;
use super::address_book::AddressBook;
use super::addresses::{AddressSource, ConfiguredAddresses};
use super::connection::run_connection;
use super::link::{Link, PathKind};
use super::punch::{MAX_ATTEMPTS, PunchSchedule};
use super::registry::PeerStatus;
use super::session::SessionContext;
use crate::config::{Address, DeviceConfig};
use crate::net::{NetError, Transport};

/// The first reconnect backoff; it doubles up to the `reconnectionIntervalS` option.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// How long the device with the higher ID waits before its first dial: when both sides
/// dial at once, the link dialed by the lower ID wins and the other is closed, taking its
/// in-flight requests with it, so at start-up the lower one should get there first.
const HIGHER_ID_DIAL_DELAY: Duration = Duration::from_secs(1);
/// A session that lasted this long resets the backoff; a peer that refuses us right away
/// is not redialed in a tight loop.
const LASTED: Duration = Duration::from_secs(10);

/// How long one dial may take. A NAT that drops the packets would hold it for QUIC's whole
/// idle timeout (30 s), and a dial loop waits for its dials: four handshake attempts
/// (0, 1, 3 and 7 s) fit in this.
const DIAL_LIMIT: Duration = Duration::from_secs(10);
/// Between the starts of two dials of the same device's addresses.
const STAGGER: Duration = Duration::from_millis(250);
/// How long direct addresses are tried alone before relays are tried too.
const RELAY_HEAD_START: Duration = Duration::from_secs(2);
/// The first wait after a failed move to a better path; it doubles up to
/// [`MOVE_RETRY_MAX`].
const MOVE_RETRY_MIN: Duration = Duration::from_secs(5);
const MOVE_RETRY_MAX: Duration = Duration::from_secs(300);
/// How long a move to a better path may take to dial (a NAT that drops the packets would
/// hold the dial loop for a whole QUIC handshake timeout).
const MOVE_DIAL_LIMIT: Duration = Duration::from_secs(6);
/// How long the device that does not ask for hole punches waits, after a relayed link is
/// made, before it dials the peer's direct addresses itself.
const PUNCH_HEAD_START: Duration = Duration::from_secs(5);
/// How long after answering a hole punch the other side still leaves the path to it (the
/// asker retries 2, 4 and 8 s after a failure, each attempt taking up to 5 s more).
const PUNCH_ASKED_WITHIN: Duration = Duration::from_secs(15);
/// How long the direct handshake of a hole punch may take: the NATs are open by then, or
/// they will not be.
const PUNCH_DIAL_LIMIT: Duration = Duration::from_secs(5);

/// The session of a link a dial loop made.
struct OwnSession {
    /// Resolves when the session ends: whether the peer asked to be dialed again at once.
    ended: oneshot::Receiver<bool>,
    started: Instant,
}

/// The IP in `HOST:PORT` when the host is an IP address (names are not resolved here).
fn host_ip(host_port: &str) -> Option<IpAddr> {
    host_port.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The dial loops.
pub(crate) struct Dialer {
    transport: Arc<Transport>,
    /// The configured addresses, asked first.
    configured: ConfiguredAddresses,
    /// Discovery's sources (the address book, global lookups), asked only for devices
    /// whose addresses include `dynamic`.
    discovery: Vec<Arc<dyn AddressSource>>,
    /// What discovery learned; a new address there ends a backoff wait.
    book: Arc<AddressBook>,
    context: Arc<SessionContext>,
    /// Devices a dial loop runs for (at most one each). Held for set updates only.
    dialing: Mutex<HashSet<DeviceId>>,
}

impl Dialer {
    pub(crate) fn new(
        transport: Arc<Transport>,
        discovery: Vec<Arc<dyn AddressSource>>,
        book: Arc<AddressBook>,
        context: Arc<SessionContext>,
    ) -> Self {
        Self {
            transport,
            configured: ConfiguredAddresses(context.config.clone()),
            discovery,
            book,
            context,
            dialing: Mutex::new(HashSet::new()),
        }
    }

    fn dialing(&self) -> std::sync::MutexGuard<'_, HashSet<DeviceId>> {
        // A set of IDs is whole between statements: a poisoned lock is still usable.
        self.dialing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts dialing a device, unless a dial loop already runs for it (that one picks up
    /// the change).
    pub(crate) fn dial(self: &Arc<Self>, device: DeviceId) {
        if self.dialable(device).is_none() || !self.dialing().insert(device) {
            return;
        }
        let span = tracing::info_span!("dial", device = %device.short());
        self.context
            .life
            .spawn_in(span, self.clone().dial_loop(device));
    }

    /// The device's settings while its dial loop should go on; `None` (and the loop
    /// unregistered) once it is removed or paused. Checked under the `dialing` lock, so a
    /// `dial` for a device resumed just now either sees the loop or starts a new one.
    fn dialable(&self, device: DeviceId) -> Option<DeviceConfig> {
        let mut dialing = self.dialing();
        let current = self.context.config.device(device).filter(|d| !d.paused);
        if current.is_none() {
            dialing.remove(&device);
        }
        current
    }

    async fn dial_loop(self: Arc<Self>, device: DeviceId) {
        let me = self.context.me;
        let life = self.context.life.clone();
        if me > device {
            tokio::select! {
                biased;
                () = life.cancelled() => return self.stop_dialing(device),
                () = tokio::time::sleep(HIGHER_ID_DIAL_DELAY) => {}
            }
        }
        let mut backoff = RETRY_MIN;
        let mut move_after = Instant::now();
        let mut move_backoff = MOVE_RETRY_MIN;
        let mut discovered = self.book.changed();
        let mut registered = self.context.registry.registrations();
        let mut punch = PunchSchedule::default();
        // The session of the link this loop dialed last, while it runs.
        let mut own: Option<OwnSession> = None;
        // When a peer that closed our link to reconnect was last dialed again at once.
        let mut redialed_at_once: Option<Instant> = None;
        loop {
            // The configuration may have changed: a removed or paused device is no longer
            // dialed, and changed addresses apply from the next attempt.
            if self.dialable(device).is_none() {
                return;
            }
            let retry_max =
                Duration::from_secs(self.context.config.get().options.reconnection_interval_s);
            let status = self.context.registry.status(device);
            if let Some(relayed) = self.punch_due(device, status.as_ref(), &mut punch) {
                if let Some(link) = self.punch(device, &relayed, &mut punch).await {
                    own = Some(self.start_session(link, device));
                }
            } else {
                match status {
                    // (A session of ours that is not registered yet is about to be, or to end.)
                    None if own.is_none() => {
                        let addresses = self.addresses(device).await;
                        if let Some((_, link)) = self.dial_first(device, addresses).await {
                            own = Some(self.start_session(link, device));
                        }
                    }
                    // While hole punching may still open a path, neither side dials the
                    // peer's direct addresses itself: its link would race the punched one
                    // (one of them would lose and drain, its transfers moving over for nothing).
                    Some(status)
                        if Instant::now() >= move_after
                            && !(status.path == PathKind::Relayed
                                && self.punching_may_open(device, &status, &punch)) =>
                    {
                        match self.move_to_better_path(device, &status).await {
                            Ok(link) => {
                                if let Some(link) = link {
                                    own = Some(self.start_session(link, device));
                                }
                                move_backoff = MOVE_RETRY_MIN;
                            }
                            Err(()) => {
                                move_after = Instant::now() + move_backoff;
                                move_backoff = (move_backoff * 2).min(MOVE_RETRY_MAX);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let punch_wake = self
                .context
                .registry
                .status(device)
                .filter(|s| s.path == PathKind::Relayed && me < device)
                .and_then(|_| punch.wake_at());
            let punch_wait = async {
                match punch_wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Jitter from the device IDs, so two devices do not dial in lockstep.
            let jitter =
                Duration::from_millis(u64::from(me.as_bytes()[0] ^ device.as_bytes()[0]) * 2);
            // A configuration change (new addresses, a pause) and a newly discovered
            // address are looked at right away; so is the end of our own session, unless
            // it ended at once (a peer refusing us is not redialed in a tight loop).
            discovered.borrow_and_update();
            registered.borrow_and_update();
            let own_ended = async {
                match own.as_mut() {
                    Some(session) => (&mut session.ended).await.unwrap_or(false),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = life.cancelled() => return self.stop_dialing(device),
                asked_back = own_ended => {
                    let lasted = own.take().is_some_and(|s| s.started.elapsed() > LASTED);
                    // Whatever backoff refusals built up before: the peer let us in and
                    // wants the link back now (the first sync after it accepted a folder
                    // waited out that backoff, up to `reconnectionIntervalS`). Once per
                    // `LASTED`: a peer that asks it of every link is not dialed in a loop.
                    let asked_back = asked_back
                        && redialed_at_once.is_none_or(|at: Instant| at.elapsed() > LASTED);
                    if asked_back {
                        redialed_at_once = Some(Instant::now());
                    }
                    if lasted || asked_back {
                        backoff = RETRY_MIN;
                        continue;
                    }
                    // It ended at once (the peer refused us, or the link broke): wait
                    // before redialing, or a refusing peer is dialed in a tight loop.
                    tokio::select! {
                        biased;
                        () = life.cancelled() => return self.stop_dialing(device),
                        () = self.context.config.changed() => {}
                        () = tokio::time::sleep(backoff.min(retry_max) + jitter) => {}
                    }
                }
                () = self.context.config.changed() => {}
                Ok(()) = discovered.changed() => {}
                // A new link: a relayed one is punched through at once.
                Ok(()) = registered.changed() => continue,
                () = punch_wait => continue,
                () = tokio::time::sleep(backoff.min(retry_max) + jitter) => {}
            }
            backoff = (backoff * 2).min(retry_max.max(RETRY_MIN));
        }
    }

    /// Dials `addresses` (best first) until one answers, without waiting for each to fail
    /// in turn (an address that drops packets costs a whole QUIC handshake timeout): each
    /// starts [`STAGGER`] after the one before, relays not before [`RELAY_HEAD_START`], and
    /// the first link made wins (the attempts still under way are dropped).
    async fn dial_first(
        &self,
        device: DeviceId,
        addresses: Vec<Address>,
    ) -> Option<(Address, Arc<dyn Link>)> {
        let mut attempts: FuturesUnordered<_> = addresses
            .into_iter()
            .enumerate()
            .map(|(i, address)| {
                let mut delay = STAGGER * u32::try_from(i).unwrap_or(u32::MAX);
                if matches!(address, Address::Relay { .. }) {
                    delay = delay.max(RELAY_HEAD_START);
                }
                async move {
                    tokio::time::sleep(delay).await;
                    let result = match tokio::time::timeout(
                        DIAL_LIMIT,
                        self.transport.dial(&address, device),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(NetError::Connect(format!(
                            "no handshake within {DIAL_LIMIT:?}"
                        ))),
                    };
                    (address, result)
                }
            })
            .collect();
        while let Some((address, result)) = attempts.next().await {
            match result {
                Ok(link) => return Some((address, link)),
                Err(e) => debug!(%address, error = %e, "dial failed"),
            }
        }
        None
    }

    /// Whether hole punching may still open a direct path to `device` over its relayed link
    /// (`status`): for the asking side (lower ID), while attempts remain; for the other, in
    /// the asker's head start after the relayed link is made, and while it keeps asking.
    fn punching_may_open(
        &self,
        device: DeviceId,
        status: &PeerStatus,
        schedule: &PunchSchedule,
    ) -> bool {
        if self.context.me < device {
            return schedule.wake_at().is_some();
        }
        let relayed_for = jiff::Timestamp::now()
            .duration_since(status.connected_since)
            .unsigned_abs();
        relayed_for < PUNCH_HEAD_START
            || self
                .context
                .punching
                .answered_within(device, PUNCH_ASKED_WITHIN)
    }

    /// Dials a better path than the link `status` describes: the new link (`None` when
    /// there is no better path to try), or `Err` when none answered.
    async fn move_to_better_path(
        &self,
        device: DeviceId,
        status: &PeerStatus,
    ) -> Result<Option<Arc<dyn Link>>, ()> {
        let better = self.better_paths(device, status).await;
        if better.is_empty() {
            return Ok(None);
        }
        let dialed = tokio::time::timeout(MOVE_DIAL_LIMIT, self.dial_first(device, better));
        let Ok(Some((address, link))) = dialed.await else {
            return Err(());
        };
        let to = if status.path == PathKind::Relayed {
            "direct"
        } else {
            "LAN"
        };
        info!(from = %status.address, to = %address, "moving to a {to} path");
        Ok(Some(link))
    }

    /// The relayed link to hole-punch through now, if one is due: the lower device ID asks
    /// (the other answers, `peers::punch`), over a relayed link registered for `device`.
    fn punch_due(
        &self,
        device: DeviceId,
        status: Option<&PeerStatus>,
        schedule: &mut PunchSchedule,
    ) -> Option<Arc<dyn Link>> {
        if self.context.me > device || status?.path != PathKind::Relayed {
            return None;
        }
        let relayed = self.context.registry.link(device)?;
        (relayed.path() == PathKind::Relayed && schedule.due(relayed.id(), Instant::now()))
            .then_some(relayed)
    }

    /// One hole-punching attempt over `relayed`: asks the peer to open its NAT towards us,
    /// then dials the address it gave. Returns the direct link, or counts the failure.
    async fn punch(
        &self,
        device: DeviceId,
        relayed: &Arc<dyn Link>,
        schedule: &mut PunchSchedule,
    ) -> Option<Arc<dyn Link>> {
        let started = Instant::now();
        let attempt = schedule.attempts() + 1;
        let outcome = match self.context.punching.ask(device, &**relayed).await {
            Ok(theirs) => {
                let addresses = theirs
                    .iter()
                    .map(|a| Address::quic(a.ip().to_string(), a.port()))
                    .collect();
                match tokio::time::timeout(PUNCH_DIAL_LIMIT, self.dial_first(device, addresses))
                    .await
                {
                    Ok(Some(found)) => Ok(found),
                    _ => Err(format!("no direct handshake with {theirs:?}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok((address, link)) => {
                let carried = relayed.stats();
                info!(
                    to = %address,
                    attempt,
                    took_ms = started.elapsed().as_millis(),
                    relayed_bytes = carried.rx_bytes + carried.tx_bytes,
                    "hole punched: moving to a direct path"
                );
                schedule.succeeded();
                Some(link)
            }
            Err(why) => {
                let last = schedule.failed(Instant::now());
                info!(attempt, of = MAX_ATTEMPTS, %why, "hole punch attempt failed");
                if last {
                    info!(
                        "hole punching gave up after {MAX_ATTEMPTS} attempts; staying on the relay"
                    );
                }
                None
            }
        }
    }

    /// Runs `link`'s session beside the dial loop, which goes on watching for a better path.
    fn start_session(&self, link: Arc<dyn Link>, device: DeviceId) -> OwnSession {
        let (done, ended) = oneshot::channel();
        let context = self.context.clone();
        self.context.life.spawn(async move {
            let ended = run_connection(&context, link, device, true).await;
            // The peer's configuration changed (it shared a folder with us, say): it closed
            // the link to exchange the new one, and waits for us to dial again.
            let reconfigured = Reason::Reconfigured.to_string();
            let _ = done.send(ended.is_some_and(|why| why.contains(&reconfigured)));
        });
        OwnSession {
            ended,
            started: Instant::now(),
        }
    }

    /// Addresses that would be a better path to `device` than the link it has (`status`),
    /// best first. A relayed link gives way to any direct address (a direct link wins the
    /// registry's choice whoever dialed it, so both sides try). A direct link not on a
    /// LAN address local discovery found gives way to one that is, and only the lower ID
    /// moves it: its new link wins the tie-break on both sides, so the two never fight.
    async fn better_paths(&self, device: DeviceId, status: &PeerStatus) -> Vec<Address> {
        if status.path == PathKind::Relayed {
            return self
                .addresses(device)
                .await
                .into_iter()
                .filter(|a| matches!(a, Address::Quic { .. }))
                .collect();
        }
        if self.context.me > device {
            return Vec::new();
        }
        let Ok(remote) = status.address.parse::<SocketAddr>() else {
            return Vec::new();
        };
        let lan = self.book.lan(device);
        let on_lan = lan.iter().any(|a| {
            a.host_port()
                .is_some_and(|hp| host_ip(&hp) == Some(remote.ip()))
        });
        if on_lan {
            return Vec::new();
        }
        lan.into_iter().take(1).collect()
    }

    /// The configured addresses for `device`, then (if it is `dynamic`) what discovery
    /// knows, without repeats, in source order; direct addresses before relays.
    async fn addresses(&self, device: DeviceId) -> Vec<Address> {
        let mut all = self.configured.addresses(device).await;
        let dynamic = self
            .context
            .config
            .device(device)
            .is_some_and(|d| d.addresses.contains(&Address::Dynamic));
        if dynamic {
            for source in &self.discovery {
                for address in source.addresses(device).await {
                    if !all.contains(&address) {
                        all.push(address);
                    }
                }
            }
        }
        // Stable: within each kind, the sources' order stays.
        all.sort_by_key(|a| matches!(a, Address::Relay { .. }));
        all
    }

    /// Unregisters a dial loop that ends because the engine stops.
    fn stop_dialing(&self, device: DeviceId) {
        self.dialing().remove(&device);
    }
}
