//! This device's own version counters in what peers send (issue 10, DESIGN 5 and 4.8).
//!
//! A peer can only know a counter of this device that this device issued. Counters follow
//! the clock (`max(previous + 1, now)`, see `VersionVector::increment`), so one it issued is
//! at most the highest it recorded (`issued`) or, for an index rebuilt since (which forgot
//! what it issued before), at most about the time it was issued: now. An entry claiming more
//! is refused: taken, it would make this device's later changes to the name older than the
//! claim, and at `u64::MAX` it would leave no newer version to make at all.
//!
//! An index rebuilt from disk gives its entries counters without knowing what it issued
//! before. When a peer shows it holds, for a name, a counter of this device at least as high
//! as the rebuilt entry's while their contents differ, the rebuilt entry is content the peer
//! never saw, and it must outdate that claim: otherwise it loses to it, or looks equal to it.

use peerfold_protocol::ShortId;
use peerfold_protocol::version::Ordering;

use super::entry::FileEntry;

/// How far beyond the clock a counter of this device may be, in seconds, when this device
/// recorded none as high. A counter runs ahead of the clock only while one name changes
/// more than once a second, or after the clock was set back; an hour covers both (an NTP
/// step, a burst of edits) and lets no peer push a counter anywhere near the end of its
/// range (2^64 seconds is 5.8e11 years).
pub const CLOCK_SKEW_ALLOWANCE: u64 = 3600;

/// The highest counter of this device a peer's entry may claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterCeiling(u64);

/// Why a peer's entry was refused: it claims a counter this device never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "its version claims counter {claimed} for this device, which never issued one above \
     {ceiling}"
)]
pub struct UnissuedCounter {
    /// The counter the entry claims.
    pub claimed: u64,
    /// The highest this device could have issued.
    pub ceiling: u64,
}

impl CounterCeiling {
    /// The ceiling for a folder in which this device recorded counters up to `issued`, at
    /// `now` (Unix seconds).
    pub fn new(issued: u64, now: u64) -> Self {
        Self(issued.max(now.saturating_add(CLOCK_SKEW_ALLOWANCE)))
    }

    /// The highest counter allowed.
    pub fn value(self) -> u64 {
        self.0
    }

    /// Checks the counter `entry` claims for this device (`me`).
    pub fn check(self, entry: &FileEntry, me: ShortId) -> Result<(), UnissuedCounter> {
        let claimed = entry.version.counter(me);
        if claimed > self.0 {
            Err(UnissuedCounter {
                claimed,
                ceiling: self.0,
            })
        } else {
            Ok(())
        }
    }
}

/// When `remote` holds, for `local`'s name, a counter of this device (`me`) that `local`
/// does not outdate while their contents differ, returns that counter: `local`'s next
/// version must exceed it. In an index that was never lost this cannot happen (this
/// device's counter for a name only grows, and peers hold only what it sent), so it marks
/// an entry a rebuilt index recorded without knowing what it issued before.
///
/// Only entries this device made count: a pulled one is some peer's version, ordered by its
/// vector like any other. A revert's empty version has no counter of this device, and
/// invalid (ignored) entries are not synced.
pub fn forgotten_counter(local: &FileEntry, remote: &FileEntry, me: ShortId) -> Option<u64> {
    if local.modified_by != me || local.invalid || remote.invalid {
        return None;
    }
    let (mine, theirs) = (local.version.counter(me), remote.version.counter(me));
    if mine == 0 || same_content(local, remote) {
        return None;
    }
    let forgotten = theirs > mine
        // Equal vectors are one version: different contents under it were made twice.
        || (theirs == mine && local.version.compare(&remote.version) == Ordering::Equal);
    forgotten.then_some(theirs)
}

