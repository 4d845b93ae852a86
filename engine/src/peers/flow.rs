//! How much block data peers may owe this device, and which peers are too slow.
//!
//! Every block request takes its size from the peer's window and from the total before it
//! is sent, and gives it back once the data is written (or the request failed): what a
//! peer can make this device hold for it is bounded, whether it answers, trickles or stays
//! silent. A peer that owes data is watched: it must deliver at least [`FLOOR_RATE`] over
//! each [`STALL_WINDOW`] while it owes anything, and each request must complete within
//! [`GRACE`] plus twice the time the peer needs, at its measured rate, for all it owes.
//! A peer that fails either gets a strike and its requests go to other peers; at
//! [`STRIKES_TO_DISCONNECT`] it is disconnected.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::link::Link;

/// Bytes of block data one peer may owe this device at once on a short link; a larger
/// block takes the whole window.
const PEER_WINDOW_FLOOR: u32 = 2 << 20;
/// What one peer may owe at most, however long the link.
const PEER_WINDOW_CEILING: u32 = 16 << 20;
/// Bytes QUIC may hold unacknowledged (or read from disk and not yet taken by QUIC) per
/// connection on a short link.
const SEND_WINDOW_FLOOR: u32 = 1 << 20;
/// The rate the windows are sized to keep up on a long link: 1 Gbit/s.
const SIZED_RATE: f64 = 125e6;
/// Bytes all peers together may owe this device at once.
pub(crate) const TOTAL_WINDOW: usize = 64 << 20;
/// What any request may take, however little the peer owes.
pub(crate) const GRACE: Duration = Duration::from_secs(10);
/// The slowest delivery a peer that owes data gets away with (bytes per second).
pub(crate) const FLOOR_RATE: u64 = 16 << 10;
/// The period over which a peer's delivery is measured.
pub(crate) const STALL_WINDOW: Duration = Duration::from_secs(10);
/// Slow windows and overdue requests a link is allowed before it is closed.
pub(crate) const STRIKES_TO_DISCONNECT: u32 = 3;

/// The buffers a link gets for its round trip. Each is at least what a bulk transfer
/// needs in flight at the link's rate (twice the rate times the round trip): a short link
/// gets the floors, which keep both ends' memory small and the data in the CPU's caches
/// (larger windows on the bench's veth link held 25 MB more on each side and were no
/// faster, bench/RESULTS.md); a long one gets room for 1 Gbit/s, up to the ceilings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    /// What QUIC may hold unacknowledged, and what is read for the peer and not yet
    /// taken by QUIC.
    pub(crate) send: u32,
    /// What the peer may send that this device has not read yet, all streams together:
    /// twice what it may owe in block data, so index traffic has room beside the blocks.
    pub(crate) receive: u32,
    /// Block data the peer may owe this device at once.
    pub(crate) owed: u32,
}

impl Windows {
    /// The windows for a link whose round trip (measured before any load) is `round_trip`.
    pub(crate) fn for_round_trip(round_trip: Duration) -> Self {
        // Saturates: a round trip of hours is still the ceilings.
        let in_flight = (2.0 * round_trip.as_secs_f64() * SIZED_RATE) as u32;
        let owed = in_flight.clamp(PEER_WINDOW_FLOOR, PEER_WINDOW_CEILING);
        Self {
            send: in_flight.clamp(SEND_WINDOW_FLOOR, PEER_WINDOW_CEILING),
            receive: 2 * owed,
            owed,
        }
    }
}

/// A count of units (bytes, KiB) that holders take from, where a holder asking for more
/// than the whole allowance takes all of it (a block larger than a window still goes).
pub(crate) struct Allowance {
    units: Arc<Semaphore>,
    size: u32,
}

impl Allowance {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            units: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// Waits until `units` (at most the whole allowance) are free and holds them; `None`
    /// once the allowance is closed, which it never is.
    pub(crate) async fn hold(&self, units: u32) -> Option<OwnedSemaphorePermit> {
        let units = units.min(self.size);
        self.units.clone().acquire_many_owned(units).await.ok()
    }
}

/// Windows are counted in KiB: semaphores count permits in `u32`.
fn kib(bytes: u32) -> u32 {
    bytes.div_ceil(1024).max(1)
}

/// A link (while it lives) and its flow state.
type LinkFlow = (Weak<dyn Link>, Arc<PeerFlow>);

