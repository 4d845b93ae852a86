//! Abuse limits that need state: the per-IP token bucket behind 429, and the adaptive
//! `Retry-After` on 404 that slows down clients hammering for devices that are not there.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept at most; past this, full (idle) buckets are dropped first, and if that is not
/// enough, every bucket is: a flood of distinct IPs then costs memory, not correctness.
const MAX_BUCKETS: usize = 100_000;

/// A token bucket per client IP (per /64 for IPv6, which a client gets as a whole).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `rate` tokens a second, up to `burst` saved.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`, or says how long until one is there.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = bucket_key(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            self.prune_locked(&mut buckets, now);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Forgets clients whose bucket has filled up again (they have been quiet a while).
    pub(crate) fn prune(&self, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        self.prune_locked(&mut buckets, now);
    }

    fn prune_locked(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            self.refill(bucket, now);
            bucket.tokens < self.burst
        });
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
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

/// The not-found `Retry-After`, after stdiscosrv's `retryAfterTracker`: the delay grows while
/// 404s come faster than the desired rate and shrinks while they come slower, within
/// [`MIN_RETRY`, `MAX_RETRY`]. One tracker for devices never seen, one for devices seen before.
#[derive(Debug)]
pub(crate) struct NotFoundTracker {
    desired_rate: f64,
    state: Mutex<TrackerState>,
}

#[derive(Debug)]
struct TrackerState {
    delay: f64,
    bucket_start: Instant,
    count: u64,
}

const MIN_RETRY: f64 = 60.0;
const MAX_RETRY: f64 = 3600.0;

impl NotFoundTracker {
    pub(crate) fn new(desired_rate: f64, now: Instant) -> Self {
        Self {
            desired_rate,
            state: Mutex::new(TrackerState {
                delay: MIN_RETRY,
                bucket_start: now,
                count: 0,
            }),
        }
    }

    /// Counts one 404 and returns the seconds to put in its `Retry-After`: the current delay,
    /// jittered by ±25 % so clients told at once do not come back at once, never under 60 s.
    pub(crate) fn retry_after(&self, now: Instant) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now
            .saturating_duration_since(state.bucket_start)
            .as_secs_f64();
        if elapsed >= state.delay {
            let rate = state.count as f64 / elapsed;
            if rate > self.desired_rate * 1.25 {
                state.delay *= 1.5;
            } else if rate < self.desired_rate * 0.75 {
                state.delay *= 0.8;
            }
            state.delay = state.delay.clamp(MIN_RETRY, MAX_RETRY);
            state.bucket_start = now;
            state.count = 0;
        }
        state.count += 1;
        let jittered = state.delay * rand::random_range(0.75..1.25);
        jittered.clamp(MIN_RETRY, MAX_RETRY) as u64
    }
}

/// `Retry-After` for 400, 403 and 500: 25 to 30 minutes, as stdiscosrv.
pub(crate) fn error_retry_after() -> u64 {
    1500 + rand::random_range(0..300)
}

/// `Reannounce-After` on success: 55 to 60 minutes, as stdiscosrv.
pub(crate) fn reannounce_after() -> u64 {
    3300 + rand::random_range(0..300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate_and_are_per_ip() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            limiter.check(a, start).unwrap();
        }
        let wait = limiter.check(a, start).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        limiter.check(b, start).unwrap();
        limiter
            .check(a, start + Duration::from_millis(500))
            .unwrap();
        assert!(
            limiter
                .check(a, start + Duration::from_millis(500))
                .is_err()
        );
        // Addresses in one IPv6 /64 share a bucket.
        let limiter = RateLimiter::new(1.0, 1);
        limiter
            .check("2001:db8::1".parse().unwrap(), start)
            .unwrap();
        assert!(
            limiter
                .check("2001:db8::2".parse().unwrap(), start)
                .is_err()
        );
        limiter
            .check("2001:db8:0:1::1".parse().unwrap(), start)
            .unwrap();
        // Full buckets are forgotten.
        limiter.prune(start + Duration::from_secs(10));
        assert!(limiter.buckets.lock().unwrap().is_empty());
    }

    #[test]
    fn not_found_delay_adapts_within_bounds() {
        let start = Instant::now();
        let tracker = NotFoundTracker::new(1.0, start);
        let first = tracker.retry_after(start);
        assert!((60..=75).contains(&first), "{first}");
        // Far more than one 404 a second: the delay grows, bucket by bucket, up to an hour.
        let mut now = start;
        for _ in 0..40 {
            for _ in 0..10_000 {
                tracker.retry_after(now);
            }
            now += Duration::from_secs(4000);
        }
        let busy = tracker.retry_after(now);
        assert!((2700..=3600).contains(&busy), "{busy}");
        // Quiet again: it shrinks back to the floor.
        for _ in 0..40 {
            now += Duration::from_secs(4000);
            tracker.retry_after(now);
        }
        let quiet = tracker.retry_after(now);
        assert!((60..=75).contains(&quiet), "{quiet}");
        assert!((1500..1800).contains(&error_retry_after()));
        assert!((3300..3600).contains(&reannounce_after()));
    }
}
