//! What a peer may be refused before it is disconnected. Two kinds of refusal:
//!
//! - A malformed request (an unknown or unshared folder, a bad name, size or hash, a frame
//!   that is no Request) is something no well-behaved peer sends: at most
//!   [`MAX_MALFORMED_REQUESTS`] per connection.
//! - A request for a block this device does not have (the file changed or went since the
//!   peer's index said otherwise) is ordinary when files change under a pull. A peerfold
//!   peer has at most 16 MiB of requests out with one device (`peers::flow`), so at most
//!   1,024 of the smallest blocks (16 KiB), each tried up to three times. These draw on an
//!   allowance of [`REFUSAL_ALLOWANCE`] that refills by one per block served and by
//!   [`REFUSALS_PER_SECOND`] over time; a peer that empties it is asking for what it knows
//!   is not here.

use std::time::Instant;

/// Malformed requests a peer may make per connection.
pub(super) const MAX_MALFORMED_REQUESTS: usize = 100;
/// Refusals a peer may have at once: more than an honest peer's whole window of requests,
/// all refused three times.
pub(super) const REFUSAL_ALLOWANCE: f64 = 4096.0;
/// How fast the allowance refills with time (it also refills by one per block served).
pub(super) const REFUSALS_PER_SECOND: f64 = 64.0;

/// One connection's refusals so far.
#[derive(Debug)]
pub(super) struct Refusals {
    malformed: usize,
    allowance: f64,
    updated: Instant,
}

/// Whether a peer may go on after a refusal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within bounds.
    Allowed,
    /// Over a bound: disconnect it, saying this.
    Disconnect(&'static str),
}

impl Refusals {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            malformed: 0,
            allowance: REFUSAL_ALLOWANCE,
            updated: now,
        }
    }

    /// Counts a malformed request.
    pub(super) fn malformed(&mut self) -> Verdict {
        self.malformed += 1;
        if self.malformed > MAX_MALFORMED_REQUESTS {
            Verdict::Disconnect("too many invalid block requests")
        } else {
            Verdict::Allowed
        }
    }

    /// Counts a request for a block this device does not have (any more).
    pub(super) fn refused(&mut self, now: Instant) -> Verdict {
        self.refill(now, 0.0);
        if self.allowance < 1.0 {
            return Verdict::Disconnect("too many refused block requests");
        }
        self.allowance -= 1.0;
        Verdict::Allowed
    }

    /// A block was served.
    pub(super) fn served(&mut self, now: Instant) {
        self.refill(now, 1.0);
    }

    fn refill(&mut self, now: Instant, extra: f64) {
        let seconds = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.allowance =
            (self.allowance + extra + seconds * REFUSALS_PER_SECOND).min(REFUSAL_ALLOWANCE);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn malformed_requests_have_a_hard_limit() {
        let mut refusals = Refusals::new(Instant::now());
        for _ in 0..MAX_MALFORMED_REQUESTS {
            assert_eq!(refusals.malformed(), Verdict::Allowed);
        }
        assert!(matches!(refusals.malformed(), Verdict::Disconnect(_)));
    }

    #[test]
    fn refusals_take_a_burst_and_refill_with_service_and_time() {
        let start = Instant::now();
        let mut refusals = Refusals::new(start);
        // Every request of several files that changed under a pull, all at once.
        for _ in 0..REFUSAL_ALLOWANCE as usize {
            assert_eq!(refusals.refused(start), Verdict::Allowed);
        }
        assert!(matches!(refusals.refused(start), Verdict::Disconnect(_)));
        // Blocks served make room, one each.
        refusals.served(start);
        assert_eq!(refusals.refused(start), Verdict::Allowed);
        assert!(matches!(refusals.refused(start), Verdict::Disconnect(_)));
        // So does time, slowly.
        let later = start + Duration::from_secs(1);
        for _ in 0..REFUSALS_PER_SECOND as usize {
            assert_eq!(refusals.refused(later), Verdict::Allowed);
        }
        assert!(matches!(refusals.refused(later), Verdict::Disconnect(_)));
        // Never past the allowance, however long the peer behaved.
        let much_later = later + Duration::from_secs(3600);
        refusals.served(much_later);
        for _ in 0..REFUSAL_ALLOWANCE as usize {
            assert_eq!(refusals.refused(much_later), Verdict::Allowed);
        }
        assert!(matches!(
            refusals.refused(much_later),
            Verdict::Disconnect(_)
        ));
    }
}
