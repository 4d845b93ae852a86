//! Rate limits (Syncthing's `maxRecvKbps` / `maxSendKbps`, KiB/s) hold real transfers
//! between two daemons to their rate, measured on the wire (the connection's byte counters
//! in `/rest/system/connections`) over the steady part of the transfer; LAN peers are
//! exempt unless `limitBandwidthInLan`. These assert the bound the issue asks for; they are
//! not benchmarks.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::Api;
use crate::settings::pair;
use crate::support::{noise, wait_until};

const MIB: u64 = 1 << 20;

/// Writes `size` bytes of noise that no block repeats (so every byte crosses the wire).
fn write_noise(path: &Path, size: u64, seed: u64) {
    let mut file = File::create(path).unwrap();
    let chunk = 8 * MIB;
    for i in 0..size.div_ceil(chunk) {
        let len = chunk.min(size - i * chunk) as usize;
        file.write_all(&noise(seed * 100_000 + i, len)).unwrap();
    }
    file.sync_all().unwrap();
}

/// Bytes `api`'s daemon counted in `direction` (`inBytesTotal`, `outBytesTotal`) on its
/// connection to `peer`.
fn counted(api: &Api, peer: &str, direction: &str) -> u64 {
    api.get("/rest/system/connections")["connections"][peer][direction]
        .as_u64()
        .unwrap_or(0)
}

/// The rate (bytes/s) at which the counter moved from `from` more bytes than at the start
/// to `to` more, sampled every 200 ms until `done`.
fn rate_between(
    mut counter: impl FnMut() -> u64,
    from: u64,
    to: u64,
    mut done: impl FnMut() -> bool,
    limit_s: u64,
) -> f64 {
    let base = counter();
    let deadline = Instant::now() + Duration::from_secs(limit_s);
    let mut start: Option<(Instant, u64)> = None;
    while Instant::now() < deadline {
        let Some(moved) = counter().checked_sub(base) else {
            panic!("the connection was replaced during the transfer");
        };
        let now = (Instant::now(), moved);
        match start {
            None if now.1 >= from => start = Some(now),
            Some((t0, b0)) if now.1 >= to => {
                return (now.1 - b0) as f64 / now.0.duration_since(t0).as_secs_f64();
            }
            _ => {}
        }
        assert!(!done() || now.1 >= to, "done after {} bytes only", now.1);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the transfer did not reach {to} bytes in {limit_s} s");
}

/// A rate (bytes/s) kept within 10% above `limit`, and not stalled far below it.
fn assert_held_to(what: &str, rate: f64, limit: u64) {
    println!(
        "{what} of {} KiB/s: {:.1} MiB/s",
        limit / 1024,
        rate / MIB as f64
    );
    assert!(
        rate <= limit as f64 * 1.10,
        "{what}: {rate} B/s over the limit of {limit}"
    );
    assert!(
        rate >= limit as f64 * 0.5,
        "{what}: {rate} B/s, the transfer barely moved"
    );
}

#[test]
fn rate_limits_hold_transfers_to_their_rate_and_spare_the_lan() {
    let p = pair();
    let (id_a, id_b) = (p.a.id(), p.b.id());
    wait_until("connected", 30, || {
        p.api_b.get("/rest/system/connections")["connections"][&id_a]["connected"] == true
    });

    // A low receive limit on b, but a is on the LAN (loopback): not limited.
    p.api_b.ok_json(
        "PATCH",
        "/rest/config/options",
        json!({ "maxRecvKbps": 1024 }),
    );
    write_noise(&p.root_a.join("lan.bin"), 64 * MIB, 1);
    let started = Instant::now();
    wait_until("lan.bin arrives", 60, || {
        std::fs::metadata(p.root_b.join("lan.bin")).is_ok_and(|m| m.len() == 64 * MIB)
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(32),
        "64 MiB at the 1 MiB/s limit would take 64 s; LAN links are exempt (took {took:?})"
    );

    // limitBandwidthInLan: 1 GiB received at 24 MiB/s keeps within 10% of it.
    let limit = 24 * MIB;
    p.api_b.ok_json(
        "PATCH",
        "/rest/config/options",
        json!({ "maxRecvKbps": limit / 1024, "limitBandwidthInLan": true }),
    );
    write_noise(&p.root_a.join("big.bin"), 1024 * MIB, 2);
    let big = p.root_b.join("big.bin");
    let rate = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rate_between(
            || counted(&p.api_b, &id_a, "inBytesTotal"),
            64 * MIB,
            960 * MIB,
            || std::fs::metadata(&big).is_ok_and(|m| m.len() == 1024 * MIB),
            240,
        )
    }))
    .unwrap_or_else(|_| panic!("a:\n{}\nb:\n{}", p.a.log(), p.b.log()));
    assert_held_to("1 GiB under maxRecvKbps", rate, limit);
    wait_until("big.bin complete", 120, || {
        std::fs::metadata(&big).is_ok_and(|m| m.len() == 1024 * MIB)
    });

    // A device's own send limit, set on a for b: 8 MiB/s.
    p.api_b
        .ok_json("PATCH", "/rest/config/options", json!({ "maxRecvKbps": 0 }));
    let limit = 8 * MIB;
    p.api_a.ok_json(
        "PATCH",
        "/rest/config/options",
        json!({ "limitBandwidthInLan": true }),
    );
    p.api_a.ok_json(
        "PATCH",
        &format!("/rest/config/devices/{id_b}"),
        json!({ "maxSendKbps": limit / 1024 }),
    );
    write_noise(&p.root_a.join("device.bin"), 160 * MIB, 3);
    let copy = p.root_b.join("device.bin");
    let rate = rate_between(
        || counted(&p.api_a, &id_b, "outBytesTotal"),
        24 * MIB,
        144 * MIB,
        || std::fs::metadata(&copy).is_ok_and(|m| m.len() == 160 * MIB),
        120,
    );
    assert_held_to("a device's maxSendKbps", rate, limit);
}
