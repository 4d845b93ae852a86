//! Version vectors: which device changed an entry how many times.
//!
//! Two versions of a file are ordered when one vector dominates the other; otherwise they are
//! concurrent and the file is in conflict.
//!
//! A device's counter advances like Syncthing's: to the current Unix time in seconds, or by
//! one when that is not more. Counters then say roughly when a change was made, a rebuilt
//! index (whose counters start from nothing) still outdates what it issued before, and no
//! run of changes can bring a counter near the end of its range by accident.

use crate::ShortId;
use crate::wire;

/// A version vector. Counters are kept sorted by device and never hold a zero value, so two
/// equal vectors have equal representations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    counters: Vec<(ShortId, u64)>,
}

/// A counter that cannot advance: it is at `u64::MAX`, so no newer version of the entry can
/// be made by that device. Only a peer that set it there can cause this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the version counter of device {device} is at the end of its range; no newer version can be made"
)]
pub struct CounterExhausted {
    /// The device whose counter it is.
    pub device: ShortId,
}

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// Both saw exactly the same changes.
    Equal,
    /// The left one saw every change of the right one, and more.
    Newer,
    /// The right one saw every change of the left one, and more.
    Older,
    /// Each saw changes the other did not: a conflict.
    Concurrent,
}

impl VersionVector {
    /// The empty vector: an entry no device has changed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one more change by `device` at `now` (Unix seconds): its counter becomes
    /// `max(previous + 1, now)`, and that value is returned. A counter already at `u64::MAX`
    /// cannot advance; the vector is then left as it was.
    pub fn increment(&mut self, device: ShortId, now: u64) -> Result<u64, CounterExhausted> {
        match self.counters.binary_search_by_key(&device, |&(id, _)| id) {
            Ok(i) => {
                let next = self.counters[i]
                    .1
                    .checked_add(1)
                    .ok_or(CounterExhausted { device })?
                    .max(now);
                self.counters[i].1 = next;
                Ok(next)
            }
            Err(i) => {
                let next = now.max(1);
                self.counters.insert(i, (device, next));
                Ok(next)
            }
        }
    }

    /// This vector with one more change by `device` at `now` (see [`Self::increment`]).
    pub fn incremented(mut self, device: ShortId, now: u64) -> Result<Self, CounterExhausted> {
        self.increment(device, now)?;
        Ok(self)
    }

    /// The counter of `device` (zero when it never changed the entry).
    pub fn counter(&self, device: ShortId) -> u64 {
        self.counters
            .binary_search_by_key(&device, |&(id, _)| id)
            .map_or(0, |i| self.counters[i].1)
    }

    /// The least vector that has seen every change of both.
    #[must_use]
    pub fn merge(&self, other: &Self) -> Self {
        let mut counters = Vec::with_capacity(self.counters.len().max(other.counters.len()));
        let (mut a, mut b) = (
            self.counters.iter().peekable(),
            other.counters.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (Some(x), Some(y)) if x.0 < y.0 => a.next(),
                (Some(x), Some(y)) if x.0 > y.0 => b.next(),
                (Some(x), Some(y)) => {
                    let value = x.1.max(y.1);
                    let id = x.0;
                    a.next();
                    b.next();
                    counters.push((id, value));
                    continue;
                }
            };
            if let Some(&counter) = next {
                counters.push(counter);
            }
        }
        Self { counters }
    }

    /// How this vector relates to `other`.
    pub fn compare(&self, other: &Self) -> Ordering {
        let (mut newer, mut older) = (false, false);
        let (mut a, mut b) = (
            self.counters.iter().peekable(),
            other.counters.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    newer = true;
                    a.next();
                }
                (None, Some(_)) => {
                    older = true;
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    newer = true;
                    a.next();
                }
                (Some(x), Some(y)) if x.0 > y.0 => {
                    older = true;
                    b.next();
                }
                (Some(x), Some(y)) => {
                    newer |= x.1 > y.1;
                    older |= x.1 < y.1;
                    a.next();
                    b.next();
                }
            }
        }
        match (newer, older) {
            (false, false) => Ordering::Equal,
            (true, false) => Ordering::Newer,
            (false, true) => Ordering::Older,
            (true, true) => Ordering::Concurrent,
        }
    }

    /// The (device, value) counters in device order.
    pub fn counters(&self) -> impl ExactSizeIterator<Item = (ShortId, u64)> + '_ {
        self.counters.iter().copied()
    }

    /// True when no device has changed the entry.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

