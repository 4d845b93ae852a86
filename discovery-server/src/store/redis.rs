//! A store in Redis, so several stateless servers (say, one per address family or region
//! behind one name) share one state.
//!
//! Layout, under the prefix `peerfold-discovery:`:
//! - `device:<ID>`: a hash with `seen` (Unix ms) and one field `a:<address>` per address whose
//!   value is its expiry (Unix ms). One field per address lets two servers take announces of
//!   one device at once (over IPv4 on one, IPv6 on the other) without losing either. The key
//!   expires [`RECORD_LIFETIME`] after the last announce.
//! - `seen`: a sorted set of device IDs scored by `seen`, for the device count and the sweep.
//!
//! Expiry follows the server's injected clock: reads filter by the expiry timestamps stored in
//! the values, and drop what has expired. Redis's own TTL on the key is only the backstop for
//! records no server looks at any more (Redis 7.0 has no per-field TTLs). An address announced
//! again expires at the newer time; between servers whose clocks disagree the last writer wins.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use peerfold_protocol::DeviceId;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ADDRESS_LIFETIME, Address, RECORD_LIFETIME, Record, Store, StoreError, unix_ms};

const PREFIX: &str = "peerfold-discovery:";
const SEEN_FIELD: &str = "seen";
const ADDRESS_FIELD: &str = "a:";

/// Deletes a device's hash and its `seen` entry if it was not seen after ARGV[1], atomically,
/// so a sweep on one server never drops a record another server just refreshed.
const SWEEP_ONE: &str = r"
local seen = redis.call('HGET', KEYS[1], 'seen')
if (not seen) or tonumber(seen) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// Records in a Redis server.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    url: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://HOST:PORT[/DB]`); fails if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        // A request waits at most this long for Redis; a dead Redis then means 500 replies
        // (with Retry-After) rather than hanging clients, and a failed start fails fast.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        tracing::info!(url, "connected to the Redis store");
        Ok(Self {
            conn,
            url: url.to_owned(),
        })
    }

    async fn read(&self, device: DeviceId) -> Result<Option<Record>, StoreError> {
        let fields: HashMap<String, String> = self.conn.clone().hgetall(device_key(device)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse(device, &fields).map(Some)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn announce(
        &self,
        device: DeviceId,
        addresses: &[String],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let key = device_key(device);
        let now_ms = unix_ms(now);
        let expires = unix_ms(now + ADDRESS_LIFETIME).to_string();
        let expired: Vec<String> = match self.read(device).await? {
            Some(record) => record
                .addresses
                .into_iter()
                .filter(|a| a.expires <= now_ms && !addresses.contains(&a.address))
                .map(|a| format!("{ADDRESS_FIELD}{}", a.address))
                .collect(),
            None => Vec::new(),
        };
        let mut fields: Vec<(String, String)> = addresses
            .iter()
            .map(|a| (format!("{ADDRESS_FIELD}{a}"), expires.clone()))
            .collect();
        fields.push((SEEN_FIELD.to_owned(), now_ms.to_string()));
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !expired.is_empty() {
            pipe.hdel(&key, &expired).ignore();
        }
        pipe.hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, ttl_ms())
            .ignore()
            .zadd(seen_key(), device.to_string(), now_ms)
            .ignore();
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn lookup(
        &self,
        device: DeviceId,
        now: SystemTime,
    ) -> Result<Option<Record>, StoreError> {
        let Some(record) = self.read(device).await? else {
            return Ok(None);
        };
        let now_ms = unix_ms(now);
        let expired: Vec<String> = record
            .addresses
            .iter()
            .filter(|a| a.expires <= now_ms)
            .map(|a| format!("{ADDRESS_FIELD}{}", a.address))
            .collect();
        if !expired.is_empty() && !record.is_stale(now) {
            // Best effort: the next reader filters them again if this fails.
            let result: Result<usize, _> =
                self.conn.clone().hdel(device_key(device), &expired).await;
            if let Err(error) = result {
                tracing::debug!(%error, "pruning expired addresses failed");
            }
        }
        Ok(record.live(now))
    }

    async fn sweep(&self, now: SystemTime) -> Result<u64, StoreError> {
        let cutoff = unix_ms(now).saturating_sub(ttl_ms().unsigned_abs());
        let mut conn = self.conn.clone();
        let stale: Vec<String> = conn.zrangebyscore(seen_key(), "-inf", cutoff).await?;
        let mut dropped = 0;
        for id in stale {
            let removed: u64 = redis::cmd("EVAL")
                .arg(SWEEP_ONE)
                .arg(2)
                .arg(format!("{PREFIX}device:{id}"))
                .arg(seen_key())
                .arg(cutoff)
                .arg(&id)
                .query_async(&mut conn)
                .await?;
            dropped += removed;
        }
        Ok(dropped)
    }

    async fn devices(&self) -> Result<u64, StoreError> {
        Ok(self.conn.clone().zcard(seen_key()).await?)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every write is already in Redis.
        Ok(())
    }
}

fn device_key(device: DeviceId) -> String {
    format!("{PREFIX}device:{device}")
}

fn seen_key() -> String {
    format!("{PREFIX}seen")
}

fn ttl_ms() -> i64 {
    i64::try_from(RECORD_LIFETIME.as_millis()).unwrap_or(i64::MAX)
}

fn parse(device: DeviceId, fields: &HashMap<String, String>) -> Result<Record, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        device: device.to_string(),
        reason,
    };
    let number = |value: &String| {
        value
            .parse::<u64>()
            .map_err(|_| corrupt(format!("{value:?} is not a timestamp")))
    };
    let seen = fields.get(SEEN_FIELD).map(number).transpose()?.unwrap_or(0);
    let mut addresses = fields
        .iter()
        .filter_map(|(field, value)| Some((field.strip_prefix(ADDRESS_FIELD)?, value)))
        .map(|(address, value)| {
            Ok(Address {
                address: address.to_owned(),
                expires: number(value)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    addresses.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(Record { seen, addresses })
}
