//! Bandwidth limits, as Syncthing's `maxSendKbps` / `maxRecvKbps` (KiB/s): one pair of
//! token buckets (governor) for all peers together and one per device; the bytes of every
//! frame a link's streams send or receive pass through both. Links to LAN peers are not
//! limited unless `limitBandwidthInLan`. Limits follow configuration changes at once, on
//! links already open too.
//!
//! Receiving is limited by reading no faster than the limit: QUIC's flow control then
//! holds the sender back, so the bytes on the wire keep to the limit as well.
//!
//! Who wakes me: nobody (the engine calls [`RateLimits::apply`] on each configuration
//! change). Whom I wake: nobody; a stream waits here for its bytes' turn.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use peerfold_protocol::DeviceId;
use tracing::info;

use super::Reason;
use super::link::{FramedStream, Link, LinkError, LinkStats, PathKind};
use crate::config::Config;

/// The most bytes taken from a bucket at once (and its burst): half a MiB, as Syncthing.
const BURST: u32 = 512 * 1024;

/// One direction's limit: unlimited, or a token bucket at a rate.
#[derive(Debug, Default)]
struct Bucket {
    /// The rate in KiB/s and its bucket (`None`: no limit).
    current: RwLock<Option<(u64, Arc<DefaultDirectRateLimiter>)>>,
    /// Waiters take their turn in the order they came (tokio's mutex is fair): the bucket
    /// alone lets whoever polls first win, and a block request's stream could starve
    /// behind a hundred others until it is overdue.
    queue: tokio::sync::Mutex<()>,
}

impl Bucket {
    /// Sets the rate (KiB/s, 0 for none); returns whether it changed.
    fn set(&self, kib_per_second: u64) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().map_or(0, |(rate, _)| *rate) == kib_per_second {
            return false;
        }
        *current = u32::try_from(kib_per_second.saturating_mul(1024))
            .ok()
            .or(Some(u32::MAX))
            .and_then(NonZeroU32::new)
            .filter(|_| kib_per_second > 0)
            .map(|bytes_per_second| {
                let burst = NonZeroU32::new(BURST).expect("a non-zero burst");
                let quota = Quota::per_second(bytes_per_second).allow_burst(burst);
                (kib_per_second, Arc::new(RateLimiter::direct(quota)))
            });
        true
    }

    fn limited(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Waits until `bytes` may pass.
    async fn take(&self, mut bytes: usize) {
        let limiter = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, limiter)| limiter.clone());
        let Some(limiter) = limiter else { return };
        // An async lock: a waiter holds no thread, only its place in the line.
        let _turn = self.queue.lock().await;
        while bytes > 0 {
            let now = bytes.min(BURST as usize);
            bytes -= now;
            let cells = NonZeroU32::new(now as u32).expect("a non-zero chunk");
            // Never more than the burst, so never refused for capacity.
            let _ = limiter.until_n_ready(cells).await;
        }
    }
}

/// A send and a receive limit.
#[derive(Debug, Default)]
struct Pair {
    send: Bucket,
    receive: Bucket,
}

impl Pair {
    fn set(&self, send: u64, receive: u64) -> bool {
        // Both, whatever the first says.
        let send_changed = self.send.set(send);
        self.receive.set(receive) || send_changed
    }
}

/// Every limit of this device.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    global: Pair,
    devices: Mutex<HashMap<DeviceId, Arc<Pair>>>,
    limit_lan: AtomicBool,
}

impl RateLimits {
    /// Takes the limits of `config` (at start and after each change).
    pub(crate) fn apply(&self, config: &Config) {
        let o = &config.options;
        if self.global.set(o.max_send_kbps, o.max_recv_kbps) {
            info!(
                send_kib_s = o.max_send_kbps,
                receive_kib_s = o.max_recv_kbps,
                "overall rate limits (0: none)"
            );
        }
        self.limit_lan
            .store(o.limit_bandwidth_in_lan, Ordering::Relaxed);
        for device in &config.devices {
            if self
                .device(device.id)
                .set(device.max_send_kbps, device.max_recv_kbps)
            {
                info!(
                    device = %device.id.short(),
                    send_kib_s = device.max_send_kbps,
                    receive_kib_s = device.max_recv_kbps,
                    "device rate limits (0: none)"
                );
            }
        }
    }

