//! Addresses learned at run time (mDNS on the LAN, lookups at global discovery servers),
//! each with an expiry. The dialer reads them through `AddressSource`; whoever learns
//! something new wakes the dial loops and records a `DeviceDiscovered` event.
//!
//! Who wakes me: the mDNS browser and the global discovery client (`learn`). Whom I wake:
//! the dial loops (`changed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::addresses::AddressSource;
use crate::config::Address;
use crate::events::{Event, EventLog};

/// Where an address was learned. The dialer tries LAN addresses before global ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Via {
    /// Local discovery (mDNS).
    Lan,
    /// A global discovery server.
    Global,
}

#[derive(Debug)]
struct Learned {
    address: Address,
    via: Via,
    expires: Instant,
}

/// What every source learned, by device.
#[derive(Debug)]
pub(crate) struct AddressBook {
    /// Held for map updates and copies only.
    devices: Mutex<HashMap<DeviceId, Vec<Learned>>>,
    /// Bumped when a device gains an address it did not have.
    changed: watch::Sender<u64>,
    events: Arc<EventLog>,
}

/// Devices the book keeps at most: a LAN full of strangers cannot grow it without bound.
const MAX_DEVICES: usize = 4096;

impl AddressBook {
    pub(crate) fn new(events: Arc<EventLog>) -> Self {
        Self {
            devices: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            events,
        }
    }

    fn devices(&self) -> MutexGuard<'_, HashMap<DeviceId, Vec<Learned>>> {
        // Every update leaves the map whole: a poisoned lock is still usable.
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `device` can be reached at `addresses` (as `via` says) for `ttl`; an
    /// address already known gets the later expiry. Returns whether any address is new (then
    /// the dial loops are woken and a `DeviceDiscovered` event is recorded).
    pub(crate) fn learn(
        &self,
        device: DeviceId,
        via: Via,
        addresses: &[Address],
        ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        let expires = now + ttl;
        let mut devices = self.devices();
        if !devices.contains_key(&device) && devices.len() >= MAX_DEVICES {
            devices.retain(|_, learned| {
                learned.retain(|l| l.expires > now);
                !learned.is_empty()
            });
            if devices.len() >= MAX_DEVICES {
                return false;
            }
        }
        let learned = devices.entry(device).or_default();
        learned.retain(|l| l.expires > now);
        let mut new = false;
        for address in addresses {
            match learned
                .iter_mut()
                .find(|l| l.via == via && l.address == *address)
            {
                Some(known) => known.expires = known.expires.max(expires),
                None => {
                    new = true;
                    learned.push(Learned {
                        address: address.clone(),
                        via,
                        expires,
                    });
                }
            }
        }
        let all: Vec<String> = learned.iter().map(|l| l.address.to_string()).collect();
        drop(devices);
        if new {
            self.events.emit(Event::DeviceDiscovered {
                device,
                addresses: all,
            });
            self.changed.send_modify(|n| *n += 1);
        }
        new
    }

    /// Forgets what `via` said about `device` (an mDNS service went away).
    pub(crate) fn forget(&self, device: DeviceId, via: Via) {
        let mut devices = self.devices();
        if let Some(learned) = devices.get_mut(&device) {
            learned.retain(|l| l.via != via);
            if learned.is_empty() {
                devices.remove(&device);
            }
        }
    }

    /// `device`'s unexpired addresses, LAN ones first.
    pub(crate) fn lookup(&self, device: DeviceId) -> Vec<Address> {
        let now = Instant::now();
        let devices = self.devices();
        let Some(learned) = devices.get(&device) else {
            return Vec::new();
        };
        let mut live: Vec<(Via, &Address)> = learned
            .iter()
            .filter(|l| l.expires > now)
            .map(|l| (l.via, &l.address))
            .collect();
        live.sort_by_key(|(via, _)| *via);
        let mut out: Vec<Address> = Vec::with_capacity(live.len());
        for (_, address) in live {
            if !out.contains(address) {
                out.push(address.clone());
            }
        }
        out
    }

    /// `device`'s unexpired addresses that local discovery found (the best paths to it).
    pub(crate) fn lan(&self, device: DeviceId) -> Vec<Address> {
        let now = Instant::now();
        self.devices()
            .get(&device)
            .into_iter()
            .flatten()
            .filter(|l| l.via == Via::Lan && l.expires > now)
            .map(|l| l.address.clone())
            .collect()
    }

    /// Every device with unexpired addresses (for `/rest/system/discovery`), known to the
    /// configuration or not: a GUI offers the unknown ones for pairing.
    pub(crate) fn snapshot(&self) -> Vec<(DeviceId, Vec<Address>)> {
        let ids: Vec<DeviceId> = self.devices().keys().copied().collect();
        let mut all: Vec<(DeviceId, Vec<Address>)> = ids
            .into_iter()
            .map(|id| (id, self.lookup(id)))
            .filter(|(_, addresses)| !addresses.is_empty())
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    /// A receiver that changes when some device gains an address.
    pub(crate) fn changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The book as one of the dialer's sources.
#[async_trait::async_trait]
impl AddressSource for AddressBook {
    async fn addresses(&self, device: DeviceId) -> Vec<Address> {
        self.lookup(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DeviceId {
        DeviceId::from_certificate_der(&[n])
    }

    #[tokio::test(start_paused = true)]
    async fn learned_addresses_expire_lan_first_and_wake_the_dialer_once() {
        let events = Arc::new(EventLog::default());
        let book = AddressBook::new(events.clone());
        let mut changed = book.changed();
        let global = Address::quic("192.0.2.1", 1);
        let lan = Address::quic("10.0.0.2", 2);
        assert!(book.learn(
            id(1),
            Via::Global,
            std::slice::from_ref(&global),
            Duration::from_secs(300)
        ));
        assert!(changed.has_changed().unwrap());
        changed.borrow_and_update();
        assert!(book.learn(
            id(1),
            Via::Lan,
            std::slice::from_ref(&lan),
            Duration::from_secs(60)
        ));
        changed.borrow_and_update();
        assert_eq!(book.lookup(id(1)), vec![lan.clone(), global.clone()]);
        // Hearing the same again only extends it: no wake-up, no event.
        assert!(!book.learn(
            id(1),
            Via::Lan,
            std::slice::from_ref(&lan),
            Duration::from_secs(60)
        ));
        assert!(!changed.has_changed().unwrap());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(book.lookup(id(1)), vec![global.clone()]);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(book.lookup(id(1)).is_empty());
        assert!(book.snapshot().is_empty());
        let discovered = events.after(0, |e| matches!(e, Event::DeviceDiscovered { .. }), 0);
        assert_eq!(discovered.len(), 2);
    }

    #[tokio::test]
    async fn forgetting_one_source_keeps_the_other() {
        let book = AddressBook::new(Arc::new(EventLog::default()));
        let global = Address::quic("192.0.2.1", 1);
        book.learn(
            id(2),
            Via::Global,
            std::slice::from_ref(&global),
            Duration::from_secs(60),
        );
        book.learn(
            id(2),
            Via::Lan,
            &[Address::quic("10.0.0.2", 2)],
            Duration::from_secs(60),
        );
        book.forget(id(2), Via::Lan);
        assert_eq!(book.snapshot(), vec![(id(2), vec![global])]);
    }
}
