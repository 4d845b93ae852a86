//! Hole punching: moving a relayed link to a direct path when both devices sit behind NATs
//! that let it through.
//!
//! Over the relayed link, the device with the lower ID asks (a `Punch` on a stream of its
//! own) with its public address, as STUN learned it on its QUIC socket. The other device
//! sends a burst of datagrams from its QUIC socket to that address, which opens its NAT
//! towards it, and answers with its own public address; the asker then dials that address
//! directly, and its QUIC handshake finds the way open. The direct link beats the relayed
//! one in the registry, which drains the relayed one, so nothing under way is cut.
//!
//! What arrives at a NAT before its own host sent anything is dropped there (a home
//! router's firewall holds no state for it), so the order does not matter beyond "the
//! answerer sends first". A symmetric NAT maps each destination to a new port, so the
//! address STUN saw is no use to the peer and the attempts fail: they are retried
//! [`MAX_ATTEMPTS`] times per relayed link (2 s, doubling, between them) and then given up;
//! the devices stay on the relay.
//!
//! Who wakes me: the dialer (asks, through [`PunchSchedule`]), a peer's Punch stream
//! (answers). Whom I wake: nobody; the dialer runs the direct link's session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use peerfold_protocol::DeviceId;
use peerfold_protocol::wire::{self, message::Body};
use tracing::debug;

use super::link::{FramedStream, Link, LinkError};
use crate::life::Life;
use crate::net::stun::NatType;

/// Attempts per relayed link before the devices stay on the relay.
pub(crate) const MAX_ATTEMPTS: u32 = 4;
/// The wait after the first failed attempt; it doubles after each.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// How long the asker waits for the answer over the relay. A relayed link busy with a
/// transfer queues seconds of data in the relay's TCP buffers ahead of it.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// The answerer's burst: a datagram every [`BURST_GAP`], [`BURST_LEN`] times. The first
/// opens its NAT; the others keep it open (and replace lost ones) until the asker, which
/// may get the answer seconds later over a busy relay, has dialed.
const BURST_LEN: u32 = 40;
const BURST_GAP: Duration = Duration::from_millis(500);
/// Addresses taken from a peer's Punch (a device has one public address per endpoint).
const MAX_ADDRESSES: usize = 4;
/// How long after an exchange a new direct link to or from one of its addresses counts as
/// punched.
const EXPECT_FOR: Duration = Duration::from_secs(30);
/// A peer's Punch is answered at most this often (each answer sends a burst).
const ANSWER_EVERY: Duration = Duration::from_secs(1);
/// The largest frame a Punch stream takes.
pub(crate) const MAX_PUNCH_FRAME_LEN: usize = 4 << 10;

/// What hole punching needs of the transport: `net` implements it with the STUN client of
/// the first QUIC endpoint, whose socket the datagrams leave from.
pub(crate) trait PunchPort: Send + Sync {
    /// This device's public address and what is known of its NAT, once STUN learned it.
    fn public_address(&self) -> Option<(SocketAddr, NatType)>;
    /// Sends one hole-punching datagram from the QUIC socket to `to`.
    fn send_punch(&self, to: SocketAddr);
}

/// No public address, no datagrams: the in-process test tier, which has no transport.
#[cfg(test)]
pub(crate) struct NoPunching;

#[cfg(test)]
impl PunchPort for NoPunching {
    fn public_address(&self) -> Option<(SocketAddr, NatType)> {
        None
    }
    fn send_punch(&self, _to: SocketAddr) {}
}

/// Why an attempt found no direct path to dial.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PunchError {
    #[error("this device's public address is not known (STUN found none)")]
    NoPublicAddress,
    #[error("the peer's public address is not known")]
    PeerHasNoAddress,
    #[error("the peer did not answer over the relay")]
    NoAnswer,
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Hole punching's shared state: the port, and which direct links it opened.
pub(crate) struct HolePunching {
    port: Arc<dyn PunchPort>,
    /// By device: the addresses of the last exchange, and until when a new direct link to
    /// or from one of them counts as punched.
    expected: Mutex<HashMap<DeviceId, (Vec<SocketAddr>, Instant)>>,
    /// When each device's last Punch was answered.
    answered: Mutex<HashMap<DeviceId, Instant>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Maps updated in one statement each: a poisoned one is still whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The same address whether an IPv6 socket saw it IPv4-mapped or not.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The addresses in a peer's Punch worth sending to: parsed, at most [`MAX_ADDRESSES`],
/// none unspecified, multicast or port 0 (a peer cannot aim our bursts at a broadcast).
fn usable_addresses(punch: &wire::Punch) -> Vec<SocketAddr> {
    punch
        .addresses
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(canonical)
        .filter(|a| {
            let ip = a.ip();
            a.port() != 0
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && !matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
        })
        .take(MAX_ADDRESSES)
        .collect()
}

impl HolePunching {
    pub(crate) fn new(port: Arc<dyn PunchPort>) -> Self {
        Self {
            port,
            expected: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
        }
    }

