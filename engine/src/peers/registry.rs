//! Which link serves each device: one per device, chosen the same way by both sides (a
//! direct path beats a relayed one; between two of a kind, the one the lower device ID
//! dialed); what each connected peer said about itself; and when each device was last
//! seen. A live link that loses its place is not cut: it is retired (its session stops
//! exchanging indexes, finishes the requests under way and closes once idle), so moving
//! to a better path interrupts no transfer.
//!
//! Who wakes me: connections as they are authenticated, say hello and end. Whom I wake:
//! nobody; the puller and status read me.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::flow::FlowControl;
use super::link::{Link, LinkStats, PathKind};
use super::{BlockData, BlockError, BlockRequest, Peers, Reason, request};

/// How long an old link has to show it is alive when a new link from the same device would
/// lose the tie-break to it. A live peer's QUIC stack answers within a round trip plus its
/// ack delay (25 ms); two seconds leave room for a loaded machine.
pub(crate) const PROBE_WITHIN: Duration = Duration::from_secs(2);

/// A connected peer, as status and `/rest/system/connections` show it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    /// The device.
    pub device: DeviceId,
    /// Where it is.
    pub address: String,
    /// Direct or relayed.
    pub path: PathKind,
    /// Traffic on the link.
    pub stats: LinkStats,
    /// When the link was established.
    pub connected_since: jiff::Timestamp,
    /// This device dialed it (rather than it us).
    pub dialed: bool,
    /// A direct path that hole punching opened (`peers::punch`).
    pub punched: bool,
    /// What it said in its Hello (empty until then).
    pub client_name: String,
    /// Its program's version.
    pub client_version: String,
}

/// What a peer said in its Hello.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hello {
    pub(crate) client_name: String,
    pub(crate) client_version: String,
}

struct Connected {
    link: Arc<dyn Link>,
    /// Fires when a better link takes this one's place.
    retired: CancellationToken,
    dialed: bool,
    since: jiff::Timestamp,
    hello: Hello,
    punched: bool,
}

#[derive(Default)]
struct Inner {
    connected: HashMap<DeviceId, Connected>,
    /// When each device was last connected, and for how long (since the start).
    last_seen: HashMap<DeviceId, (jiff::Timestamp, f64)>,
}

/// The connected peers.
pub(crate) struct PeerRegistry {
    me: DeviceId,
    inner: Mutex<Inner>,
    /// What each link's peer owes this device in block data.
    flow: FlowControl,
    /// Counts the links registered: dial loops wake on it (a relayed link is worth
    /// punching through at once).
    registered: watch::Sender<u64>,
}

impl PeerRegistry {
    pub(crate) fn new(me: DeviceId) -> Self {
        Self {
            me,
            inner: Mutex::default(),
            flow: FlowControl::default(),
            registered: watch::Sender::new(0),
        }
    }

    /// Changes each time a link is registered.
    pub(crate) fn registrations(&self) -> watch::Receiver<u64> {
        self.registered.subscribe()
    }

    /// The one lock, held for map updates only (never across I/O). A panic under it leaves
    /// the maps as they were between two statements, so a poisoned lock is still usable.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `link` to `peer` unless a live one should win; when it is kept, returns
    /// the token that fires when it is retired in turn. A direct link beats a relayed one;
    /// between two of a kind, both devices keep the one the lower device ID dialed (the
    /// other is refused, here or there). A live link that loses its place is retired, not
    /// closed: its session drains it. A refused link is drained too (`session::run`): the
    /// two sides may see two crossing dials arrive in opposite orders, and the peer may be
    /// asking for blocks over the one refused here. An old link the new one would lose to is
    /// asked first whether it still answers ([`PROBE_WITHIN`]): a peer that crashed and
    /// restarted dials a new link while its old one looks alive here until QUIC's idle
    /// timeout (30 s), so a silent old link is closed and the new one kept.
    pub(crate) async fn register(
        &self,
        peer: DeviceId,
        link: Arc<dyn Link>,
        dialed: bool,
    ) -> Option<CancellationToken> {
        // Each turn either decides or closes the rival it probed; a later turn meets a
        // rival only if yet another link to the peer came in meanwhile.
        loop {
            let rival = match self.try_register(peer, &link, dialed) {
                Ok(retired) => return Some(retired),
                Err(rival) => rival,
            };
            // Never under the lock: the probe waits on the network.
            if rival.answers(PROBE_WITHIN).await {
                return None;
            }
            info!(
                device = %peer.short(),
                old = %rival.remote_address(),
                new = %link.remote_address(),
                "the old connection does not answer; the new one replaces it"
            );
            rival.close(&Reason::Silent);
        }
    }

