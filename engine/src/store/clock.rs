//! A folder's row as a transaction that records entries uses it: the local sequence number
//! and this device's version counters (issue 10).
//!
//! - `issued`: the highest counter this device gave in the folder (to a change recorded
//!   here, an override, or a new version past forgotten history); peers' entries claiming
//!   more than `max(issued, now + allowance)` are refused (`model::own_counters`). Pulled
//!   versions do not raise it: their counters of this device passed that check already,
//!   and a ceiling that moves with the clock stays above them.
//! - `counter_floor`: no counter is given below it. A folder row is made when an index is
//!   made, also when one is rebuilt after the old one was lost; its floor is the second after
//!   that, and the first counters wait for the clock to reach it ([`Store::wait_for_floor`]):
//!   an index then never gives a counter in the second it was made, so one rebuilt in the
//!   same second as the last change of the index it replaces still outdates that change.
//!   (Giving the floor's value early instead would let two indexes made in the same second
//!   give the same counter to different contents.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Transaction, params};

use super::{FolderIdx, Store, StoreError};

/// The longest a new index waits for its floor. The floor is one second after the index was
/// made, so only a clock set back meanwhile makes the wait longer; past this, counters are
/// given from the floor at once.
const MAX_FLOOR_WAIT: Duration = Duration::from_secs(2);

/// The row, read at the start of a transaction and written back before it commits.
#[derive(Clone, Copy, Debug)]
pub(super) struct FolderClock {
    sequence: i64,
    issued: u64,
    floor: u64,
}

impl FolderClock {
    pub(super) fn read(tx: &Transaction<'_>, folder: FolderIdx) -> Result<Self, StoreError> {
        Ok(tx
            .prepare_cached("SELECT sequence, issued, counter_floor FROM folders WHERE idx = ?1")?
            .query_row([folder.0], |r| {
                Ok(Self {
                    sequence: r.get(0)?,
                    // Counters are u64 kept in SQLite's i64 bit for bit.
                    issued: r.get::<_, i64>(1)? as u64,
                    floor: r.get::<_, i64>(2)? as u64,
                })
            })?)
    }

    pub(super) fn write(&self, tx: &Transaction<'_>, folder: FolderIdx) -> Result<(), StoreError> {
        tx.prepare_cached("UPDATE folders SET sequence = ?1, issued = ?2 WHERE idx = ?3")?
            .execute(params![self.sequence, self.issued as i64, folder.0])?;
        Ok(())
    }

    /// The next local sequence number.
    pub(super) fn next_sequence(&mut self) -> i64 {
        self.sequence += 1;
        self.sequence
    }

    /// The time a counter given at `now` (Unix seconds) starts from.
    pub(super) fn counter_time(&self, now: u64) -> u64 {
        now.max(self.floor)
    }

    /// This device's counter `counter` is in a local entry now.
    pub(super) fn note_issued(&mut self, counter: u64) {
        self.issued = self.issued.max(counter);
    }

    /// The highest counter of this device recorded here.
    pub(super) fn issued(&self) -> u64 {
        self.issued
    }
}

impl Store {
    /// The current Unix time in seconds for giving counters in `folder`, once the clock has
    /// reached the folder's floor: at most about a second's wait, in the second a new index
    /// was made, and none afterwards.
    pub(super) fn wait_for_floor(&self, folder: FolderIdx) -> Result<u64, StoreError> {
        let floor: i64 = self
            .conn
            .prepare_cached("SELECT counter_floor FROM folders WHERE idx = ?1")?
            .query_row([folder.0], |r| r.get(0))?;
        let floor = UNIX_EPOCH + Duration::from_secs(floor as u64);
        if let Ok(early) = floor.duration_since(SystemTime::now()) {
            std::thread::sleep(early.min(MAX_FLOOR_WAIT));
        }
        Ok(unix_now())
    }
}

/// The current Unix time in seconds (0 for a clock before 1970).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
