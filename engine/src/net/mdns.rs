//! Local discovery over mDNS (mdns-sd; the only module that names it). This device announces
//! `_peerfold._udp.local.` with its QUIC port and its device ID (instance name and TXT
//! `id=`), and browses for the same service type; every device it resolves goes into the
//! address book as LAN addresses (`Via::Lan`), configured or not: the book is what
//! `/rest/system/discovery` lists, and the dialer dials only configured devices.
//!
//! Who wakes me: mdns-sd's daemon thread (a service resolved or removed, through its
//! channel), configuration changes (`localAnnounceEnabled` turned on or off), a timer that
//! re-learns what is still resolved, and the engine stopping. Whom I wake: the dial loops,
//! through the address book.
//!
//! mdns-sd reports a service again only when its records change, not when they are merely
//! refreshed. So the book learns each address for [`TTL`] (mdns-sd's TTL for host records)
//! and this task learns every resolved service again each [`RELEARN`]: an address stays in
//! the book while mdns-sd holds the service, and at most [`TTL`] after; a service that says
//! goodbye (or expires in mdns-sd's cache) is forgotten at once.
//!
//! Trust: an announcement proves nothing. A device that claims another's ID only gets its
//! address dialed if that ID is configured here, and then the TLS handshake, pinned to the
//! ID, fails (`Transport::dial` warns about it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mdns_sd::{IfKind, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use peerfold_protocol::DeviceId;
use tracing::{debug, info, warn};

use crate::config::Address;
use crate::config::live::LiveConfig;
use crate::life::Life;
use crate::peers::address_book::{AddressBook, Via};

/// The service type every peerfold device announces and browses.
const SERVICE_TYPE: &str = "_peerfold._udp.local.";
/// The TXT key that carries the full device ID.
const ID_KEY: &str = "id";
/// How long a LAN address is good for without being heard again.
const TTL: Duration = Duration::from_secs(120);
/// How often every service still resolved is learned again (well within [`TTL`]).
const RELEARN: Duration = Duration::from_secs(60);
/// How long a stop waits for mdns-sd to send its goodbye and to shut down, each.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// Services remembered at most (the book has its own cap): a LAN full of strangers cannot
/// grow this table without bound.
const MAX_SERVICES: usize = 4096;
/// Addresses taken from one announcement at most.
const MAX_ADDRESSES: usize = 16;

/// Why local discovery is not running although `localAnnounceEnabled` is on (mdns-sd could
/// not start, or its thread ended); the message is what `/rest/system/status` shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("local discovery (mDNS): {0}")]
pub(crate) struct LocalDiscoveryError(String);

/// Local discovery of one engine: a handle on the task that runs it.
#[derive(Debug)]
pub(crate) struct LocalDiscovery {
    /// What `/rest/system/status` reports. Held for reads and swaps only.
    status: Mutex<Status>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    /// The option is off: nothing announced or browsed.
    Disabled,
    /// mdns-sd could not start (or stopped by itself).
    Failed(LocalDiscoveryError),
    /// Announcing (when a listener is not on loopback) and browsing.
    Running,
}

impl LocalDiscovery {
    /// Starts local discovery if the configuration enables it, and a task (under `life`)
    /// that follows the option, feeds `book` and stops mdns-sd gracefully (goodbye, then
    /// shutdown) when the engine stops. `listening` are the QUIC listeners: the first one
    /// not on loopback is announced; with none, this device only browses.
    pub(crate) fn start(
        me: DeviceId,
        listening: &[SocketAddr],
        book: Arc<AddressBook>,
        config: Arc<LiveConfig>,
        life: &Life,
    ) -> Arc<Self> {
        let handle = Arc::new(Self {
            status: Mutex::new(Status::Disabled),
        });
        let mut browser = Browser {
            me,
            listener: announced_listener(listening),
            book,
            config,
            handle: handle.clone(),
            running: None,
            resolved: HashMap::new(),
        };
        // Started here rather than in the task, so the status is right as soon as the
        // engine is up. Creating the daemon only spawns its thread: nothing blocks.
        let span = tracing::info_span!("mdns");
        span.in_scope(|| browser.start_if_enabled());
        life.spawn_in(span, browser.run(life.clone()));
        handle
    }

    /// `None` while the option is off; otherwise whether mdns-sd runs, or why not.
    pub(crate) fn status(&self) -> Option<Result<(), LocalDiscoveryError>> {
        match &*self.lock() {
            Status::Disabled => None,
            Status::Failed(why) => Some(Err(why.clone())),
            Status::Running => Some(Ok(())),
        }
    }