/// The windows of all links, and the total.
pub(crate) struct FlowControl {
    total: Arc<Semaphore>,
    links: Mutex<Vec<LinkFlow>>,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self {
            total: Arc::new(Semaphore::new(TOTAL_WINDOW / 1024)),
            links: Mutex::default(),
        }
    }
}

impl FlowControl {
    /// The flow state of `link` (made on first use; forgotten once the link is dropped).
    pub(crate) fn of(&self, link: &Arc<dyn Link>) -> Arc<PeerFlow> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|(weak, _)| weak.strong_count() > 0);
        if let Some((_, flow)) = links
            .iter()
            .find(|(weak, _)| weak.upgrade().is_some_and(|l| l.id() == link.id()))
        {
            return flow.clone();
        }
        let window = Windows::for_round_trip(link.round_trip()).owed;
        let flow = Arc::new(PeerFlow::new(self.total.clone(), window));
        links.push((Arc::downgrade(link), flow.clone()));
        flow
    }
}

/// What one link owes and how it delivers.
pub(crate) struct PeerFlow {
    /// In KiB.
    window: Allowance,
    total: Arc<Semaphore>,
    /// Bytes requested and not yet received in full.
    owed: AtomicU64,
    /// Bytes of responses received so far (counted as they arrive, not per frame).
    pub(crate) delivered: Arc<AtomicU64>,
    strikes: AtomicU32,
    watch: Mutex<Watch>,
}

/// The delivery measurement in progress.
struct Watch {
    /// Start of the current measurement (reset whenever the peer owes nothing).
    since: Instant,
    delivered_then: u64,
    /// Counts the slow windows so far: requests sent before a slow window fail.
    slow_windows: u64,
    /// Measured delivery rate (bytes per second), once measured.
    rate: Option<f64>,
}

/// The windows a request holds until its data is written.
pub(crate) struct Held {
    _peer: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// What a watched request learns at each look.
pub(crate) enum Verdict {
    /// Keep waiting.
    Wait,
    /// The peer delivered too little over a window since this request was sent.
    Slow,
    /// This request took longer than the peer's pace allows.
    Overdue,
}

impl PeerFlow {
    fn new(total: Arc<Semaphore>, window: u32) -> Self {
        Self {
            window: Allowance::new(kib(window)),
            total,
            owed: AtomicU64::new(0),
            delivered: Arc::new(AtomicU64::new(0)),
            strikes: AtomicU32::new(0),
            watch: Mutex::new(Watch {
                since: Instant::now(),
                delivered_then: 0,
                slow_windows: 0,
                rate: None,
            }),
        }
    }

    fn watch(&self) -> MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room for `size` bytes in this peer's window and in the total.
    pub(crate) async fn reserve(&self, size: u32) -> Held {
        // Never closed: both semaphores live as long as `self`.
        let peer = self.window.hold(kib(size)).await;
        let permits = peer.as_ref().map_or(0, |p| p.num_permits() as u32);
        let total = self.total.clone().acquire_many_owned(permits).await;
        match (peer, total) {
            (Some(peer), Ok(total)) => Held {
                _peer: peer,
                _total: total,
            },
            _ => unreachable!("flow-control semaphores are never closed"),
        }
    }

    /// Notes a request of `size` bytes sent; the returned guard ends it.
    pub(crate) fn begin(self: &Arc<Self>, size: u32) -> Owed {
        let before = self.owed.fetch_add(u64::from(size), Ordering::SeqCst);
        if before == 0 {
            // Owing nothing before: the measurement starts now.
            let mut watch = self.watch();
            watch.since = Instant::now();
            watch.delivered_then = self.delivered.load(Ordering::SeqCst);
        }
        Owed {
            flow: self.clone(),
            size: u64::from(size),
            owed_at_send: before + u64::from(size),
            sent: Instant::now(),
            slow_windows: self.watch().slow_windows,
        }
    }