fn same_content(a: &FileEntry, b: &FileEntry) -> bool {
    a.deleted == b.deleted
        && (a.deleted
            || (a.kind == b.kind
                && a.size == b.size
                && a.symlink_target == b.symlink_target
                && a.blocks.len() == b.blocks.len()
                && a.blocks
                    .iter()
                    .zip(&b.blocks)
                    .all(|(x, y)| x.hash == y.hash)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entry::{FileKind, Timestamp};
    use peerfold_protocol::chunking::Block;
    use peerfold_protocol::version::VersionVector;

    const ME: ShortId = ShortId(1);
    const PEER: ShortId = ShortId(2);
    const NOW: u64 = 1_700_000_000;

    fn entry(version: &[(ShortId, u64)], by: ShortId, content: &[u8]) -> FileEntry {
        FileEntry {
            name: "f".into(),
            kind: FileKind::File,
            size: content.len() as u64,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            sequence: 1,
            version: version.iter().copied().collect::<VersionVector>(),
            modified_by: by,
            symlink_target: String::new(),
            blocks: vec![Block {
                offset: 0,
                size: content.len() as u32,
                hash: blake3::hash(content),
            }],
        }
    }

    #[test]
    fn a_counter_beyond_what_was_issued_and_the_clock_is_refused() {
        let fresh = CounterCeiling::new(0, NOW);
        assert_eq!(fresh.value(), NOW + CLOCK_SKEW_ALLOWANCE);
        let ok = |counter| fresh.check(&entry(&[(ME, counter)], PEER, b"x"), ME);
        // What a lost index issued before: at most the time it was issued.
        assert_eq!(ok(1), Ok(()));
        assert_eq!(ok(NOW), Ok(()));
        assert_eq!(ok(NOW + CLOCK_SKEW_ALLOWANCE), Ok(()));
        assert_eq!(
            ok(u64::MAX),
            Err(UnissuedCounter {
                claimed: u64::MAX,
                ceiling: NOW + CLOCK_SKEW_ALLOWANCE
            })
        );
        // Other devices' counters are theirs to set.
        assert_eq!(
            fresh.check(&entry(&[(PEER, u64::MAX)], PEER, b"x"), ME),
            Ok(())
        );
        // Counters this device recorded past the clock (a burst of edits) stay accepted.
        let ahead = CounterCeiling::new(NOW + 10 * CLOCK_SKEW_ALLOWANCE, NOW);
        assert!(
            ahead
                .check(
                    &entry(&[(ME, NOW + 10 * CLOCK_SKEW_ALLOWANCE)], PEER, b"x"),
                    ME
                )
                .is_ok()
        );
        assert!(
            CounterCeiling::new(0, u64::MAX)
                .check(&entry(&[(ME, u64::MAX)], PEER, b"x"), ME)
                .is_ok()
        );
    }

    #[test]
    fn a_rebuilt_entry_must_outdate_what_the_peer_holds_of_this_device() {
        let rebuilt = entry(&[(ME, NOW)], ME, b"written here while stopped");
        // The peer holds an older counter of this device: the rebuilt entry is newer already.
        let behind = entry(&[(ME, NOW - 60)], ME, b"before");
        assert_eq!(forgotten_counter(&rebuilt, &behind, ME), None);
        // The peer holds the same vector with other content, or a higher counter.
        let same_second = entry(&[(ME, NOW)], ME, b"before");
        assert_eq!(forgotten_counter(&rebuilt, &same_second, ME), Some(NOW));
        let ahead = entry(&[(ME, NOW + 3), (PEER, NOW - 5)], PEER, b"edited there");
        assert_eq!(forgotten_counter(&rebuilt, &ahead, ME), Some(NOW + 3));
        // Same content: nothing is lost whichever wins.
        let ahead_same = entry(&[(ME, NOW + 3)], ME, b"written here while stopped");
        assert_eq!(forgotten_counter(&rebuilt, &ahead_same, ME), None);
    }

    #[test]
    fn ordinary_histories_are_left_to_the_planner() {
        // The peer changed this device's version: its vector descends from ours.
        let mine = entry(&[(ME, NOW)], ME, b"mine");
        let theirs = entry(&[(ME, NOW), (PEER, NOW + 5)], PEER, b"theirs");
        assert_eq!(forgotten_counter(&mine, &theirs, ME), None);
        // A pulled entry is the peer's version.
        let pulled = entry(&[(ME, NOW - 9), (PEER, NOW)], PEER, b"pulled");
        let later = entry(&[(ME, NOW)], ME, b"other");
        assert_eq!(forgotten_counter(&pulled, &later, ME), None);
        // A reverted entry has no counter of this device.
        let reverted = entry(&[], ME, b"reverted");
        assert_eq!(forgotten_counter(&reverted, &later, ME), None);
        // Ignored names are not synced.
        let mut ignored = mine.clone();
        ignored.invalid = true;
        assert_eq!(
            forgotten_counter(&ignored, &entry(&[(ME, NOW + 1)], ME, b"x"), ME),
            None
        );
        // Two tombstones agree whatever their kinds and sizes.
        let mut gone = entry(&[(ME, NOW)], ME, b"");
        gone.deleted = true;
        let mut gone_there = entry(&[(ME, NOW + 1)], ME, b"old");
        gone_there.deleted = true;
        assert_eq!(forgotten_counter(&gone, &gone_there, ME), None);
    }
}
