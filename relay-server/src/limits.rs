//! Token buckets: the per-IP limit on `ConnectRequest`s (each one makes the relay push an
//! invitation to someone else, so a flood from one address is a flood at its target), and
//! the byte-rate limits of `--per-session-rate` and `--global-rate`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Per-IP buckets kept at most; past this, full (idle) buckets are dropped first, and if that
/// is not enough, all of them: a flood of distinct addresses then costs memory, not
/// correctness.
const MAX_BUCKETS: usize = 100_000;

/// `rate` tokens a second, at most `burst` saved. The count may go below zero (a debt), which
/// is what lets a byte bucket hand out a whole read buffer and make the reader wait for it
/// afterwards, whatever the buffer size.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
    }
}

/// A token bucket per client IP (per /64 for IPv6, which a client gets as a whole).
#[derive(Debug)]
pub(crate) struct PerIpLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl PerIpLimiter {
    /// `rate` requests a second on average, `burst` at once.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`; false when it has none left.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let key = bucket_key(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, bucket| {
                bucket.refill(self.rate, self.burst, now);
                bucket.tokens < self.burst
            });
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(self.burst, now));
        bucket.refill(self.rate, self.burst, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// A bytes-per-second limit with a burst of twice the rate (strelaysrv's choice).
#[derive(Debug)]
pub(crate) struct ByteRate {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

impl ByteRate {
    /// `None` for a rate of 0, which means unlimited.
    pub(crate) fn new(bytes_per_second: u64) -> Option<Self> {
        if bytes_per_second == 0 {
            return None;
        }
        let rate = bytes_per_second as f64;
        Some(Self {
            rate,
            burst: 2.0 * rate,
            bucket: Mutex::new(Bucket::full(2.0 * rate, Instant::now())),
        })
    }

    /// Takes `bytes` tokens (going into debt if need be) and says how long to wait before
    /// passing them on, so the long-run rate stays at the limit.
    pub(crate) fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.refill(self.rate, self.burst, now);
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_buckets_allow_a_burst_then_the_rate() {
        let limiter = PerIpLimiter::new(2.0, 3.0);
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.allow(a, start));
        }
        assert!(!limiter.allow(a, start));
        assert!(limiter.allow(b, start));
        assert!(limiter.allow(a, start + Duration::from_millis(500)));
        assert!(!limiter.allow(a, start + Duration::from_millis(500)));
        // One IPv6 /64 is one client.
        let limiter = PerIpLimiter::new(1.0, 1.0);
        assert!(limiter.allow("2001:db8::1".parse().unwrap(), start));
        assert!(!limiter.allow("2001:db8::2".parse().unwrap(), start));
        assert!(limiter.allow("2001:db8:0:1::1".parse().unwrap(), start));
    }

    #[test]
    fn byte_rates_burst_twice_the_rate_then_make_readers_wait() {
        assert!(ByteRate::new(0).is_none());
        let limit = ByteRate::new(1000).unwrap();
        let start = Instant::now();
        assert_eq!(limit.reserve(2000, start), Duration::ZERO);
        // The bucket is empty: 500 more bytes cost half a second.
        let wait = limit.reserve(500, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // A second later the debt is paid and 500 bytes are saved again.
        assert_eq!(
            limit.reserve(500, start + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