    /// Registers `link` unless a live link it loses to is registered: that link comes
    /// back.
    fn try_register(
        &self,
        peer: DeviceId,
        link: &Arc<dyn Link>,
        dialed: bool,
    ) -> Result<CancellationToken, Arc<dyn Link>> {
        let mut inner = self.inner();
        if let Some(existing) = inner.connected.get(&peer)
            && existing.link.close_reason().is_none()
        {
            let new_wins = match (link.path(), existing.link.path()) {
                (PathKind::Direct, PathKind::Relayed) => true,
                (PathKind::Relayed, PathKind::Direct) => false,
                _ => (if dialed { self.me } else { peer }) == self.me.min(peer),
            };
            if !new_wins {
                return Err(existing.link.clone());
            }
            info!(
                device = %peer.short(),
                old = %existing.link.remote_address(),
                new = %link.remote_address(),
                "a new connection takes the old one's place; the old one drains"
            );
            existing.retired.cancel();
        }
        let retired = CancellationToken::new();
        inner.connected.insert(
            peer,
            Connected {
                link: link.clone(),
                retired: retired.clone(),
                dialed,
                since: jiff::Timestamp::now(),
                hello: Hello::default(),
                punched: false,
            },
        );
        drop(inner);
        self.registered.send_modify(|n| *n += 1);
        Ok(retired)
    }

    /// Records what the peer on `link` said about itself.
    pub(crate) fn said_hello(&self, peer: DeviceId, link_id: usize, hello: Hello) {
        if let Some(c) = self.inner().connected.get_mut(&peer)
            && c.link.id() == link_id
        {
            c.hello = hello;
        }
    }

    /// Records that `link` (when registered for `peer`) is a path hole punching opened.
    pub(crate) fn mark_punched(&self, peer: DeviceId, link_id: usize) {
        if let Some(c) = self.inner().connected.get_mut(&peer)
            && c.link.id() == link_id
        {
            c.punched = true;
        }
    }

    /// Forgets `link` when it is the one registered for `peer`, noting when the device was
    /// last seen; returns whether it was.
    pub(crate) fn unregister(&self, peer: DeviceId, link_id: usize) -> bool {
        let mut inner = self.inner();
        if inner
            .connected
            .get(&peer)
            .is_none_or(|c| c.link.id() != link_id)
        {
            return false;
        }
        if let Some(gone) = inner.connected.remove(&peer) {
            let now = jiff::Timestamp::now();
            let seconds = now.duration_since(gone.since).as_secs_f64();
            inner.last_seen.insert(peer, (now, seconds));
        }
        true
    }

    /// The link that serves `peer`.
    pub(super) fn link(&self, peer: DeviceId) -> Option<Arc<dyn Link>> {
        self.inner().connected.get(&peer).map(|c| c.link.clone())
    }

    /// The connected peer `device`.
    pub(crate) fn status(&self, device: DeviceId) -> Option<PeerStatus> {
        let inner = self.inner();
        let c = inner.connected.get(&device)?;
        Some(PeerStatus {
            device,
            address: c.link.remote_address(),
            path: c.link.path(),
            stats: c.link.stats(),
            connected_since: c.since,
            dialed: c.dialed,
            punched: c.punched,
            client_name: c.hello.client_name.clone(),
            client_version: c.hello.client_version.clone(),
        })
    }

    /// When `device` was last connected (now, while it is) and how long that lasted.
    pub(crate) fn last_seen(&self, device: DeviceId) -> Option<(jiff::Timestamp, f64)> {
        let inner = self.inner();
        if let Some(c) = inner.connected.get(&device) {
            let now = jiff::Timestamp::now();
            return Some((now, now.duration_since(c.since).as_secs_f64()));
        }
        inner.last_seen.get(&device).copied()
    }

    /// Closes every link (shutdown) and forgets them.
    pub(crate) fn close_all(&self, reason: &Reason) {
        for (_, c) in self.inner().connected.drain() {
            c.link.close(reason);
        }
    }
}

#[async_trait::async_trait]
impl Peers for PeerRegistry {
    async fn request_block(
        &self,
        device: DeviceId,
        request: &BlockRequest,
    ) -> Result<BlockData, BlockError> {
        let link = self.link(device).ok_or(BlockError::PeerGone)?;
        let flow = self.flow.of(&link);
        let current = || self.link(device).is_some_and(|now| now.id() == link.id());
        let result = request::request_block(&*link, &flow, request, current).await;
        if matches!(result, Err(BlockError::Slow | BlockError::Overdue))
            && self.is_connected(device)
            && !current()
        {
            // The link lost its place while the request waited on it (its queue drains
            // slowly behind what was sent before): not the peer's fault; asked again on
            // the new link.
            debug!(device = %device.short(), "a request on a replaced link was slow; asking again on the new one");
            return Err(BlockError::Moved);
        }
        if matches!(result, Err(BlockError::Slow | BlockError::Overdue)) && flow.struck_out() {
            warn!(device = %device.short(), "block requests answered too slowly; disconnecting");
            link.close(&Reason::TooSlow);
        }
        result
    }

    fn is_connected(&self, device: DeviceId) -> bool {
        self.inner().connected.contains_key(&device)
    }

