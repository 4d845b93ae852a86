//! Issue 10: index batches that claim a very large number of entries keep the daemon
//! responsive, and so does the peer's index ID changing afterwards (everything held of its
//! old index is dropped).
//!
//! A wire-level peer sends its index in frames as full as the 4 MiB control-frame limit
//! allows while the test polls `GET /rest/db/status?folder=docs` and
//! `GET /rest/system/status` and records how long each answer took. Then it reconnects
//! with a new index ID and a small full index. Before the fix a status call walked the
//! whole index each time (1,000,000 entries: up to 5.4 s per answer).
//!
//! `PEERFOLD_BIG_INDEX_ENTRIES` sets the size (200,000 by default, which keeps the test
//! under a minute in the debug build; run it once by hand with 1000000). The figures are
//! printed (`--nocapture`); the assertion is generous so a loaded 2-core machine does not
//! make it flaky.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use peerfold_protocol::framing::MAX_CONTROL_FRAME_LEN;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};
use prost::Message as _;

use crate::api::Api;
use crate::support::wait_until;
use crate::wire_peer::{handshake_with_index_id, send, serving_docs_to};

/// The slowest answer allowed while the daemon takes in the index.
const SLOWEST_ANSWER: Duration = Duration::from_secs(1);

/// A tombstone: the cheapest entry for the daemon to act on (nothing to fetch), yet
/// stored, planned and counted like any other.
fn tombstone(i: u64) -> wire::FileInfo {
    wire::FileInfo {
        name: format!("dir{:03}/file-{i:08}.txt", i % 1000),
        kind: wire::FileKind::File as i32,
        modified_s: 1_700_000_000,
        deleted: true,
        sequence: i + 1,
        version: Some(wire::Vector {
            counters: vec![wire::Counter { id: 99, value: 1 }],
        }),
        modified_by: 99,
        ..Default::default()
    }
}

/// `range` as index frames, each as full as the control-frame limit allows (with room for
/// the envelope and the length prefix); the first a full Index when `full`.
fn frames(range: std::ops::Range<u64>, full: bool) -> Vec<Body> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let mut bytes = 0;
    let flush = |files: &mut Vec<wire::FileInfo>, out: &mut Vec<Body>| {
        let files = std::mem::take(files);
        let folder = "docs".to_owned();
        out.push(if full && out.is_empty() {
            Body::Index(wire::Index { folder, files })
        } else {
            Body::IndexUpdate(wire::IndexUpdate { folder, files })
        });
    };
    for i in range {
        let info = tombstone(i);
        let len = info.encoded_len() + 4;
        if bytes + len > MAX_CONTROL_FRAME_LEN - 1024 {
            flush(&mut files, &mut out);
            bytes = 0;
        }
        bytes += len;
        files.push(info);
    }
    if !files.is_empty() {
        flush(&mut files, &mut out);
    }
    out
}

/// The endpoints polled.
const POLLED: [&str; 2] = ["/rest/db/status?folder=docs", "/rest/system/status"];

/// Polls [`POLLED`] until `stop`, recording each answer's time per endpoint.
fn poll(api: Arc<Api>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<[Vec<Duration>; 2]> {
    std::thread::spawn(move || {
        let mut times = [Vec::new(), Vec::new()];
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            for (path, times) in POLLED.iter().zip(&mut times) {
                let started = Instant::now();
                let answer = api.get(path);
                times.push(started.elapsed());
                // Which answers were slow, and when, for the report.
                if started.elapsed() > Duration::from_millis(200) {
                    eprintln!(
                        "slow answer: {path} took {:?}, {:?} into the phase (globalDeleted {})",
                        started.elapsed(),
                        t0.elapsed(),
                        answer["globalDeleted"]
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        times
    })
}

/// Reports each endpoint's answer times during `phase`; returns the slowest.
fn report(phase: &str, times: [Vec<Duration>; 2]) -> Duration {
    POLLED
        .iter()
        .zip(times)
        .map(|(path, times)| distribution(&format!("{path} during {phase}"), times))
        .max()
        .unwrap()
}

/// p50, p99 and max of `times`, as a line for the report.
fn distribution(what: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let max = *times.last().unwrap();
    eprintln!(
        "{what}: {} answers, p50 {:?}, p99 {:?}, max {max:?}",
        times.len(),
        at(0.5),
        at(0.99)
    );
    max
}

fn global_deleted(api: &Api) -> u64 {
    api.get("/rest/db/status?folder=docs")["globalDeleted"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_index_and_its_replacement_keep_the_daemon_responsive() {
    let total: u64 = std::env::var("PEERFOLD_BIG_INDEX_ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let replacement = 1_000;
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let api = Arc::new(Api::of(&a, &running));

    // Phase 1: the whole index, in frames of up to 4 MiB.
    let batches = frames(0..total, true);
    let per_frame = match &batches[0] {
        Body::Index(index) => index.files.len(),
        _ => unreachable!("the first frame is a full index"),
    };
    let (connection, mut tx, _rx, _) = handshake_with_index_id(&evil, a_id, running.port, 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll(api.clone(), stop.clone());
    let started = Instant::now();
    for body in batches {
        send(&mut tx, body).await;
    }
    let api2 = api.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the daemon holds the whole index", 600, || {
            global_deleted(&api2) == total
        });
    })
    .await
    .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let loading = poller.join().unwrap();
    eprintln!("{total} entries in frames of {per_frame}: taken in {took:?}");
    let slowest_loading = report("the load", loading);

    // Phase 2: the peer comes back with a rebuilt index (a new index ID) and a small one.
    connection.close(0u32.into(), b"rebuilt");
    let (connection, mut tx, _rx, _) = handshake_with_index_id(&evil, a_id, running.port, 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll(api.clone(), stop.clone());
    let started = Instant::now();
    for body in frames(total..total + replacement, true) {
        send(&mut tx, body).await;
    }
    let api2 = api.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the old index is dropped for the new one", 600, || {
            global_deleted(&api2) == replacement
        });
    })
    .await
    .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let replacing = poller.join().unwrap();
    eprintln!("index ID change over {total} entries: absorbed in {took:?}");
    let slowest_replacing = report("the replacement", replacing);

    // How long the daemon held its writer for each batch and for dropping the old index.
    for line in a
        .log()
        .lines()
        .filter(|l| l.contains("stored an index batch") || l.contains("dropped what was held"))
    {
        eprintln!(
            "daemon: {}",
            line.rsplit("peerfold_engine").next().unwrap_or(line)
        );
    }
    assert!(
        slowest_loading < SLOWEST_ANSWER && slowest_replacing < SLOWEST_ANSWER,
        "a status answer took {slowest_loading:?} during the load, {slowest_replacing:?} \
         during the replacement"
    );
    connection.close(0u32.into(), b"done");
    drop(running);
}