    fn device(&self, id: DeviceId) -> Arc<Pair> {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// `link` to `peer`, its streams held to the limits.
    pub(crate) fn throttle(self: &Arc<Self>, peer: DeviceId, link: Arc<dyn Link>) -> Arc<dyn Link> {
        let lan = link.path() == PathKind::Direct && on_lan(&link.remote_address());
        let throttle = Arc::new(Throttle {
            limits: self.clone(),
            device: self.device(peer),
            lan,
        });
        Arc::new(ThrottledLink {
            inner: link,
            throttle,
        })
    }
}

/// Whether a peer at `address` (`IP:PORT`) is on the LAN.
fn on_lan(address: &str) -> bool {
    address
        .parse::<SocketAddr>()
        .is_ok_and(|address| is_lan(address.ip()))
}

/// Whether `ip` is on the LAN: loopback, private (RFC 1918, IPv6 unique local) or
/// link-local.
pub fn is_lan(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
    }
}

/// The limits one link's streams keep to.
#[derive(Debug)]
pub(crate) struct Throttle {
    limits: Arc<RateLimits>,
    device: Arc<Pair>,
    lan: bool,
}

impl Throttle {
    fn exempt(&self) -> bool {
        self.lan && !self.limits.limit_lan.load(Ordering::Relaxed)
    }

    /// Whether a receive limit holds for the link now.
    fn receive_limited(&self) -> bool {
        !self.exempt() && (self.device.receive.limited() || self.limits.global.receive.limited())
    }

    /// Waits until `bytes` may be sent.
    pub(crate) async fn sending(&self, bytes: usize) {
        if !self.exempt() {
            self.device.send.take(bytes).await;
            self.limits.global.send.take(bytes).await;
        }
    }

    /// Waits until `bytes` received may be taken in.
    pub(crate) async fn received(&self, bytes: usize) {
        if !self.exempt() {
            self.device.receive.take(bytes).await;
            self.limits.global.receive.take(bytes).await;
        }
    }
}

/// A link whose streams keep to a [`Throttle`]; everything else is the inner link's.
struct ThrottledLink {
    inner: Arc<dyn Link>,
    throttle: Arc<Throttle>,
}

#[async_trait::async_trait]
impl Link for ThrottledLink {
    async fn open(&self) -> Result<FramedStream, LinkError> {
        let mut stream = self.inner.open().await?;
        stream.throttle(self.throttle.clone());
        Ok(stream)
    }

    async fn accept(&self) -> Result<FramedStream, LinkError> {
        let mut stream = self.inner.accept().await?;
        stream.throttle(self.throttle.clone());
        Ok(stream)
    }

    fn close(&self, reason: &Reason) {
        self.inner.close(reason);
    }

    fn close_reason(&self) -> Option<String> {
        self.inner.close_reason()
    }

    fn remote_address(&self) -> String {
        self.inner.remote_address()
    }

    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }

    fn id(&self) -> usize {
        self.inner.id()
    }

    fn path(&self) -> PathKind {
        self.inner.path()
    }

    async fn answers(&self, within: Duration) -> bool {
        self.inner.answers(within).await
    }

    fn receive_limited(&self) -> bool {
        self.throttle.receive_limited()
    }

    fn round_trip(&self) -> Duration {
        self.inner.round_trip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn lan_addresses() {
        for lan in [
            "127.0.0.1:1",
            "192.168.1.2:1",
            "10.0.0.1:1",
            "[fd00::1]:1",
            "[::1]:1",
        ] {
            assert!(on_lan(lan), "{lan}");
        }
        for far in ["203.0.113.5:1", "[2001:db8::1]:1", "relay://x:1", "garbage"] {
            assert!(!on_lan(far), "{far}");
        }
    }

    #[tokio::test]
    async fn a_bucket_holds_bytes_to_its_rate_and_follows_changes() {
        let bucket = Bucket::default();
        let started = Instant::now();
        bucket.take(50 << 20).await;
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "no limit, no wait"
        );
        assert!(bucket.set(1024));
        assert!(!bucket.set(1024), "the same rate changes nothing");
        let started = Instant::now();
        // The burst passes at once; 1.5 MiB more at 1 MiB/s take about 1.5 s.
        bucket.take(2 << 20).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1300) && took < Duration::from_millis(3000),
            "{took:?}"
        );
        assert!(bucket.set(0));
        let started = Instant::now();
        bucket.take(50 << 20).await;
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "limit lifted"
        );
    }
}
