//! Public address discovery: STUN Binding requests sent on the first QUIC endpoint's own UDP
//! socket (through `MuxSocket`), so the mapping learned is the one QUIC packets get. The
//! mapped address is announced to global discovery (`quic://IP:PORT`) unless the NAT maps
//! differently per destination (two servers saw two addresses: symmetric NAT, where the
//! address is no use to a peer, as Syncthing decides too).
//!
//! Servers: the `stunServers` option (`HOST:PORT`); `default` stands for this device's own
//! relays (the listen addresses, at their relay port) and global discovery servers (at
//! their port), which answer STUN on those ports; peerfold ships no public STUN servers.
//! Probes repeat every `stunKeepaliveStartS` (180 s) while the mapping holds; when it changes
//! between two probes the interval halves, down to `stunKeepaliveMinS` (20 s): Syncthing's
//! rule, which keeps a short-lived NAT mapping open. A round with no answer is retried after
//! 5 s, doubling to 5 min.
//!
//! Who wakes me: my timer, `LiveConfig::changed` (the STUN options, or the announce servers
//! that `default` derives from: the probe loop restarts). Whom I wake: global discovery (a
//! new public address is announced at once, through a `watch` channel).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info};

use crate::config::live::LiveConfig;
use crate::config::{Address, Options};
use crate::life::Life;
use crate::net::relay::MuxSocket;
use crate::peers::punch::PunchPort;

/// How long one Binding request waits for its answer; a probe tries three times, each
/// waiting twice as long as the one before (0.5 + 1 + 2 s).
const ANSWER_WAIT: Duration = Duration::from_millis(500);
const ATTEMPTS: u32 = 3;
/// After a round with no answer at all: 5 s, doubling to 5 min.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// The port global discovery servers listen on when their URL names none.
const HTTPS_PORT: u16 = 443;

/// What the NAT in front of this device does with the QUIC socket's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatType {
    /// Not known: no server answered, or one did with a port other than ours.
    Unknown,
    /// Every server saw the same address, with our socket's port.
    PortPreserving,
    /// Two servers saw two different addresses: the mapping depends on the destination,
    /// so the address is not announced.
    Symmetric,
}

impl NatType {
    /// `unknown`, `port-preserving` or `symmetric`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::PortPreserving => "port-preserving",
            Self::Symmetric => "symmetric",
        }
    }
}

/// The first QUIC listener's public address as STUN servers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicAddress {
    /// The mapped address (the last one any server saw), if any server answered.
    pub address: Option<SocketAddr>,
    /// What the mappings say about the NAT.
    pub nat_type: NatType,
}

/// The next keep-alive interval: halved (not below `min`) when the mapping changed since
/// the previous probe, else unchanged (Syncthing's `stunKeepalive` rule).
pub(crate) fn next_interval(current: Duration, changed: bool, min: Duration) -> Duration {
    if changed {
        (current / 2).max(min)
    } else {
        current
    }
}

/// The NAT type from the addresses servers saw in one round and our socket's port.
pub(crate) fn classify(seen: &[SocketAddr], local_port: u16) -> NatType {
    match seen {
        [] => NatType::Unknown,
        [first, rest @ ..] if rest.iter().any(|a| a != first) => NatType::Symmetric,
        [first, ..] if first.port() == local_port => NatType::PortPreserving,
        _ => NatType::Unknown,
    }
}

/// `HOST:PORT` of a global discovery server URL (`https://HOST[:PORT]/...`).
fn announce_server_host_port(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?']).next()?;
    if authority.is_empty() {
        return None;
    }
    // `[v6]:port`, `host:port`, or a host alone.
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{HTTPS_PORT}")
    })
}