    fn set(&self, status: Status) {
        *self.lock() = status;
    }

    fn lock(&self) -> MutexGuard<'_, Status> {
        // A status is replaced whole: a poisoned lock still holds a whole one.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The task's state.
struct Browser {
    me: DeviceId,
    /// The QUIC listener to announce (none: browse only).
    listener: Option<SocketAddr>,
    book: Arc<AddressBook>,
    config: Arc<LiveConfig>,
    handle: Arc<LocalDiscovery>,
    /// mdns-sd, while the option is on and it started.
    running: Option<Running>,
    /// Every service resolved and not removed, by mDNS full name, as learned.
    resolved: HashMap<String, (DeviceId, Vec<Address>)>,
}

impl Browser {
    async fn run(mut self, life: Life) {
        let mut relearn = tokio::time::interval(RELEARN);
        relearn.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let events = self.running.as_ref().map(|r| r.events.clone());
            let next = async move {
                match events {
                    Some(events) => events.recv_async().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = life.cancelled() => break,
                () = self.config.changed() => self.follow_option().await,
                event = next => match event {
                    Some(event) => self.on_event(event),
                    // The daemon thread went away, or dropped us for falling behind: say
                    // so; the next tick starts it again.
                    None => {
                        warn!("mDNS stopped by itself; starting it again within a minute");
                        self.stop().await;
                        self.handle.set(Status::Failed(LocalDiscoveryError(
                            "the mDNS daemon stopped".into(),
                        )));
                    }
                },
                _ = relearn.tick() => {
                    // Also catches an option change that came while this task was busy,
                    // and retries a start that failed.
                    self.follow_option().await;
                    for (device, addresses) in self.resolved.values() {
                        self.book.learn(*device, Via::Lan, addresses, TTL);
                    }
                }
            }
        }
        self.stop().await;
    }

    /// Starts mdns-sd if the option is on and it does not run; returns whether the option
    /// is on. A failure is warned about once (until the next success) and is tried again
    /// at the next configuration change or tick.
    fn start_if_enabled(&mut self) -> bool {
        let enabled = self.config.get().options.local_announce_enabled;
        if !enabled || self.running.is_some() {
            return enabled;
        }
        let failed_before = matches!(*self.handle.lock(), Status::Failed(_));
        match Running::start(self.me, self.listener) {
            Ok(running) => {
                match self.listener {
                    Some(addr) => info!(port = addr.port(), "announcing on the LAN (mDNS)"),
                    None => info!(
                        "browsing the LAN (mDNS); nothing to announce: no listener off loopback"
                    ),
                }
                self.running = Some(running);
                self.handle.set(Status::Running);
            }
            Err(e) => {
                if failed_before {
                    debug!(error = %e, "local discovery (mDNS) still cannot start");
                } else {
                    warn!(error = %e, "cannot start local discovery (mDNS)");
                }
                self.handle
                    .set(Status::Failed(LocalDiscoveryError(e.to_string())));
            }
        }
        true
    }

    /// Brings mdns-sd in line with the option: started when it is on, stopped when off.
    async fn follow_option(&mut self) {
        if self.start_if_enabled() {
            return;
        }
        if self.running.is_some() {
            info!("local discovery turned off");
        }
        self.stop().await;
        self.handle.set(Status::Disabled);
    }

    /// Stops mdns-sd (goodbye first) and forgets what it taught the book.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        for (_, (device, _)) in self.resolved.drain() {
            self.book.forget(device, Via::Lan);
        }
    }

    fn on_event(&mut self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                let ips = service.get_addresses().iter().map(ScopedIp::to_ip_addr);
                let heard = hear(
                    self.me,
                    service.get_property_val_str(ID_KEY),
                    ips,
                    service.get_port(),
                );
                match heard {
                    Heard::Ours => {}
                    // The announcement is peer input: not echoed into the log.
                    Heard::Malformed(why) => debug!(why, "ignoring an mDNS announcement"),
                    Heard::Peer(device, addresses) => {
                        self.learn(service.get_fullname().to_owned(), device, addresses)
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, name) => {
                if let Some((device, _)) = self.resolved.remove(&name) {
                    debug!(device = %device.short(), "gone from the LAN");
                    self.forget(device);
                }
            }
            _ => {}
        }
    }

    fn learn(&mut self, name: String, device: DeviceId, addresses: Vec<Address>) {
        if !self.resolved.contains_key(&name) && self.resolved.len() >= MAX_SERVICES {
            return;
        }
        let entry = (device, addresses.clone());
        match self.resolved.insert(name, entry) {
            // Moved: the old addresses go now rather than when they expire.
            Some((old, was)) if old != device || was != addresses => self.forget(old),
            _ => {}
        }
        if self.book.learn(device, Via::Lan, &addresses, TTL) {
            let addresses: Vec<String> = addresses.iter().map(Address::to_string).collect();
            debug!(device = %device.short(), addresses = %addresses.join(","), "found on the LAN");
        }
    }

    /// Forgets what the LAN said about `device`, except what services still resolved say
    /// (two announcements may claim one ID; one going away keeps the other).
    fn forget(&self, device: DeviceId) {
        self.book.forget(device, Via::Lan);
        for (id, addresses) in self.resolved.values() {
            if *id == device {
                self.book.learn(device, Via::Lan, addresses, TTL);
            }
        }
    }
}