    /// Our side of a Punch: the public address we know, if any.
    fn ours(&self) -> wire::Message {
        let (addresses, nat_type) = match self.port.public_address() {
            Some((address, nat)) => (vec![address.to_string()], nat.as_str()),
            None => (Vec::new(), NatType::Unknown.as_str()),
        };
        wire::Message {
            body: Some(Body::Punch(wire::Punch {
                addresses,
                nat_type: nat_type.to_owned(),
            })),
        }
    }

    /// Whether a Punch from `device` was answered within `within`: the asker is punching, so
    /// a plain dial of ours would race its direct link.
    pub(crate) fn answered_within(&self, device: DeviceId, within: Duration) -> bool {
        locked(&self.answered)
            .get(&device)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Notes that a direct link to or from `addresses` is being opened for `device`.
    fn expect(&self, device: DeviceId, addresses: Vec<SocketAddr>) {
        locked(&self.expected).insert(device, (addresses, Instant::now() + EXPECT_FOR));
    }

    /// Whether a direct link to `device` at `remote` is one hole punching opened.
    pub(crate) fn opened(&self, device: DeviceId, remote: &str) -> bool {
        let Ok(remote) = remote.parse::<SocketAddr>().map(canonical) else {
            return false;
        };
        let mut expected = locked(&self.expected);
        expected.retain(|_, (_, until)| *until > Instant::now());
        expected
            .get(&device)
            .is_some_and(|(addresses, _)| addresses.contains(&remote))
    }

    /// Answers `peer`'s Punch (read from `stream`): a burst of datagrams to its addresses,
    /// the first before the answer goes back, then our own address.
    pub(crate) async fn answer(
        &self,
        peer: DeviceId,
        mut stream: FramedStream,
        punch: &wire::Punch,
        life: &Life,
    ) {
        {
            let mut answered = locked(&self.answered);
            let now = Instant::now();
            if answered
                .get(&peer)
                .is_some_and(|at| now.duration_since(*at) < ANSWER_EVERY)
            {
                debug!("a Punch came too soon after the last; not answered");
                return;
            }
            answered.insert(peer, now);
        }
        let theirs = usable_addresses(punch);
        debug!(addresses = ?theirs, nat = %punch.nat_type, "the peer asks for a hole punch");
        if !theirs.is_empty() && self.port.public_address().is_some() {
            self.expect(peer, theirs.clone());
            for to in &theirs {
                self.port.send_punch(*to);
            }
            let port = self.port.clone();
            let stop = life.child_token();
            life.spawn(async move {
                for _ in 1..BURST_LEN {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(BURST_GAP) => {}
                    }
                    for to in &theirs {
                        port.send_punch(*to);
                    }
                }
            });
        }
        if let Err(e) = stream.send.send(&self.ours()).await {
            debug!(error = %e, "the Punch answer was not sent");
            return;
        }
        let _ = stream.send.finish().await;
    }

