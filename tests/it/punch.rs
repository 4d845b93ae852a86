//! NAT traversal (issue 13) between real daemons in network namespaces: two homes behind
//! NAT routers that cannot reach each other, a discovery server and our relay (both also
//! answering STUN) on the "internet", and two devices that know only each other's IDs.
//!
//! The matrix and what the NAT types make possible (Linux masquerade maps a host's port to
//! the same public port for every destination, but only lets in what comes from an address
//! and port the host sent to; `masquerade fully-random` picks a new port per destination):
//! - both port-preserving: each side's public address, learned by STUN, is the one its
//!   packets to the other come from, so a punched hole opens: the pair ends direct;
//! - one symmetric: the symmetric side reaches the other from a port nobody learned, which
//!   the port-preserving side's NAT never sent to: relayed;
//! - both symmetric: relayed, and the asking side stops after its attempts.
//!
//! Root only (CI runs as root), with Debian's `nftables`, `iproute2` and `conntrack`
//! (tests/run.sh installs them).

use std::fs;
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::netns::Nat;
use crate::ns_daemon::{NsDaemon, wait_until, wait_up_to};
use crate::relay::{TwoHomes, connection, in_bytes};
use crate::support::{Device, noise, wait_for_same_tree};

/// Attempts the asking side makes per relayed link (engine `peers::punch::MAX_ATTEMPTS`).
const MAX_ATTEMPTS: usize = 4;

/// `DeviceConnected` events `api` emitted about `device`: (time, type, hole punched).
pub(crate) fn connections_seen(api: &Api, device: &str) -> Vec<(jiff::Timestamp, String, bool)> {
    let events = api.get("/rest/events?since=0&timeout=0&events=DeviceConnected");
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["id"] == device)
        .map(|e| {
            (
                e["time"].as_str().unwrap().parse().unwrap(),
                e["data"]["type"].as_str().unwrap().to_owned(),
                e["data"]["holePunched"] == true,
            )
        })
        .collect()
}

/// Whether `api` is connected to `device` over a path hole punching opened.
fn punched(api: &Api, device: &str) -> bool {
    let c = &api.get("/rest/system/connections")["connections"][device];
    c["connected"] == true && c["holePunched"] == true
}

/// How many hole-punching attempts `device` logged as failed.
fn failed_attempts(device: &Device) -> usize {
    device.log().matches("hole punch attempt failed").count()
}

/// Two homes behind `nats` with a file to sync from the first to the second; the daemons
/// running; returns once both are connected (any path).
struct Pair {
    homes: TwoHomes,
    devices: [Device; 2],
    daemons: [NsDaemon; 2],
    roots: [std::path::PathBuf; 2],
    content: Vec<u8>,
}

impl Pair {
    fn start(nats: [Nat; 2], size: usize, rate_mbit: Option<u32>) -> Self {
        Self::start_with(nats, size, rate_mbit, |_| {})
    }

    /// [`Pair::start`], with `prepare` run on the network before the daemons start.
    fn start_with(
        nats: [Nat; 2],
        size: usize,
        rate_mbit: Option<u32>,
        prepare: impl FnOnce(&TwoHomes),
    ) -> Self {
        let homes = TwoHomes::new(nats);
        prepare(&homes);
        if let Some(mbit) = rate_mbit {
            homes.net.rate_limit(homes.routers[0], mbit);
        }
        let (devices, roots) = homes.devices();
        let content = noise(13, size);
        fs::write(roots[0].join("big.bin"), &content).unwrap();
        let daemons = [homes.serve(0, &devices[0]), homes.serve(1, &devices[1])];
        Self {
            homes,
            devices,
            daemons,
            roots,
            content,
        }
    }

    fn b_api(&self) -> &Api {
        &self.daemons[1].api
    }

    fn a_id(&self) -> String {
        self.devices[0].id()
    }

    fn all(&self) -> [&Device; 2] {
        [&self.devices[0], &self.devices[1]]
    }

    fn wait_synced(&self) {
        let [a, b] = &self.devices;
        wait_for_same_tree(
            "b has a's file",
            180,
            (&self.roots[0], a),
            (&self.roots[1], b),
        );
        assert_eq!(
            fs::read(self.roots[1].join("big.bin")).unwrap(),
            self.content
        );
    }

