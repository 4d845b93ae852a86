//! The relay's counters for `/status`: gauges of what is open now, the bytes proxied, and
//! samples of that byte count for the 10 s ... 60 min rates.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How often the byte count is sampled; the shortest rate window.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The rate windows of `kbps10s1m5m15m30m60m`, in seconds.
const WINDOWS: [u64; 6] = [10, 60, 300, 900, 1800, 3600];

/// A count of things open now; [`Gauge::enter`] counts one until its guard drops, so every
/// way out of a task (errors, cancellation) uncounts it.
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicUsize);

impl Gauge {
    pub(crate) fn enter(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One counted thing; uncounted on drop.
#[derive(Debug)]
pub(crate) struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything `/status` counts.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: Instant,
    pub(crate) started_at: jiff::Timestamp,
    /// Protocol-mode (TLS) connections open.
    pub(crate) connections: Gauge,
    /// Sessions proxying bytes.
    pub(crate) active_sessions: Gauge,
    /// Proxied TCP connections (two per active session).
    pub(crate) proxies: Gauge,
    bytes_proxied: AtomicU64,
    /// (when, bytes proxied by then), oldest first, one hour's worth.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            started_at: jiff::Timestamp::now(),
            connections: Gauge::default(),
            active_sessions: Gauge::default(),
            proxies: Gauge::default(),
            bytes_proxied: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::from([(now, 0)])),
        }
    }

    pub(crate) fn proxied(&self, bytes: usize) {
        self.bytes_proxied
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn bytes_proxied(&self) -> u64 {
        self.bytes_proxied.load(Ordering::Relaxed)
    }

    /// Records the byte count now (called every [`SAMPLE_EVERY`]).
    pub(crate) fn sample(&self, now: Instant) {
        let bytes = self.bytes_proxied();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back((now, bytes));
        let keep = (WINDOWS[5] / SAMPLE_EVERY.as_secs()) as usize + 1;
        while samples.len() > keep {
            samples.pop_front();
        }
    }

    /// Kilobits a second over the last 10 s, 1, 5, 15, 30 and 60 min. A window longer than
    /// the relay has run is measured over the time it has run.
    pub(crate) fn kbps(&self, now: Instant) -> [u64; 6] {
        let bytes = self.bytes_proxied();
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        WINDOWS.map(|window| {
            let since = now.checked_sub(Duration::from_secs(window));
            // The oldest sample inside the window, else the oldest there is.
            let (at, then) = samples
                .iter()
                .find(|(at, _)| since.is_none_or(|since| *at >= since))
                .or(samples.front())
                .copied()
                .unwrap_or((self.started, 0));
            let seconds = now.saturating_duration_since(at).as_secs_f64();
            if seconds < 1.0 {
                return 0;
            }
            ((bytes - then) as f64 * 8.0 / 1000.0 / seconds) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_samples_in_each_window() {
        let stats = Stats::new();
        let start = stats.started;
        {
            let _one = stats.connections.enter();
            let _two = stats.connections.enter();
            assert_eq!(stats.connections.get(), 2);
        }
        assert_eq!(stats.connections.get(), 0);
        // 125 kB every 10 s for 10 minutes = 100 kbit/s; nothing in the last 10 s.
        for tick in 1..=60 {
            stats.proxied(125_000);
            stats.sample(start + SAMPLE_EVERY * tick);
        }
        let now = start + SAMPLE_EVERY * 61;
        let kbps = stats.kbps(now);
        assert_eq!(kbps[0], 0);
        assert_eq!(kbps[1], 83); // 5 of the last 6 intervals moved bytes
        assert_eq!(kbps[2], 96);
        // The longer windows span the whole run: 60 intervals in 610 s.
        assert_eq!(kbps[5], 98);
    }
}
