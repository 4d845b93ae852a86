//! The daemon's event log, in Syncthing's shape: numbered events a client long-polls
//! (`GET /rest/events?since=N`). The newest `CAPACITY` are kept; a client that falls behind
//! sees a gap in the IDs, as with Syncthing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

/// Events kept for clients that poll.
const CAPACITY: usize = 1000;

/// One event as Syncthing's REST API shows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Event {
    pub(crate) id: u64,
    pub(crate) kind: &'static str,
    pub(crate) time: String,
    pub(crate) data: Value,
}

impl Event {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "globalID": self.id,
            "type": self.kind,
            "time": self.time,
            "data": self.data,
        })
    }
}

/// Appends events and wakes pollers.
#[derive(Debug)]
pub(crate) struct EventLog {
    events: Mutex<VecDeque<Event>>,
    /// The last event ID, for waiters.
    last: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            events: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            last: watch::Sender::new(0),
        }
    }
}

impl EventLog {
    /// Records an event of Syncthing type `kind`.
    pub(crate) fn emit(&self, kind: &'static str, data: Value) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let id = events.back().map_or(1, |e| e.id + 1);
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(Event {
            id,
            kind,
            time: jiff::Timestamp::now().to_string(),
            data,
        });
        drop(events);
        self.last.send_replace(id);
    }

    /// Events after `since` of the given kinds (all if empty), at most `limit` of the newest;
    /// waits up to `timeout` for the first one.
    pub(crate) async fn wait(
        &self,
        since: u64,
        kinds: &[String],
        limit: usize,
        timeout: Duration,
    ) -> Vec<Event> {
        let mut last = self.last.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.after(since, kinds, limit);
            if !found.is_empty() {
                return found;
            }
            let changed = tokio::time::timeout_at(deadline, last.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Vec::new();
            }
        }
    }

    fn after(&self, since: u64, kinds: &[String], limit: usize) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Event> = events
            .iter()
            .filter(|e| e.id > since)
            .filter(|e| kinds.is_empty() || kinds.iter().any(|k| k == e.kind))
            .cloned()
            .collect();
        if limit > 0 && found.len() > limit {
            found.drain(..found.len() - limit);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polling_returns_what_came_after_and_waits_for_more() {
        let log = std::sync::Arc::new(EventLog::default());
        log.emit("StartupComplete", json!({}));
        log.emit("StateChanged", json!({ "folder": "f" }));
        let all = log.wait(0, &[], 0, Duration::ZERO).await;
        assert_eq!(
            all.iter().map(|e| (e.id, e.kind)).collect::<Vec<_>>(),
            vec![(1, "StartupComplete"), (2, "StateChanged")]
        );
        let filtered = log
            .wait(0, &["StateChanged".into()], 0, Duration::ZERO)
            .await;
        assert_eq!(filtered.len(), 1);
        assert_eq!(log.wait(0, &[], 1, Duration::ZERO).await[0].id, 2);
        assert!(
            log.wait(2, &[], 0, Duration::from_millis(10))
                .await
                .is_empty()
        );

        let later = {
            let log = log.clone();
            tokio::spawn(async move { log.wait(2, &[], 0, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.emit("DeviceConnected", json!({}));
        let got = later.await.unwrap();
        assert_eq!(got[0].id, 3);
        assert_eq!(got[0].to_json()["type"], "DeviceConnected");
    }

    #[test]
    fn the_oldest_events_make_room() {
        let log = EventLog::default();
        for _ in 0..CAPACITY + 5 {
            log.emit("Ping", json!({}));
        }
        let events = log.after(0, &[], 0);
        assert_eq!(events.len(), CAPACITY);
        assert_eq!(events[0].id, 6);
    }
}