    /// The pair's devices that asked for hole punches (the lower ID): exactly one.
    fn asker(&self) -> &Device {
        let askers: Vec<&Device> = self
            .devices
            .iter()
            .filter(|d| d.log().contains("hole punch attempt"))
            .collect();
        assert_eq!(askers.len(), 1, "one side asks");
        askers[0]
    }

    /// Asserts the pair stays relayed and the asking side gives up after its attempts and
    /// makes no more.
    fn stays_relayed(&self) {
        let a_id = self.a_id();
        wait_up_to(90, "the asking side gives up punching", &self.all(), || {
            self.devices
                .iter()
                .any(|d| d.log().contains("hole punching gave up"))
        });
        let asker = self.asker();
        assert_eq!(failed_attempts(asker), MAX_ATTEMPTS, "{}", asker.log());
        // No more attempts after giving up (the last backoff was 8 s).
        std::thread::sleep(Duration::from_secs(12));
        assert_eq!(failed_attempts(asker), MAX_ATTEMPTS, "{}", asker.log());
        let (kind, _) = connection(self.b_api(), &a_id).expect("b is connected to a");
        assert!(kind.starts_with("relay-"), "{kind}");
        assert!(
            connections_seen(self.b_api(), &a_id)
                .iter()
                .all(|(_, kind, _)| kind.starts_with("relay-")),
            "never direct"
        );
        self.wait_synced();
    }
}

/// Makes home a's router drop UDP to and from home b's router (the direct path), until the
/// table `pf_cut` is deleted; the relay (TCP, elsewhere) is untouched.
fn cut_direct_path(homes: &TwoHomes) {
    let router_b_ip = homes.net.ip(homes.routers[1]);
    homes.net.nft(
        homes.routers[0],
        &format!(
            "table ip pf_cut {{\n\
             chain forward {{ type filter hook forward priority -5; ip daddr {router_b_ip} meta l4proto udp drop; ip saddr {router_b_ip} meta l4proto udp drop; }}\n\
             }}\n"
        ),
    );
}

#[test]
fn homes_behind_port_preserving_nats_end_on_a_punched_direct_path() {
    let pair = Pair::start([Nat::PortPreserving; 2], 8 << 20, None);
    let a_id = pair.a_id();
    wait_up_to(60, "b reaches a over a punched path", &pair.all(), || {
        punched(pair.b_api(), &a_id)
    });
    let (kind, address) = connection(pair.b_api(), &a_id).unwrap();
    assert!(kind.starts_with("quic-"), "{kind}");
    // The address is a's router (its public address), not the relay and not a's own.
    let router_a = pair.homes.net.ip(pair.homes.routers[0]).to_string();
    assert!(address.contains(&router_a), "{address} vs {router_a}");
    // The path was relayed first: the time from there to direct.
    let seen = connections_seen(pair.b_api(), &a_id);
    let relayed = seen
        .iter()
        .find(|(_, kind, _)| kind.starts_with("relay-"))
        .expect("connected through the relay first");
    let direct = seen
        .iter()
        .find(|(_, _, punched)| *punched)
        .expect("a DeviceConnected event for the punched path");
    let took = direct.0.duration_since(relayed.0);
    println!("relayed -> punched direct path in {took:#}");
    pair.wait_synced();
    // `peerfold status` says so too.
    let status = pair.devices[1].ok(["status"]);
    assert!(status.contains("(direct, hole punched)"), "{status}");
}

#[test]
fn one_symmetric_nat_keeps_the_pair_on_the_relay() {
    let pair = Pair::start([Nat::PortPreserving, Nat::Symmetric], 2 << 20, None);
    pair.stays_relayed();
}

#[test]
fn homes_behind_symmetric_nats_stay_relayed_and_stop_trying() {
    let pair = Pair::start([Nat::Symmetric; 2], 2 << 20, None);
    pair.stays_relayed();
}