    /// Asks the peer on the relayed `link` to punch: returns its public addresses, to dial
    /// at once.
    pub(crate) async fn ask(
        &self,
        device: DeviceId,
        link: &dyn Link,
    ) -> Result<Vec<SocketAddr>, PunchError> {
        if self.port.public_address().is_none() {
            return Err(PunchError::NoPublicAddress);
        }
        let mut stream = link.open().await?;
        stream.recv.limit(MAX_PUNCH_FRAME_LEN);
        stream.send.send(&self.ours()).await?;
        let _ = stream.send.finish().await;
        let answer = match tokio::time::timeout(ANSWER_WAIT, stream.recv.next()).await {
            Ok(Ok(Some(wire::Message {
                body: Some(Body::Punch(punch)),
            }))) => punch,
            Ok(Err(e)) => return Err(e.into()),
            _ => return Err(PunchError::NoAnswer),
        };
        let theirs = usable_addresses(&answer);
        debug!(addresses = ?theirs, nat = %answer.nat_type, "the peer answered the hole punch");
        if theirs.is_empty() {
            return Err(PunchError::PeerHasNoAddress);
        }
        self.expect(device, theirs.clone());
        Ok(theirs)
    }
}

/// Where hole punching to one device stands, kept by its dial loop: which relayed link the
/// attempts are for (a new one starts over), how many were made, when the next is due.
#[derive(Debug)]
pub(crate) struct PunchSchedule {
    link: Option<usize>,
    attempts: u32,
    next: Instant,
    /// A direct path was opened from this link: nothing more to do over it.
    done: bool,
}

impl Default for PunchSchedule {
    fn default() -> Self {
        Self {
            link: None,
            attempts: 0,
            next: Instant::now(),
            done: false,
        }
    }
}

impl PunchSchedule {
    /// Whether an attempt over relayed link `link_id` is due now (a new link starts over).
    pub(crate) fn due(&mut self, link_id: usize, now: Instant) -> bool {
        if self.link != Some(link_id) {
            *self = Self {
                link: Some(link_id),
                attempts: 0,
                next: now,
                done: false,
            };
        }
        !self.done && self.attempts < MAX_ATTEMPTS && now >= self.next
    }

    /// Notes that an attempt opened a direct path.
    pub(crate) fn succeeded(&mut self) {
        self.done = true;
    }

    /// Counts a failed attempt; true when it was the last.
    pub(crate) fn failed(&mut self, now: Instant) -> bool {
        self.attempts += 1;
        self.next = now + RETRY_FIRST * 2u32.saturating_pow(self.attempts - 1);
        self.attempts >= MAX_ATTEMPTS
    }

    /// How many attempts were made over the current link.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the loop should look again (`None` once it gave up, or before any link).
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        (self.link.is_some() && !self.done && self.attempts < MAX_ATTEMPTS).then_some(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_and_stop_and_a_new_link_starts_over() {
        let mut schedule = PunchSchedule::default();
        let t0 = Instant::now();
        assert!(schedule.due(7, t0));
        let mut waits = Vec::new();
        let mut now = t0;
        loop {
            let last = schedule.failed(now);
            if last {
                break;
            }
            let next = schedule.wake_at().unwrap();
            assert!(!schedule.due(7, now), "not due before its time");
            waits.push((next - now).as_secs());
            now = next;
            assert!(schedule.due(7, now));
        }
        assert_eq!(waits, [2, 4, 8]);
        assert_eq!(schedule.attempts(), MAX_ATTEMPTS);
        assert!(
            !schedule.due(7, now + Duration::from_secs(3600)),
            "given up"
        );
        assert_eq!(schedule.wake_at(), None);
        assert!(schedule.due(8, now), "a new relayed link starts over");
        schedule.succeeded();
        assert!(!schedule.due(8, now), "done once a direct path is open");
        assert_eq!(schedule.wake_at(), None);
    }

    #[test]
    fn only_plausible_addresses_are_taken_from_a_peer() {
        let punch = wire::Punch {
            addresses: [
                "0.0.0.0:22000",
                "224.0.0.251:5353",
                "255.255.255.255:9",
                "203.0.113.9:0",
                "not an address",
                "[::ffff:203.0.113.9]:22100",
                "[2001:db8::1]:22100",
                "198.51.100.1:1",
                "198.51.100.2:2",
                "198.51.100.3:3",
            ]
            .map(String::from)
            .to_vec(),
            nat_type: String::new(),
        };
        let taken: Vec<String> = usable_addresses(&punch)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            taken,
            [
                "203.0.113.9:22100",
                "[2001:db8::1]:22100",
                "198.51.100.1:1",
                "198.51.100.2:2"
            ]
        );
    }

    #[test]
    fn a_link_counts_as_punched_only_to_an_expected_address() {
        let punching = HolePunching::new(Arc::new(NoPunching));
        let device = DeviceId::from_bytes([3; 32]);
        punching.expect(device, vec!["203.0.113.9:22100".parse().unwrap()]);
        assert!(punching.opened(device, "[::ffff:203.0.113.9]:22100"));
        assert!(punching.opened(device, "203.0.113.9:22100"));
        assert!(!punching.opened(device, "203.0.113.9:22101"));
        assert!(!punching.opened(DeviceId::from_bytes([4; 32]), "203.0.113.9:22100"));
        assert!(!punching.opened(device, "relay://203.0.113.9:22067"));
    }
}