/// A started mdns-sd daemon (its own thread) and what this device asked of it.
struct Running {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    /// The full name of our announcement, if any.
    announced: Option<String>,
}

impl Running {
    fn start(me: DeviceId, listener: Option<SocketAddr>) -> Result<Self, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let asked = (|| {
            // A loopback address is no use to another host, and announcing one would have
            // peers on this host dial it instead of the LAN address.
            daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
            let announced = match listener {
                Some(addr) => {
                    let info = service_info(me, addr)?;
                    let name = info.get_fullname().to_owned();
                    daemon.register(info)?;
                    Some(name)
                }
                None => None,
            };
            let events = daemon.browse(SERVICE_TYPE)?;
            Ok((announced, events))
        })();
        match asked {
            Ok((announced, events)) => Ok(Self {
                daemon,
                events,
                announced,
            }),
            Err(e) => {
                // Ends the daemon's thread; its answer is not waited for.
                let _ = daemon.shutdown();
                Err(e)
            }
        }
    }

    /// Says goodbye (so peers forget us now, not when our records expire), then ends the
    /// daemon's thread. Waits on channels, never on a runtime thread.
    async fn stop(self) {
        if let Some(name) = &self.announced {
            match self.daemon.unregister(name) {
                Ok(done) => {
                    let _ = tokio::time::timeout(STOP_WAIT, done.recv_async()).await;
                }
                Err(e) => debug!(error = %e, "cannot unregister the mDNS service"),
            }
        }
        match self.daemon.shutdown() {
            Ok(done) => {
                let _ = tokio::time::timeout(STOP_WAIT, done.recv_async()).await;
            }
            Err(e) => debug!(error = %e, "cannot shut mDNS down"),
        }
    }
}

/// The listener to announce: the first one not on loopback.
fn announced_listener(listening: &[SocketAddr]) -> Option<SocketAddr> {
    listening
        .iter()
        .copied()
        .find(|a| !a.ip().is_loopback() && a.port() != 0)
}

/// Our announcement: instance name and TXT `id` = the full device ID; a host name of our
/// own (several devices may share a machine, in network namespaces for instance, and must
/// not claim each other's addresses); the listener's address, or every interface's when it
/// listens on all of them.
fn service_info(me: DeviceId, listener: SocketAddr) -> Result<ServiceInfo, mdns_sd::Error> {
    let id = me.to_string();
    let host = format!("peerfold-{}.local.", me.short());
    let txt = [(ID_KEY, id.as_str())];
    if listener.ip().is_unspecified() {
        Ok(
            ServiceInfo::new(SERVICE_TYPE, &id, &host, (), listener.port(), &txt[..])?
                .enable_addr_auto(),
        )
    } else {
        ServiceInfo::new(
            SERVICE_TYPE,
            &id,
            &host,
            listener.ip(),
            listener.port(),
            &txt[..],
        )
    }
}