    fn strike(&self) {
        self.strikes.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the link had too many slow windows and overdue requests to keep.
    pub(crate) fn struck_out(&self) -> bool {
        self.strikes.load(Ordering::SeqCst) >= STRIKES_TO_DISCONNECT
    }

    /// Closes the measurement window if it is over; returns how many were slow. A window
    /// under this device's own receive limit (`limited`) is never the peer's fault.
    fn look(&self, now: Instant, limited: bool) -> (u64, Option<f64>) {
        let mut watch = self.watch();
        let elapsed = now.duration_since(watch.since);
        if elapsed >= STALL_WINDOW {
            let delivered = self.delivered.load(Ordering::SeqCst);
            let got = delivered.saturating_sub(watch.delivered_then) as f64;
            let rate = got / elapsed.as_secs_f64();
            if !limited && rate < FLOOR_RATE as f64 && self.owed.load(Ordering::SeqCst) > 0 {
                // One strike per slow window, however many requests it fails.
                watch.slow_windows += 1;
                self.strike();
            }
            watch.rate = Some(match watch.rate {
                Some(previous) => (previous + rate) / 2.0,
                None => rate,
            });
            watch.since = now;
            watch.delivered_then = delivered;
        }
        (watch.slow_windows, watch.rate)
    }
}

/// A request in flight; dropping it ends what the peer owes for it.
pub(crate) struct Owed {
    flow: Arc<PeerFlow>,
    size: u64,
    /// What the peer owed on this link once this request was sent (this one included):
    /// the queue it waits behind.
    owed_at_send: u64,
    sent: Instant,
    slow_windows: u64,
}

impl Owed {
    /// Whether to keep waiting for this request's answer (`limited`: this device's receive
    /// limit holds the link back).
    pub(crate) fn verdict(&self, now: Instant, limited: bool) -> Verdict {
        let (slow_windows, rate) = self.flow.look(now, limited);
        if slow_windows > self.slow_windows {
            return Verdict::Slow;
        }
        // Its time comes from the queue it waits behind, which what came after it only
        // lengthens: once a link stops taking new requests (it lost its place to a better
        // one) and what it owes shrinks, the requests still waiting keep their time.
        let owed = self.flow.owed.load(Ordering::SeqCst).max(self.owed_at_send) as f64;
        let pace = rate.unwrap_or(0.0).max(FLOOR_RATE as f64);
        let allowed = GRACE + Duration::from_secs_f64(2.0 * owed / pace);
        if now.duration_since(self.sent) > allowed {
            self.flow.strike();
            Verdict::Overdue
        } else {
            Verdict::Wait
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        self.flow.owed.fetch_sub(self.size, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::link::memory_pair;

    /// The flow of a link with `window` and the whole total to itself.
    fn alone(window: u32) -> Arc<PeerFlow> {
        Arc::new(PeerFlow::new(
            Arc::new(Semaphore::new(TOTAL_WINDOW / 1024)),
            window,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_delivers_nothing_is_slow_after_one_window() {
        let flow = alone(PEER_WINDOW_CEILING);
        let _held = flow.reserve(128 << 10).await;
        let owed = flow.begin(128 << 10);
        tokio::time::advance(STALL_WINDOW / 2).await;
        assert!(matches!(owed.verdict(Instant::now(), false), Verdict::Wait));
        tokio::time::advance(STALL_WINDOW).await;
        assert!(matches!(owed.verdict(Instant::now(), false), Verdict::Slow));
        // A request sent after the slow window is judged on the next one.
        let later = flow.begin(1024);
        assert!(matches!(
            later.verdict(Instant::now(), false),
            Verdict::Wait
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_delivery_under_our_own_receive_limit_is_no_strike() {
        let flow = alone(PEER_WINDOW_CEILING);
        let _held = flow.reserve(128 << 10).await;
        let owed = flow.begin(128 << 10);
        tokio::time::advance(STALL_WINDOW + STALL_WINDOW / 2).await;
        assert!(matches!(owed.verdict(Instant::now(), true), Verdict::Wait));
        assert!(!flow.struck_out());
        assert_eq!(flow.strikes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_peer_passes_windows_but_one_silent_request_is_overdue() {
        let flow = alone(PEER_WINDOW_CEILING);
        let silent = flow.begin(1 << 20);
        for _ in 0..3 {
            // Other requests come in at 10 MiB/s.
            flow.delivered.fetch_add(100 << 20, Ordering::SeqCst);
            tokio::time::advance(STALL_WINDOW).await;
            let verdict = silent.verdict(Instant::now(), false);
            if matches!(verdict, Verdict::Overdue) {
                return;
            }
            assert!(matches!(verdict, Verdict::Wait));
        }
        panic!("the silent request was never overdue");
    }

    #[tokio::test(start_paused = true)]
    async fn windows_bound_what_is_owed_and_free_when_held_data_is_dropped() {
        let control = FlowControl::default();
        let (link, _other) = memory_pair();
        let link: Arc<dyn Link> = link;
        let flow = control.of(&link);
        assert!(Arc::ptr_eq(&flow, &control.of(&link)));
        // A link with no round trip to speak of gets the floor.
        let held = flow.reserve(PEER_WINDOW_FLOOR - 1024).await;
        let _last_kib = flow.reserve(1024).await;
        let waiting = tokio::time::timeout(Duration::from_secs(1), flow.reserve(1024)).await;
        assert!(
            waiting.is_err(),
            "a full window makes the next request wait"
        );
        drop(held);
        let _next = flow.reserve(1024).await;
        // Another link has its own window; the total still bounds them together.
        let (other, _o) = memory_pair();
        let other: Arc<dyn Link> = other;
        assert!(!Arc::ptr_eq(&flow, &control.of(&other)));
    }

    #[test]
    fn windows_grow_with_the_round_trip_between_floors_and_ceilings() {
        let lan = Windows::for_round_trip(Duration::from_micros(200));
        assert_eq!(
            lan,
            Windows {
                send: SEND_WINDOW_FLOOR,
                receive: 2 * PEER_WINDOW_FLOOR,
                owed: PEER_WINDOW_FLOOR,
            }
        );
        // 40 ms at 1 Gbit/s: 10 MB in flight.
        let wan = Windows::for_round_trip(Duration::from_millis(40));
        assert_eq!((wan.send, wan.owed), (10_000_000, 10_000_000));
        assert_eq!(wan.receive, 20_000_000);
        let far = Windows::for_round_trip(Duration::from_secs(1));
        assert_eq!(far.owed, PEER_WINDOW_CEILING);
        assert_eq!(far.send, PEER_WINDOW_CEILING);
    }

    #[tokio::test]
    async fn a_block_larger_than_an_allowance_takes_all_of_it() {
        let budget = Allowance::new(1 << 20);
        let largest = budget.hold(16 << 20).await.expect("open budget");
        assert_eq!(largest.num_permits(), 1 << 20);
        assert!(
            budget.units.try_acquire().is_err(),
            "nothing left beside it"
        );
        drop(largest);
        let small = budget.hold(4096).await.expect("open budget");
        assert_eq!(small.num_permits(), 4096);
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_larger_than_the_window_takes_all_of_it() {
        let flow = alone(PEER_WINDOW_FLOOR);
        let largest = flow.reserve(16 << 20).await;
        let waiting = tokio::time::timeout(Duration::from_secs(1), flow.reserve(1024)).await;
        assert!(waiting.is_err(), "the large block holds the whole window");
        drop(largest);
        let _next = flow.reserve(16 << 20).await;
    }

    /// A request sent behind a long queue keeps the time that queue needs, even once the
    /// requests ahead of it are answered and what the link owes shrinks (a link that lost
    /// its place takes no new requests, so nothing lengthens the queue again).
    #[tokio::test(start_paused = true)]
    async fn a_request_keeps_the_time_of_the_queue_it_was_sent_behind() {
        let flow = alone(PEER_WINDOW_CEILING);
        let ahead: Vec<_> = (0..15).map(|_| flow.begin(1 << 20)).collect();
        let last = flow.begin(1 << 20);
        // The peer delivers 1 MiB/s: the 16 MiB queue needs 16 s, and GRACE more is allowed.
        for _ in 0..2 {
            flow.delivered.fetch_add(10 << 20, Ordering::SeqCst);
            tokio::time::advance(STALL_WINDOW).await;
            let _ = last.verdict(Instant::now(), false);
        }
        drop(ahead);
        // 20 s after it was sent, with only itself owed: without the queue it was sent
        // behind it would get 10 s + 2 s and be overdue.
        assert!(matches!(last.verdict(Instant::now(), false), Verdict::Wait));
    }

    #[tokio::test(start_paused = true)]
    async fn three_slow_windows_strike_out_one_strike_each() {
        let flow = alone(PEER_WINDOW_CEILING);
        let many: Vec<_> = (0..10).map(|_| flow.begin(1024)).collect();
        for window in 1..=3 {
            tokio::time::advance(STALL_WINDOW).await;
            for owed in &many {
                let _ = owed.verdict(Instant::now(), false);
            }
            assert_eq!(flow.struck_out(), window == 3, "after window {window}");
        }
    }
}