    fn disconnect(&self, device: DeviceId, reason: Reason) {
        if let Some(link) = self.link(device) {
            link.close(&reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::link::memory_pair;

    const LOW: DeviceId = DeviceId::from_bytes([1; 32]);
    const HIGH: DeviceId = DeviceId::from_bytes([2; 32]);

    #[tokio::test]
    async fn both_sides_keep_the_link_the_lower_id_dialed() {
        // Seen from the lower device: its own dial wins over the peer's.
        let low = PeerRegistry::new(LOW);
        let (theirs, _) = memory_pair();
        let (mine, _) = memory_pair();
        let theirs_retired = low.register(HIGH, theirs.clone(), false).await.unwrap();
        assert!(low.register(HIGH, mine.clone(), true).await.is_some());
        // The loser is retired (its session drains it), not cut.
        assert!(theirs_retired.is_cancelled());
        assert!(theirs.close_reason().is_none());
        assert!(mine.close_reason().is_none());
        assert_eq!(low.link(HIGH).unwrap().id(), mine.id());
        // Seen from the higher device: the lower one's dial is kept, its own refused.
        let high = PeerRegistry::new(HIGH);
        let (from_low, _) = memory_pair();
        let (to_low, _) = memory_pair();
        assert!(high.register(LOW, from_low.clone(), false).await.is_some());
        assert!(high.register(LOW, to_low, true).await.is_none());
        assert!(from_low.close_reason().is_none());
    }

    #[tokio::test]
    async fn a_direct_link_beats_a_relayed_one_whoever_dialed_it() {
        // Seen from the lower device: the higher one's direct dial replaces the lower
        // one's own relayed link (the dialer rule would keep the relayed one).
        let low = PeerRegistry::new(LOW);
        let (relayed, _) = memory_pair();
        relayed.relay();
        let (direct, _) = memory_pair();
        let relayed_retired = low.register(HIGH, relayed.clone(), true).await.unwrap();
        assert!(low.register(HIGH, direct.clone(), false).await.is_some());
        assert!(relayed_retired.is_cancelled());
        assert_eq!(low.status(HIGH).unwrap().path, PathKind::Direct);
        // A relayed link does not displace a live direct one, even dialed by the lower ID.
        let (another_relayed, _) = memory_pair();
        another_relayed.relay();
        assert!(low.register(HIGH, another_relayed, true).await.is_none());
        assert_eq!(low.link(HIGH).unwrap().id(), direct.id());
    }

    #[tokio::test]
    async fn a_request_given_room_only_after_its_link_lost_its_place_is_not_sent_on_it() {
        let low = PeerRegistry::new(LOW);
        let (relayed, _far_end) = memory_pair();
        relayed.relay();
        assert!(low.register(HIGH, relayed.clone(), true).await.is_some());
        // Earlier requests fill the relayed link's window.
        let relayed_link: Arc<dyn Link> = relayed.clone();
        let window_full = low.flow.of(&relayed_link).reserve(u32::MAX).await;
        let request = BlockRequest {
            folder: "docs".into(),
            name: "big.bin".into(),
            block: peerfold_protocol::chunking::Block {
                offset: 0,
                size: 1 << 20,
                hash: blake3::hash(b"block"),
            },
            skip: 0,
        };
        let waiting = low.request_block(HIGH, &request);
        tokio::pin!(waiting);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(early.is_err(), "it waits for room in the window");
        // A direct path is punched, then the window frees up.
        let (direct, _) = memory_pair();
        assert!(low.register(HIGH, direct.clone(), false).await.is_some());
        let traffic = relayed.stats();
        drop(window_full);
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the request did not wait for an answer on the old link");
        assert!(
            matches!(result, Err(BlockError::Moved)),
            "{:?}",
            result.map(|data| data.data.len())
        );
        assert_eq!(relayed.stats(), traffic, "nothing was sent on the old link");
    }

    #[tokio::test]
    async fn an_old_link_ending_late_does_not_unregister_its_successor() {
        let registry = PeerRegistry::new(LOW);
        let (old, _) = memory_pair();
        let (new, _) = memory_pair();
        assert!(registry.register(HIGH, old.clone(), true).await.is_some());
        old.close(&Reason::Shutdown);
        assert!(registry.register(HIGH, new.clone(), true).await.is_some());
        assert!(!registry.unregister(HIGH, old.id()));
        assert!(registry.is_connected(HIGH));
        assert!(registry.unregister(HIGH, new.id()));
        assert!(!registry.is_connected(HIGH));
        assert!(registry.last_seen(HIGH).is_some());
    }

    #[tokio::test]
    async fn a_new_link_replaces_an_old_one_that_no_longer_answers() {
        // The lower device's own dial would win, but the peer crashed and dialed again.
        let low = PeerRegistry::new(LOW);
        let (old, _) = memory_pair();
        let (new, _) = memory_pair();
        assert!(low.register(HIGH, old.clone(), true).await.is_some());
        old.mute();
        assert!(low.register(HIGH, new.clone(), false).await.is_some());
        assert_eq!(
            old.close_reason().as_deref(),
            Some("no answer; replaced by a new connection")
        );
        assert!(new.close_reason().is_none());
        assert!(!low.unregister(HIGH, old.id()));
        assert!(low.is_connected(HIGH));
    }
}