/// A punched path whose mapping the router flushes mid-transfer: alone (`conntrack -F`),
/// the home's next packet out gets the same port back and the path carries on; flushed
/// while the router also drops the path (a NAT reboot), the link falls back to the relay,
/// is punched again once the path is back, and the transfer completes intact.
#[test]
fn a_punched_path_that_breaks_falls_back_to_the_relay_and_comes_back() {
    // 64 MiB at 12 Mbit/s out of a's home: about 45 s, longer than the whole dance.
    let pair = Pair::start([Nat::PortPreserving; 2], 64 << 20, Some(12));
    let (net, router_a) = (&pair.homes.net, pair.homes.routers[0]);
    let a_id = pair.a_id();
    let b_api = pair.b_api();
    wait_up_to(60, "a punched path", &pair.all(), || punched(b_api, &a_id));
    wait_until("the transfer is under way", &pair.all(), || {
        in_bytes(b_api, &a_id) > 4 << 20
    });
    let disconnected = || {
        b_api
            .get("/rest/events?since=0&timeout=0&events=DeviceDisconnected")
            .as_array()
            .unwrap()
            .len()
    };
    let before = disconnected();
    net.ok(router_a, ["conntrack", "-F"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(punched(b_api, &a_id), "a flushed mapping alone heals");
    assert_eq!(
        disconnected(),
        before,
        "no reconnection after a flush alone"
    );
    let received = in_bytes(b_api, &a_id);
    assert!(received < pair.content.len() as u64, "still transferring");

    // The router drops the direct path and forgets its mappings.
    cut_direct_path(&pair.homes);
    net.ok(router_a, ["conntrack", "-F"]);
    let cut_at = Instant::now();
    wait_up_to(90, "the link falls back to the relay", &pair.all(), || {
        connection(b_api, &a_id).is_some_and(|(kind, _)| kind.starts_with("relay-"))
    });
    println!(
        "fell back to the relay {:?} after the cut",
        cut_at.elapsed()
    );
    assert_ne!(
        fs::read(pair.roots[1].join("big.bin")).ok().as_deref(),
        Some(&pair.content[..]),
        "the transfer had not finished when the path broke"
    );
    net.ok(router_a, ["nft", "delete", "table", "ip", "pf_cut"]);
    let healed_at = Instant::now();
    // Moves to a better path back off (5 s doubling) while the path is cut: on a loaded
    // machine the fallback took 50 s, and the next try can come a minute or more after the
    // path is back. This bounds the wait, it measures nothing.
    wait_up_to(180, "the link is punched again", &pair.all(), || {
        punched(b_api, &a_id)
    });
    println!(
        "direct again {:?} after the path came back",
        healed_at.elapsed()
    );
    pair.wait_synced();
    // The last stretch ran over the punched path, not the relay.
    let seen = connections_seen(b_api, &a_id);
    assert!(
        seen.last().is_some_and(|(_, _, punched)| *punched),
        "{seen:?}"
    );
}

/// A hole punched while a transfer runs over the relay moves it to the direct path without
/// cutting a block request: the relayed link drains. (The routers drop the homes' direct
/// UDP at first, so the first attempt fails and the transfer starts relayed.)
#[test]
fn a_hole_punched_mid_transfer_interrupts_nothing() {
    let pair = Pair::start_with([Nat::PortPreserving; 2], 48 << 20, Some(20), |homes| {
        cut_direct_path(homes);
    });
    let (net, router_a) = (&pair.homes.net, pair.homes.routers[0]);
    let a_id = pair.a_id();
    let b_api = pair.b_api();
    wait_until("the transfer runs through the relay", &pair.all(), || {
        connection(b_api, &a_id).is_some_and(|(kind, _)| kind.starts_with("relay-"))
            && in_bytes(b_api, &a_id) > 4 << 20
    });
    wait_until("the first punch fails", &pair.all(), || {
        pair.devices.iter().any(|d| failed_attempts(d) >= 1)
    });
    net.ok(router_a, ["nft", "delete", "table", "ip", "pf_cut"]);
    wait_up_to(60, "the next attempt punches through", &pair.all(), || {
        punched(b_api, &a_id)
    });
    assert!(
        in_bytes(b_api, &a_id) < pair.content.len() as u64,
        "the transfer was still running when the path moved"
    );
    pair.wait_synced();
    for device in pair.all() {
        assert!(
            !device.log().contains("block request failed"),
            "a request was cut as the link moved:\n{}",
            device.log()
        );
    }
    let finished = b_api.get("/rest/events?since=0&timeout=0&events=ItemFinished");
    for event in finished.as_array().unwrap() {
        let why: Vec<String> = pair
            .all()
            .iter()
            .flat_map(|d| {
                d.log()
                    .lines()
                    .filter(|l| {
                        [
                            "block",
                            "connected",
                            "hole punch",
                            "moving",
                            "replaced",
                            "drain",
                        ]
                        .iter()
                        .any(|w| l.contains(w))
                            && !l.contains("served block")
                    })
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            event["data"]["error"],
            serde_json::Value::Null,
            "{event}\n{}",
            why.join("\n")
        );
    }
}