/// What one resolved announcement says, once checked.
#[derive(Debug, PartialEq)]
enum Heard {
    /// Our own (mdns-sd hears it too).
    Ours,
    /// Unusable, and why.
    Malformed(&'static str),
    /// A device and where it listens.
    Peer(DeviceId, Vec<Address>),
}

/// Checks an announcement: the TXT `id` must be a device ID that is not ours, and there must
/// be a port and some usable address.
fn hear(me: DeviceId, id: Option<&str>, ips: impl IntoIterator<Item = IpAddr>, port: u16) -> Heard {
    let Some(id) = id else {
        return Heard::Malformed("no id in its TXT record");
    };
    let Ok(device) = id.parse::<DeviceId>() else {
        return Heard::Malformed("its TXT id is not a device ID");
    };
    if device == me {
        return Heard::Ours;
    }
    if port == 0 {
        return Heard::Malformed("port 0");
    }
    let addresses = lan_addresses(ips, port);
    if addresses.is_empty() {
        return Heard::Malformed("no usable address");
    }
    Heard::Peer(device, addresses)
}

/// QUIC addresses from resolved IPs: IPv4 first, without repeats; loopback, unspecified,
/// multicast and broadcast addresses dropped, and IPv6 link-local ones too (they need a
/// scope, which an address cannot carry yet).
fn lan_addresses(ips: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<Address> {
    let mut usable: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| {
            !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
                && match ip {
                    IpAddr::V4(v4) => !v4.is_broadcast(),
                    IpAddr::V6(v6) => !v6.is_unicast_link_local(),
                }
        })
        .collect();
    usable.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    usable.dedup();
    usable.truncate(MAX_ADDRESSES);
    usable
        .into_iter()
        .map(|ip| Address::quic(ip.to_string(), port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DeviceId {
        DeviceId::from_certificate_der(&[n])
    }

    fn ips(text: &[&str]) -> Vec<IpAddr> {
        text.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn an_announcement_gives_the_device_and_its_lan_addresses() {
        let peer = id(2);
        let heard = hear(
            id(1),
            Some(&peer.to_string()),
            ips(&[
                "fd00::7",
                "10.0.0.2",
                "127.0.0.1",
                "10.0.0.2",
                "192.168.1.9",
            ]),
            22100,
        );
        assert_eq!(
            heard,
            Heard::Peer(
                peer,
                vec![
                    Address::quic("10.0.0.2", 22100),
                    Address::quic("192.168.1.9", 22100),
                    Address::quic("fd00::7", 22100),
                ]
            )
        );
        let Heard::Peer(_, addresses) = heard else {
            unreachable!()
        };
        assert_eq!(addresses[2].to_string(), "quic://[fd00::7]:22100");
    }

    #[test]
    fn our_own_announcement_is_ignored() {
        let me = id(1);
        assert_eq!(
            hear(me, Some(&me.to_string()), ips(&["10.0.0.1"]), 22100),
            Heard::Ours
        );
    }

    #[test]
    fn malformed_announcements_are_refused() {
        let me = id(1);
        let peer = id(2).to_string();
        let lan = ips(&["10.0.0.2"]);
        for (id_txt, ips, port) in [
            (None, lan.clone(), 22100),
            (Some("not-a-device-id"), lan.clone(), 22100),
            // A typo: the check characters catch it.
            (
                Some(&peer.replacen(&peer[..1], "Z", 1)[..]),
                lan.clone(),
                22100,
            ),
            (Some(&peer[..]), lan.clone(), 0),
            (
                Some(&peer[..]),
                ips(&["127.0.0.1", "::1", "0.0.0.0", "224.0.0.251", "fe80::1"]),
                22100,
            ),
            (Some(&peer[..]), Vec::new(), 22100),
        ] {
            assert!(
                matches!(hear(me, id_txt, ips.clone(), port), Heard::Malformed(_)),
                "{id_txt:?} {ips:?} {port}"
            );
        }
    }

    #[test]
    fn addresses_are_capped() {
        let many = (1..=40).map(|n| IpAddr::from([10, 0, 0, n]));
        assert_eq!(lan_addresses(many, 1).len(), MAX_ADDRESSES);
    }

    #[test]
    fn the_announced_listener_is_the_first_off_loopback() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:5000", "0.0.0.0:22100", "[::]:22100"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(announced_listener(&addrs), Some(addrs[1]));
        assert_eq!(announced_listener(&addrs[..1]), None);
    }

    #[test]
    fn our_announcement_carries_the_full_id_and_a_host_name_of_our_own() {
        let me = id(1);
        let info = service_info(me, "10.0.0.1:22100".parse().unwrap()).unwrap();
        assert_eq!(info.get_property_val_str(ID_KEY), Some(&me.to_string()[..]));
        assert_eq!(info.get_port(), 22100);
        assert_eq!(info.get_fullname(), format!("{me}.{SERVICE_TYPE}"));
        assert_eq!(
            info.get_hostname(),
            format!("peerfold-{}.local.", me.short())
        );
        assert!(!info.is_addr_auto());
        let auto = service_info(me, "0.0.0.0:22100".parse().unwrap()).unwrap();
        assert!(auto.is_addr_auto());
    }
}