impl FromIterator<(ShortId, u64)> for VersionVector {
    /// Builds a vector from counters in any order; zero values are dropped and a device named
    /// twice keeps its highest value, so any input yields a well-formed vector.
    fn from_iter<I: IntoIterator<Item = (ShortId, u64)>>(iter: I) -> Self {
        let mut counters: Vec<(ShortId, u64)> = iter.into_iter().filter(|c| c.1 > 0).collect();
        counters.sort_unstable();
        // After sorting, the last of each run of equal ids holds the highest value.
        counters.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = later.1;
                true
            } else {
                false
            }
        });
        Self { counters }
    }
}

impl From<&wire::Vector> for VersionVector {
    fn from(v: &wire::Vector) -> Self {
        v.counters
            .iter()
            .map(|c| (ShortId(c.id), c.value))
            .collect()
    }
}

impl From<&VersionVector> for wire::Vector {
    fn from(v: &VersionVector) -> Self {
        wire::Vector {
            counters: v
                .counters()
                .map(|(id, value)| wire::Counter { id: id.0, value })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: ShortId = ShortId(1);
    const B: ShortId = ShortId(2);
    /// A Unix time in seconds (November 2023).
    const NOW: u64 = 1_700_000_000;

    /// One more change by `device`, counted from one (a clock at zero).
    fn bump(v: VersionVector, device: ShortId) -> VersionVector {
        v.incremented(device, 0).unwrap()
    }

    fn vector() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..4, 0u64..4), 0..5).prop_map(|counters| {
            counters
                .into_iter()
                .map(|(id, v)| (ShortId(id), v))
                .collect()
        })
    }

    #[test]
    fn table_of_comparisons() {
        let empty = VersionVector::new();
        let a1 = bump(empty.clone(), A);
        let a2 = bump(a1.clone(), A);
        let a1b1 = bump(a1.clone(), B);
        let b1 = bump(empty.clone(), B);
        assert_eq!(empty.compare(&empty), Ordering::Equal);
        assert_eq!(a1.compare(&empty), Ordering::Newer);
        assert_eq!(empty.compare(&a1), Ordering::Older);
        assert_eq!(a2.compare(&a1), Ordering::Newer);
        assert_eq!(a1b1.compare(&a1), Ordering::Newer);
        assert_eq!(a1.compare(&b1), Ordering::Concurrent);
        assert_eq!(a2.compare(&a1b1), Ordering::Concurrent);
        assert_eq!(
            a2.merge(&a1b1).counters().collect::<Vec<_>>(),
            vec![(A, 2), (B, 1)]
        );
    }

    #[test]
    fn wire_form_is_normalised() {
        let wire = wire::Vector {
            counters: vec![
                wire::Counter { id: 9, value: 1 },
                wire::Counter { id: 3, value: 0 },
                wire::Counter { id: 9, value: 4 },
                wire::Counter { id: 2, value: 7 },
            ],
        };
        let v = VersionVector::from(&wire);
        assert_eq!(
            v.counters().collect::<Vec<_>>(),
            vec![(ShortId(2), 7), (ShortId(9), 4)]
        );
        assert_eq!(VersionVector::from(&wire::Vector::from(&v)), v);
    }

    #[test]
    fn counters_follow_the_clock_and_never_saturate() {
        let mut v = VersionVector::new();
        assert_eq!(v.increment(A, NOW), Ok(NOW));
        // Several changes within one second still advance by one each.
        assert_eq!(v.increment(A, NOW), Ok(NOW + 1));
        assert_eq!(v.increment(A, NOW - 100), Ok(NOW + 2));
        assert_eq!(v.increment(A, NOW + 50), Ok(NOW + 50));
        // A clock at zero (or before 1970) still counts from one.
        assert_eq!(VersionVector::new().increment(B, 0), Ok(1));
        let mut end: VersionVector = [(A, u64::MAX), (B, 3)].into_iter().collect();
        let before = end.clone();
        assert_eq!(end.increment(A, NOW), Err(CounterExhausted { device: A }));
        assert_eq!(end, before, "a failed increment changes nothing");
        assert_eq!(end.increment(B, NOW), Ok(NOW));
    }

    proptest! {
        #[test]
        fn compare_is_reflexive_and_antisymmetric(a in vector(), b in vector()) {
            prop_assert_eq!(a.compare(&a), Ordering::Equal);
            let expected = match a.compare(&b) {
                Ordering::Equal => Ordering::Equal,
                Ordering::Newer => Ordering::Older,
                Ordering::Older => Ordering::Newer,
                Ordering::Concurrent => Ordering::Concurrent,
            };
            prop_assert_eq!(b.compare(&a), expected);
            prop_assert_eq!(a.compare(&b) == Ordering::Equal, a == b);
        }

        #[test]
        fn merge_is_the_least_upper_bound(a in vector(), b in vector(), c in vector()) {
            let m = a.merge(&b);
            prop_assert!(matches!(m.compare(&a), Ordering::Newer | Ordering::Equal));
            prop_assert!(matches!(m.compare(&b), Ordering::Newer | Ordering::Equal));
            prop_assert_eq!(&m, &b.merge(&a));
            prop_assert_eq!(a.merge(&a), a.clone());
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            // Least: any vector above both is above the merge.
            if matches!(c.compare(&a), Ordering::Newer | Ordering::Equal)
                && matches!(c.compare(&b), Ordering::Newer | Ordering::Equal)
            {
                prop_assert!(matches!(c.compare(&m), Ordering::Newer | Ordering::Equal));
            }
        }

        #[test]
        fn increment_makes_strictly_newer(a in vector(), id in 0u64..6) {
            let next = bump(a.clone(), ShortId(id));
            prop_assert_eq!(next.compare(&a), Ordering::Newer);
            prop_assert_eq!(next.counter(ShortId(id)), a.counter(ShortId(id)) + 1);
        }

        #[test]
        fn increment_is_max_of_previous_plus_one_and_now(
            a in vector(),
            id in 0u64..6,
            previous in prop_oneof![0u64..4, (NOW - 10)..(NOW + 10), (u64::MAX - 3)..=u64::MAX],
            now in prop_oneof![Just(0u64), (NOW - 10)..(NOW + 10), (u64::MAX - 3)..=u64::MAX],
        ) {
            let device = ShortId(id);
            let start: VersionVector = a
                .counters()
                .filter(|&(d, _)| d != device)
                .chain([(device, previous)])
                .collect();
            let mut next = start.clone();
            match previous.checked_add(1) {
                Some(plus_one) => {
                    let expected = plus_one.max(now);
                    prop_assert_eq!(next.increment(device, now), Ok(expected));
                    prop_assert_eq!(next.counter(device), expected);
                    prop_assert_eq!(next.compare(&start), Ordering::Newer);
                    // Only this device's counter moved.
                    for (other, value) in start.counters().filter(|&(d, _)| d != device) {
                        prop_assert_eq!(next.counter(other), value);
                    }
                }
                None => {
                    prop_assert_eq!(next.increment(device, now), Err(CounterExhausted { device }));
                    prop_assert_eq!(&next, &start);
                }
            }
        }

        #[test]
        fn a_run_of_increments_stays_strictly_increasing(
            clock in proptest::collection::vec((NOW - 5)..(NOW + 5), 1..40),
        ) {
            let mut v = VersionVector::new();
            let mut last = 0;
            for now in clock {
                let next = v.increment(A, now).unwrap();
                prop_assert!(next > last && next >= now);
                last = next;
            }
        }

        #[test]
        fn concurrent_edits_stay_concurrent_until_merged(a in vector(), now in 0u64..(NOW * 2)) {
            let left = a.clone().incremented(A, now).unwrap();
            let right = a.clone().incremented(B, now).unwrap();
            prop_assert_eq!(left.compare(&right), Ordering::Concurrent);
            let resolved = left.merge(&right).incremented(A, now).unwrap();
            prop_assert_eq!(resolved.compare(&left), Ordering::Newer);
            prop_assert_eq!(resolved.compare(&right), Ordering::Newer);
        }

        #[test]
        fn wire_round_trip(a in vector()) {
            prop_assert_eq!(VersionVector::from(&wire::Vector::from(&a)), a);
        }
    }
}
