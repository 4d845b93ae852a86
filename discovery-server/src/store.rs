//! Where announcements are kept, behind one small [`Store`] trait so the HTTP layer does not
//! care whether one server keeps them in SQLite or several share them through Redis.
//!
//! The rules are the same for every store and live here as pure functions of `now`
//! ([`Record::merge`], [`Record::live`]): an announce sets each announced address's expiry to
//! now + [`ADDRESS_LIFETIME`], keeps the other unexpired ones (the later expiry wins), and
//! sets `seen`; a record not seen for [`RECORD_LIFETIME`] is gone.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use peerfold_protocol::DeviceId;
use serde::{Deserialize, Serialize};

pub mod redis;
pub mod sqlite;

pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;

/// How long an announced address is handed out (stdiscosrv's `addressExpiryTime`).
pub const ADDRESS_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);
/// How long a record is kept after the device's last announce.
pub const RECORD_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Keeps announcements. Every method takes `now` from the server's clock, never the system's,
/// so expiry is testable; implementations must be cheap to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Records that `device` announced `addresses` (already fixed up, non-empty) at `now`.
    async fn announce(
        &self,
        device: DeviceId,
        addresses: &[String],
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// The device's record as of `now`, with only its unexpired addresses (possibly none:
    /// the device was seen, but its addresses expired). `None` if unknown or not seen for
    /// [`RECORD_LIFETIME`].
    async fn lookup(&self, device: DeviceId, now: SystemTime)
    -> Result<Option<Record>, StoreError>;

    /// Drops records not seen for [`RECORD_LIFETIME`] and expired addresses; returns how
    /// many records were dropped.
    async fn sweep(&self, now: SystemTime) -> Result<u64, StoreError>;

    /// How many devices are kept (for the metrics).
    async fn devices(&self) -> Result<u64, StoreError>;

    /// Writes out whatever is still buffered; the store refuses writes afterwards.
    async fn close(&self) -> Result<(), StoreError>;
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// A stored value could not be read back.
    #[error("corrupt record for {device}: {reason}")]
    Corrupt {
        /// Whose record.
        device: String,
        /// What was wrong.
        reason: String,
    },
    /// The operating system refused something (e.g. starting the writer thread).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The Redis server failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What is known about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it last announced, in milliseconds since the Unix epoch.
    pub seen: u64,
    /// Its addresses, sorted by address, each with its expiry.
    pub addresses: Vec<Address>,
}

/// One announced address and when it stops being handed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The URL, e.g. `quic://192.0.2.1:22000`.
    pub address: String,
    /// Expiry in milliseconds since the Unix epoch.
    pub expires: u64,
}

impl Record {
    /// The record after `addresses` were announced at `now` on top of `existing`: expired
    /// addresses go, announced ones expire at now + [`ADDRESS_LIFETIME`] (or later, if they
    /// already did), the rest keep theirs.
    pub fn merge(existing: Option<Self>, addresses: &[String], now: SystemTime) -> Self {
        let now_ms = unix_ms(now);
        let expires = unix_ms(now + ADDRESS_LIFETIME);
        let mut merged: Vec<Address> = existing
            .map(|record| record.addresses)
            .unwrap_or_default()
            .into_iter()
            .filter(|address| address.expires > now_ms)
            .collect();
        for address in addresses {
            match merged.iter_mut().find(|known| &known.address == address) {
                Some(known) => known.expires = known.expires.max(expires),
                None => merged.push(Address {
                    address: address.clone(),
                    expires,
                }),
            }
        }
        merged.sort_by(|a, b| a.address.cmp(&b.address));
        Self {
            seen: now_ms,
            addresses: merged,
        }
    }

    /// This record as of `now`: `None` when it is too old to keep, else with only the
    /// unexpired addresses.
    pub fn live(mut self, now: SystemTime) -> Option<Self> {
        let now_ms = unix_ms(now);
        if self.is_stale(now) {
            return None;
        }
        self.addresses.retain(|address| address.expires > now_ms);
        Some(self)
    }

    /// Whether the device has not announced for [`RECORD_LIFETIME`].
    pub fn is_stale(&self, now: SystemTime) -> bool {
        self.seen.saturating_add(millis(RECORD_LIFETIME)) <= unix_ms(now)
    }

    /// The address URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.addresses.iter().map(|a| a.address.clone()).collect()
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn announces_merge_keeping_the_later_expiry_and_dropping_expired_addresses() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let first = Record::merge(None, &strings(&["quic://b:1", "quic://a:1"]), t0);
        assert_eq!(first.urls(), strings(&["quic://a:1", "quic://b:1"]));
        assert_eq!(first.seen, unix_ms(t0));

        // An hour later only `a` is announced again: `b` keeps its first expiry.
        let t1 = t0 + Duration::from_secs(3600);
        let second = Record::merge(Some(first), &strings(&["quic://a:1"]), t1);
        assert_eq!(second.addresses[0].expires, unix_ms(t1 + ADDRESS_LIFETIME));
        assert_eq!(second.addresses[1].expires, unix_ms(t0 + ADDRESS_LIFETIME));

        // Past b's expiry it is no longer handed out, and the next merge drops it.
        let t2 = t0 + ADDRESS_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            second.clone().live(t2).unwrap().urls(),
            strings(&["quic://a:1"])
        );
        let third = Record::merge(Some(second), &strings(&["quic://c:1"]), t2);
        assert_eq!(third.urls(), strings(&["quic://a:1", "quic://c:1"]));

        // Seen long ago: the record itself is gone.
        assert!(third.clone().live(t2 + RECORD_LIFETIME).is_none());
        assert!(
            third
                .clone()
                .live(t2 + Duration::from_secs(3 * 3600))
                .is_some()
        );
        assert!(
            third
                .live(t2 + Duration::from_secs(3 * 3600))
                .unwrap()
                .addresses
                .is_empty()
        );
    }
}
