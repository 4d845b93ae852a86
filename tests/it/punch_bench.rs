//! The NAT-traversal benchmark (issue 13), run by `bench/punch.sh` (ignored by default: it
//! takes minutes). Over the NAT matrix, `PUNCH_BENCH_RUNS` pairs per cell (in parallel, each
//! in namespaces of its own), for peerfold and for Debian's Syncthing in the same topology
//! (our discovery server and relay, which answer STUN; Syncthing's own dialing, which
//! tries direct addresses every `reconnectionIntervalS`, 60 s by default): whether the pair
//! ends on a direct path within [`WINDOW`] of its first relayed connection, how long that
//! took, and (peerfold) how many bytes the relayed link carried before the switch. Prints
//! `BENCH` lines; root only.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::Api;
use crate::global_discovery::SyncthingDevice;
use crate::netns::Nat;
use crate::punch::connections_seen;
use crate::relay::TwoHomes;

/// How long a pair has to end direct after its first relayed connection.
const WINDOW: Duration = Duration::from_secs(90);

/// What one pair did.
#[derive(Debug)]
struct Run {
    /// Seconds from the first relayed connection to a direct one, if it went direct.
    to_direct: Option<f64>,
    /// Bytes through the relay before the switch (peerfold logs them).
    relayed_bytes: Option<u64>,
}

/// Watches `b`'s connections to `a` until one is direct or [`WINDOW`] has passed since the
/// first relayed one; returns the seconds from that relayed connection to the first direct
/// one (0 when the first was direct), from the events' own times.
fn watch_pair(b: &Api, a: &str) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut relayed_seen: Option<Instant> = None;
    while Instant::now() < deadline && relayed_seen.is_none_or(|at| at.elapsed() < WINDOW) {
        // peerfold and Syncthing name the types alike (`relay-client`, `quic-server`...).
        let seen = connections_seen(b, a);
        let relayed = seen.iter().find(|(_, kind, _)| kind.starts_with("relay"));
        if let Some((at, _, _)) = seen.iter().find(|(_, kind, _)| kind.starts_with("quic")) {
            return Some(relayed.map_or(0.0, |(relayed_at, _, _)| {
                at.duration_since(*relayed_at).as_secs_f64().max(0.0)
            }));
        }
        if relayed.is_some() && relayed_seen.is_none() {
            relayed_seen = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(relayed_seen.is_some(), "the pair never connected");
    None
}

/// `text` without terminal colour sequences (the daemons' logs have them).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn peerfold_run(nats: [Nat; 2]) -> Run {
    let homes = TwoHomes::new(nats);
    let ([a, b], _) = homes.devices();
    let _on_a = homes.serve(0, &a);
    let on_b = homes.serve(1, &b);
    let to_direct = watch_pair(&on_b.api, &a.id());
    let relayed_bytes = [&a, &b].iter().find_map(|d| {
        let log = plain(&d.log());
        let at = log.find("relayed_bytes=")?;
        let digits: String = log[at + "relayed_bytes=".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    });
    Run {
        to_direct,
        relayed_bytes,
    }
}

/// `HOST:PORT` of a `scheme://HOST:PORT/...` URL.
fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap();
    rest.split(['/', '?']).next().unwrap().to_owned()
}

fn syncthing_run(nats: [Nat; 2]) -> Run {
    let homes = TwoHomes::new(nats);
    let devices = [
        SyncthingDevice::start(&homes.net, homes.homes[0]),
        SyncthingDevice::start(&homes.net, homes.homes[1]),
    ];
    let stun = [host_port(&homes.relay.url), host_port(&homes.server.url())];
    // As for peerfold (`TwoHomes::serve` waits until a device is announced), the second
    // device starts once the first is up and announced: it is not dialed by the first
    // before it announces, so they meet through the relay.
    for (i, device) in devices.iter().enumerate() {
        if i == 1 {
            std::thread::sleep(Duration::from_secs(10));
        }
        device.change(
            "PATCH",
            "/rest/config/options",
            &json!({
                "listenAddresses": ["quic://0.0.0.0:22000", homes.relay.url],
                "globalAnnounceServers": [homes.server.url()],
                "globalAnnounceEnabled": true,
                "localAnnounceEnabled": false,
                "relaysEnabled": true,
                "natEnabled": false,
                "stunServers": stun,
            }),
        );
        let other = &devices[1 - i];
        device.change(
            "POST",
            "/rest/config/devices",
            &json!({ "deviceID": other.id, "addresses": ["dynamic"] }),
        );
    }
    Run {
        to_direct: watch_pair(&devices[1].api, &devices[0].id),
        relayed_bytes: None,
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    (!values.is_empty()).then(|| values[values.len() / 2])
}

#[test]
#[ignore = "a benchmark: bench/punch.sh runs it"]
fn bench_nat_matrix() {
    let runs: usize = std::env::var("PUNCH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cells = [
        (
            "port-preserving + port-preserving",
            [Nat::PortPreserving; 2],
        ),
        (
            "port-preserving + symmetric",
            [Nat::PortPreserving, Nat::Symmetric],
        ),
        ("symmetric + symmetric", [Nat::Symmetric; 2]),
    ];
    println!("BENCH window {} s, {runs} pairs per cell", WINDOW.as_secs());
    for (program, run) in [
        ("peerfold", peerfold_run as fn([Nat; 2]) -> Run),
        ("syncthing", syncthing_run),
    ] {
        for (name, nats) in cells {
            let results: Vec<Run> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..runs).map(|_| scope.spawn(move || run(nats))).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let times: Vec<f64> = results.iter().filter_map(|r| r.to_direct).collect();
            let bytes: Vec<f64> = results
                .iter()
                .filter_map(|r| r.relayed_bytes.map(|b| b as f64))
                .collect();
            println!(
                "BENCH {program} | {name} | direct {}/{} | median to direct {} | max {} | median relayed bytes before the switch {}",
                times.len(),
                results.len(),
                median(times.clone()).map_or("-".into(), |t| format!("{t:.3} s")),
                times
                    .iter()
                    .copied()
                    .reduce(f64::max)
                    .map_or("-".into(), |t| format!("{t:.3} s")),
                median(bytes).map_or("-".into(), |b| format!("{b:.0}")),
            );
        }
    }
}
