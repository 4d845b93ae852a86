//! When a folder's counts may have changed, and this device's summary of a large folder
//! kept between walks. Counting walks the whole index: 200,000 names took about a second
//! in the debug build, and `/rest/db/status` walked on every call (1,000,000 names: up to
//! 5.4 s per answer while a peer sent its index). A folder whose last walk cost more than
//! [`COSTLY_WALK`] answers from the kept summary instead, and a summary outdated by a
//! change (or older than [`MAX_AGE`]) asks the summary task for a new walk, which that task
//! spaces out (`summary_loop`).
//!
//! Who wakes me: whatever changes counts (`notify_one`: scans, index batches, pull rounds).
//! Whom I wake: the summary task.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::handle::lock;
use crate::model::counts::FolderSummary;

/// A walk that took longer than this is not repeated for every caller: 50 ms is about
/// 10,000 names in the debug build, a few times more in a release build.
pub(crate) const COSTLY_WALK: Duration = Duration::from_millis(50);
/// Entries from peers since the last walk past which the next walk is taken to be costly
/// too: a peer's frame can bring 80,000 names at once, and the first walk over them would
/// otherwise run inline (it took up to a second in the debug build).
pub(crate) const COSTLY_ARRIVALS: u64 = 10_000;
/// A kept summary older than this asks for a new walk even when no change was announced
/// (a change made beside the daemon, say by `peerfold scan`).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(10);

/// The "counts may have changed" signal, numbered, with the last summary of this device.
#[derive(Debug, Default)]
pub(crate) struct CountsChanged {
    notify: Notify,
    /// Bumped by every announced change.
    generation: AtomicU64,
    /// Entries that arrived from peers, in all.
    arrived: AtomicU64,
    kept: Mutex<Option<Kept>>,
}

#[derive(Debug)]
struct Kept {
    summary: FolderSummary,
    /// The generation when its walk started: a change after that outdates it.
    generation: u64,
    /// `arrived` when its walk started.
    arrived: u64,
    at: Instant,
    cost: Duration,
}

impl CountsChanged {
    /// Counts may have changed: outdates the kept summary and wakes the summary task.
    pub(crate) fn notify_one(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// A peer's batch of `entries` is about to be stored (called before the write, so a
    /// walk that could see them knows it is costly): a large enough arrival makes the next
    /// walk costly. [`CountsChanged::notify_one`] follows once it is stored.
    pub(crate) fn entries_arriving(&self, entries: usize) {
        self.arrived.fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// Waits for the next change (the summary task).
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// What a walk starting now sees: the generation, and the entries arrived.
    pub(crate) fn generation(&self) -> (u64, u64) {
        (
            self.generation.load(Ordering::Relaxed),
            self.arrived.load(Ordering::Relaxed),
        )
    }

    /// Keeps the summary of a walk that started at `(generation, arrived)` and took `cost`.
    pub(crate) fn keep(
        &self,
        summary: FolderSummary,
        (generation, arrived): (u64, u64),
        cost: Duration,
    ) {
        let mut kept = lock(&self.kept);
        // A slower walk that started earlier must not replace a newer one.
        if kept.as_ref().is_some_and(|k| k.generation > generation) {
            return;
        }
        *kept = Some(Kept {
            summary,
            generation,
            arrived,
            at: Instant::now(),
            cost,
        });
    }

    /// The kept summary, when walking again would be costly; an outdated one wakes the
    /// summary task for a new walk. `None`: walk (the folder is small, or never walked).
    pub(crate) fn kept_if_costly(&self) -> Option<FolderSummary> {
        let kept = lock(&self.kept);
        let (generation, arrived) = self.generation();
        let kept = kept.as_ref().filter(|k| {
            k.cost >= COSTLY_WALK || arrived.saturating_sub(k.arrived) > COSTLY_ARRIVALS
        })?;
        if kept.generation != generation || kept.at.elapsed() > MAX_AGE {
            // No new generation: the kept summary stays outdated until that walk.
            self.notify.notify_one();
        }
        Some(kept.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_costly_walk_is_kept_for_callers_and_a_change_asks_for_a_new_one() {
        let counts = CountsChanged::default();
        assert!(counts.kept_if_costly().is_none(), "never walked");
        counts.keep(
            FolderSummary::default(),
            counts.generation(),
            COSTLY_WALK / 2,
        );
        assert!(
            counts.kept_if_costly().is_none(),
            "a cheap walk is repeated"
        );
        let started = counts.generation();
        counts.keep(FolderSummary::default(), started, COSTLY_WALK * 20);
        assert!(counts.kept_if_costly().is_some());
        counts.notify_one();
        // Outdated: still answered, and the summary task is woken (a stored permit).
        assert!(counts.kept_if_costly().is_some());
        assert!(
            futures_ready(counts.notified()),
            "the summary task was not woken"
        );
        // A walk that started before a newer kept one does not replace it.
        counts.keep(
            FolderSummary::default(),
            counts.generation(),
            COSTLY_WALK * 20,
        );
        counts.keep(FolderSummary::default(), started, COSTLY_WALK / 2);
        assert!(counts.kept_if_costly().is_some());
    }

    #[test]
    fn a_large_arrival_makes_the_next_walk_costly() {
        let counts = CountsChanged::default();
        counts.keep(
            FolderSummary::default(),
            counts.generation(),
            Duration::ZERO,
        );
        counts.entries_arriving(100);
        assert!(counts.kept_if_costly().is_none(), "a small batch: walk");
        counts.entries_arriving(COSTLY_ARRIVALS as usize);
        assert!(
            counts.kept_if_costly().is_some(),
            "80,000 names: answer from the kept one"
        );
        counts.keep(
            FolderSummary::default(),
            counts.generation(),
            Duration::ZERO,
        );
        assert!(
            counts.kept_if_costly().is_none(),
            "walked since, and it was cheap"
        );
    }

    /// Whether `notified` completes at once (a permit was stored).
    fn futures_ready(notified: Notified<'_>) -> bool {
        let mut notified = std::pin::pin!(notified);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        notified.as_mut().poll(&mut cx).is_ready()
    }
}