/// The servers to probe: the option's entries, `default` expanded from the listen
/// addresses' relays and the global discovery servers; empty when STUN is off.
pub(crate) fn servers(options: &Options, listen: &[Address]) -> Vec<String> {
    if options.stun_keepalive_start_s == 0 {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for entry in &options.stun_servers {
        if entry != "default" {
            out.push(entry.clone());
            continue;
        }
        out.extend(
            listen
                .iter()
                .filter(|a| matches!(a, Address::Relay { .. }))
                .filter_map(Address::host_port),
        );
        if options.global_announce_enabled {
            out.extend(
                options
                    .global_announce_servers
                    .iter()
                    .filter(|s| s.as_str() != "default")
                    .filter_map(|s| announce_server_host_port(s)),
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// The STUN client of the first QUIC endpoint.
pub(crate) struct Stun {
    mux: Arc<MuxSocket>,
    config: Arc<LiveConfig>,
    /// The engine's listen addresses (fixed for its life): `default` takes relays from them.
    listen: Vec<Address>,
    /// The last address each server saw, by its `HOST:PORT`. Held for updates only.
    mapped: Mutex<BTreeMap<String, SocketAddr>>,
    state: watch::Sender<PublicAddress>,
    /// What global discovery announces: the mapped address unless the NAT is symmetric.
    announce: watch::Sender<Option<SocketAddr>>,
}

impl std::fmt::Debug for Stun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stun")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Stun {
    pub(crate) fn new(mux: Arc<MuxSocket>, config: Arc<LiveConfig>, listen: Vec<Address>) -> Self {
        Self {
            mux,
            config,
            listen,
            mapped: Mutex::new(BTreeMap::new()),
            state: watch::Sender::new(PublicAddress {
                address: None,
                nat_type: NatType::Unknown,
            }),
            announce: watch::Sender::new(None),
        }
    }

    fn mapped(&self) -> MutexGuard<'_, BTreeMap<String, SocketAddr>> {
        self.mapped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public address and NAT type as last learned.
    pub(crate) fn public_address(&self) -> PublicAddress {
        self.state.borrow().clone()
    }

    /// The address to announce (`None` when unknown or behind a symmetric NAT).
    pub(crate) fn announced(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.announce.subscribe()
    }

    /// Probes while there is anything to ask, until the engine stops; a change of the STUN
    /// options (or of what `default` derives from) starts over.
    pub(crate) async fn run(self: Arc<Self>, life: Life) {
        loop {
            let options = self.config.get().options.clone();
            let servers = servers(&options, &self.listen);
            self.mapped().clear();
            self.publish(&[]);
            let probing = async {
                if servers.is_empty() {
                    return std::future::pending().await;
                }
                self.probe_loop(&servers, &options).await;
            };
            let changed = async {
                loop {
                    self.config.changed().await;
                    if servers != self::servers(&self.config.get().options, &self.listen)
                        || self.config.get().options.stun_keepalive_start_s
                            != options.stun_keepalive_start_s
                        || self.config.get().options.stun_keepalive_min_s
                            != options.stun_keepalive_min_s
                    {
                        return;
                    }
                }
            };
            tokio::select! {
                () = life.cancelled() => return,
                () = probing => {}
                () = changed => debug!("STUN options changed"),
            }
        }
    }

    async fn probe_loop(&self, servers: &[String], options: &Options) {
        let start = Duration::from_secs(options.stun_keepalive_start_s);
        let min = Duration::from_secs(options.stun_keepalive_min_s);
        let mut interval = start;
        let mut retry = RETRY_FIRST;
        loop {
            let wait = match self.probe_round(servers).await {
                Some(changed) => {
                    retry = RETRY_FIRST;
                    interval = next_interval(interval, changed, min);
                    interval
                }
                None => {
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Asks every server once; `Some(changed)` when any answered (whether a server saw a
    /// different address than the round before), `None` when none did.
    async fn probe_round(&self, servers: &[String]) -> Option<bool> {
        let mut seen = Vec::new();
        let mut changed = false;
        for server in servers {
            let Some(mapped) = self.probe(server).await else {
                continue;
            };
            seen.push(mapped);
            let before = self.mapped().insert(server.clone(), mapped);
            if before.is_some_and(|b| b != mapped) {
                info!(%server, ?before, now = %mapped, "the NAT mapping changed");
                changed = true;
            }
        }
        if seen.is_empty() {
            return None;
        }
        self.publish(&seen);
        Some(changed)
    }

    /// Records one round's addresses: the state, and what to announce.
    fn publish(&self, seen: &[SocketAddr]) {
        let local_port = self.mux.local_port();
        let nat_type = classify(seen, local_port);
        let address = seen.last().copied();
        let state = PublicAddress { address, nat_type };
        self.state.send_if_modified(|old| {
            let modified = *old != state;
            if modified && state.address.is_some() {
                info!(address = ?state.address, nat = nat_type.as_str(), "public address");
            }
            *old = state;
            modified
        });
        let announce = address.filter(|_| nat_type != NatType::Symmetric);
        self.announce.send_if_modified(|old| {
            let modified = *old != announce;
            *old = announce;
            modified
        });
    }

    /// One server's view of our socket: up to [`ATTEMPTS`] Binding requests.
    async fn probe(&self, server: &str) -> Option<SocketAddr> {
        let to = self.resolve(server).await?;
        let mut wait = ANSWER_WAIT;
        for _ in 0..ATTEMPTS {
            let mut tx = [0u8; 12];
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tx).is_err() {
                return None;
            }
            match self.mux.send_stun(to, tx) {
                Ok(answer) => match tokio::time::timeout(wait, answer).await {
                    Ok(Ok(mapped)) => return Some(mapped),
                    _ => self.mux.forget_stun(tx),
                },
                Err(error) => {
                    debug!(%server, %error, "STUN request not sent");
                    tokio::time::sleep(wait).await;
                }
            }
            wait *= 2;
        }
        debug!(%server, "no STUN answer");
        None
    }

    /// The server's address, in the family of our socket (an IPv4 socket cannot reach an
    /// IPv6 server).
    async fn resolve(&self, server: &str) -> Option<SocketAddr> {
        let v4_only = self.mux.is_ipv4();
        match tokio::net::lookup_host(server).await {
            Ok(addrs) => addrs.into_iter().find(|a| !v4_only || a.is_ipv4()),
            Err(error) => {
                debug!(%server, %error, "STUN server does not resolve");
                None
            }
        }
    }
}

/// Hole punching asks the STUN client: its address is the one a punch opens, its socket the
/// one the datagrams leave from.
impl PunchPort for Stun {
    fn public_address(&self) -> Option<(SocketAddr, NatType)> {
        let state = self.public_address();
        state.address.map(|a| (a, state.nat_type))
    }

    fn send_punch(&self, to: SocketAddr) {
        let mut tx = [0u8; 12];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tx).is_err() {
            return;
        }
        if let Err(error) = self.mux.send_punch(to, tx) {
            debug!(%to, %error, "hole-punching datagram not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_halves_on_change_down_to_the_minimum() {
        let min = Duration::from_secs(20);
        let mut interval = Duration::from_secs(180);
        interval = next_interval(interval, false, min);
        assert_eq!(interval, Duration::from_secs(180));
        let halvings: Vec<u64> = (0..5)
            .map(|_| {
                interval = next_interval(interval, true, min);
                interval.as_secs()
            })
            .collect();
        assert_eq!(halvings, [90, 45, 22, 20, 20]);
        assert_eq!(next_interval(interval, false, min), min);
    }

    #[test]
    fn nat_types() {
        let a: SocketAddr = "203.0.113.1:22100".parse().unwrap();
        let b: SocketAddr = "203.0.113.1:40000".parse().unwrap();
        assert_eq!(classify(&[], 22100), NatType::Unknown);
        assert_eq!(classify(&[a, a], 22100), NatType::PortPreserving);
        assert_eq!(classify(&[b], 22100), NatType::Unknown);
        assert_eq!(classify(&[a, b], 22100), NatType::Symmetric);
    }

    #[test]
    fn default_servers_come_from_relays_and_discovery_servers() {
        let mut options = Options {
            global_announce_servers: vec![
                "https://disco.example:8443/?id=X".into(),
                "https://[2001:db8::1]/".into(),
                "default".into(),
            ],
            stun_servers: vec!["default".into(), "stun.example:3478".into()],
            ..Options::default()
        };
        let listen: Vec<Address> = ["quic://0.0.0.0:22100", "relay://relay.example:22067/?id=Y"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        assert_eq!(
            servers(&options, &listen),
            [
                "relay.example:22067",
                "disco.example:8443",
                "[2001:db8::1]:443",
                "stun.example:3478"
            ]
        );
        options.stun_keepalive_start_s = 0;
        assert!(servers(&options, &listen).is_empty());
    }
}
