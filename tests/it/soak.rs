//! The soak (issue 10): a hostile peer mixes every attack of the issue against a daemon for
//! a few minutes while an honest daemon syncs 1,000 files through it. Every honest file
//! must arrive intact, the daemon's memory stay bounded and its REST API keep answering.
//!
//! `PEERFOLD_SOAK_SECS` sets how long the hostile peer goes on (default 150).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::api::Api;
use crate::support::{Device, noise, wait_until};
use crate::sync::connect_devices;
use crate::wire_peer::{
    Control, file_entry, next, offering_docs, plain_hello, share_docs_with, try_handshake, try_send,
};
use crate::wire_server::{Answer, from_files, serve_blocks};

/// Honest files, written by b in batches while the soak runs.
const HONEST_FILES: usize = 1000;
const BATCHES: usize = 20;
/// A file of a that is larger than the largest block, for read-amplification requests.
const BIG: &str = "big-0";
const BIG_LEN: usize = 17 << 20;

fn soak_time() -> Duration {
    let secs = std::env::var("PEERFOLD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    Duration::from_secs(secs)
}

/// What the hostile peer does in one round, on a fresh connection.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Offers files and never answers their blocks (item 1).
    Silent,
    /// Answers with the start of 8 MiB blocks, then nothing (item 2).
    Trickle,
    /// Requests with malformed names until cut off.
    InvalidRequests,
    /// 16 MiB requests with wrong hashes for a real file (item 3).
    ReadAmplification,
    /// Frames far larger than a Request on request streams (item 2).
    OversizedRequests,
    /// A 2 MiB Hello (item 8).
    HugeHello,
    /// Poisoned counters, escaping and non-NFC names, setuid bits (items 4, 6, 7).
    BadEntries,
    /// 300 folder offers with 8 KiB labels (item 9).
    OfferFlood,
    /// Serves part of a file, then drops the connection.
    DropMidTransfer,
    /// Connects and disconnects at once, over and over (item 11).
    Flap,
}

const ATTACKS: [Attack; 10] = [
    Attack::Silent,
    Attack::InvalidRequests,
    Attack::Trickle,
    Attack::ReadAmplification,
    Attack::BadEntries,
    Attack::OversizedRequests,
    Attack::HugeHello,
    Attack::OfferFlood,
    Attack::DropMidTransfer,
    Attack::Flap,
];

/// The hostile peer.
struct Evil {
    identity: Identity,
    a_id: DeviceId,
    a_short: u64,
    port: u16,
}

impl Evil {
    async fn connect(&self) -> Option<Control> {
        self.connect_with(plain_hello(), offering_docs(self.identity.device_id()))
            .await
    }

    async fn connect_with(
        &self,
        hello: wire::Hello,
        config: wire::ClusterConfig,
    ) -> Option<Control> {
        let connecting = try_handshake(&self.identity, self.a_id, self.port, hello, config);
        tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .ok()
            .flatten()
    }

    async fn run(&self, attack: Attack, round: usize) {
        let result = tokio::time::timeout(Duration::from_secs(20), self.attack(attack, round));
        if result.await.is_err() {
            eprintln!("soak: {attack:?} ran out of time");
        }
    }

    async fn attack(&self, attack: Attack, round: usize) {
        if matches!(attack, Attack::Flap) {
            for _ in 0..20 {
                if let Some((connection, ..)) = self.connect().await {
                    connection.close(0u32.into(), b"flap");
                }
            }
            return;
        }
        let (hello, config) = match attack {
            Attack::HugeHello => (
                wire::Hello {
                    device_name: "n".repeat(2 << 20),
                    client_name: "c".repeat(1 << 20),
                    client_version: "v".repeat(1 << 10),
                },
                offering_docs(self.identity.device_id()),
            ),
            Attack::OfferFlood => {
                let mut config = offering_docs(self.identity.device_id());
                config.folders.extend((0..300).map(|i| wire::Folder {
                    id: format!("offer-{round}-{i}"),
                    label: "L".repeat(8 << 10),
                    ..Default::default()
                }));
                (plain_hello(), config)
            }
            _ => (plain_hello(), offering_docs(self.identity.device_id())),
        };
        let Some((connection, mut tx, _rx, _buf)) = self.connect_with(hello, config).await else {
            return;
        };
        let announce = |files: Vec<wire::FileInfo>| {
            Body::IndexUpdate(wire::IndexUpdate {
                folder: "docs".into(),
                files,
            })
        };
        match attack {
            Attack::Silent => {
                let _server = serve_blocks(connection.clone(), |_| Answer::Silent);
                let files = (0..5)
                    .map(|i| entry(&format!("e-silent-{round}-{i}"), &noise(i, 200_000)))
                    .collect();
                let _ = try_send(&mut tx, announce(files)).await;
                hold(&connection, 12).await;
            }
            Attack::Trickle => {
                let _server = serve_blocks(connection.clone(), |_| Answer::Stalls {
                    size: 8 << 20,
                    sent: 4 << 20,
                });
                let files = (0..8)
                    .map(|i| large_blocks(&format!("e-trickle-{round}-{i}"), 8 << 20, 4))
                    .collect();
                let _ = try_send(&mut tx, announce(files)).await;
                hold(&connection, 12).await;
            }
            Attack::InvalidRequests => {
                for i in 0..150 {
                    let request = request(i, "../outside", 0, 10, [0; 32]);
                    if !ask(&connection, request).await {
                        break;
                    }
                }
            }
            Attack::ReadAmplification => {
                let mut asking = tokio::task::JoinSet::new();
                for i in 0..400u64 {
                    let hash = *blake3::hash(&i.to_le_bytes()).as_bytes();
                    let request = request(i, BIG, 0, 16 << 20, hash);
                    let connection = connection.clone();
                    asking.spawn(async move { ask(&connection, request).await });
                    if asking.len() >= 32 {
                        asking.join_next().await;
                    }
                }
                while asking.join_next().await.is_some() {}
            }
            Attack::OversizedRequests => {
                for _ in 0..20 {
                    let Ok((mut stream_tx, _stream_rx)) = connection.open_bi().await else {
                        break;
                    };
                    // A Request key, a 16 MiB length, then 1 MiB of it.
                    let mut frame = ((16u32 << 20) - 1).to_be_bytes().to_vec();
                    frame.push((5 << 3) | 2);
                    frame.resize(1 << 20, 0x55);
                    let _ = stream_tx.write_all(&frame).await;
                }
                hold(&connection, 3).await;
            }
            Attack::HugeHello | Attack::OfferFlood => hold(&connection, 2).await,
            Attack::BadEntries => {
                let suid_name = format!("e-suid-{round}");
                let suid_data = noise(1000 + round as u64, 3000);
                let _server = serve_blocks(
                    connection.clone(),
                    from_files(HashMap::from([(suid_name.clone(), suid_data.clone())])),
                );
                let mut suid = entry(&suid_name, &suid_data);
                suid.permissions = 0o4755;
                let mut poisoned = entry(&format!("e-poison-{round}"), b"poison");
                poisoned.version = Some(wire::Vector {
                    counters: vec![wire::Counter {
                        id: self.a_short,
                        value: u64::MAX,
                    }],
                });
                let files = vec![
                    suid,
                    poisoned,
                    entry("../escape", b"x"),
                    entry("a/../../escape", b"x"),
                    entry("nul\0name", b"x"),
                    entry(".peerfold/evil", b"x"),
                    entry(&format!("cafe\u{301}-{round}"), b"x"),
                ];
                let _ = try_send(&mut tx, announce(files)).await;
                hold(&connection, 5).await;
            }
            Attack::DropMidTransfer => {
                let name = format!("e-drop-{round}");
                let data = noise(2000 + round as u64, 2 << 20);
                let answers = Arc::new(Mutex::new(0usize));
                let files = from_files(HashMap::from([(name.clone(), data.clone())]));
                let _server = serve_blocks(connection.clone(), move |request| {
                    let mut answered = answers.lock().unwrap();
                    *answered += 1;
                    if *answered <= 3 {
                        files(request)
                    } else {
                        Answer::Silent
                    }
                });
                let _ = try_send(&mut tx, announce(vec![entry(&name, &data)])).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                connection.close(0u32.into(), b"gone");
            }
            Attack::Flap => unreachable!("handled above"),
        }
        connection.close(0u32.into(), b"next round");
    }
}

/// Waits `seconds`, or until the daemon closes the connection.
async fn hold(connection: &quinn::Connection, seconds: u64) {
    let _ = tokio::time::timeout(Duration::from_secs(seconds), connection.closed()).await;
}

fn request(id: u64, name: &str, offset: u64, size: u32, hash: [u8; 32]) -> wire::Request {
    wire::Request {
        id,
        folder: "docs".into(),
        name: name.into(),
        offset,
        size,
        hash: hash.to_vec(),
        skip: 0,
    }
}

/// Sends one block request on its own stream and reads the answer; false once the
/// connection is gone.
async fn ask(connection: &quinn::Connection, request: wire::Request) -> bool {
    let Ok((mut tx, mut rx)) = connection.open_bi().await else {
        return false;
    };
    if try_send(&mut tx, Body::Request(request)).await.is_err() {
        return false;
    }
    let _ = tx.finish();
    let mut buf = BytesMut::new();
    let answer = tokio::time::timeout(Duration::from_secs(10), next(&mut rx, &mut buf));
    matches!(answer.await, Ok(Some(_)))
}

/// An entry for `content` in blocks of 64 KiB, at version {99: 1}.
fn entry(name: &str, content: &[u8]) -> wire::FileInfo {
    file_entry(name, content, 64 << 10)
}

/// An entry of `count` blocks of `block` bytes that nobody has.
fn large_blocks(name: &str, block: usize, count: usize) -> wire::FileInfo {
    let mut info = entry(name, &[]);
    info.size = (block * count) as u64;
    info.blocks = (0..count)
        .map(|i| wire::BlockInfo {
            offset: (i * block) as u64,
            size: block as u32,
            hash: blake3::hash(format!("{name}/{i}").as_bytes())
                .as_bytes()
                .to_vec(),
        })
        .collect();
    info
}

/// b's honest files: name and content.
fn honest_file(i: usize) -> (String, Vec<u8>) {
    let len = 1000 + (i * 7919) % 7000;
    (
        format!("honest/{:02}/f-{i:04}", i % 50),
        noise(i as u64, len),
    )
}

/// Samples a's memory and REST latency until `stop`.
struct Watch {
    rss_kib: Vec<u64>,
    status: Vec<Duration>,
    db_status: Vec<Duration>,
}

fn watch(api: Api, pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Watch> {
    std::thread::spawn(move || {
        let mut watch = Watch {
            rss_kib: Vec::new(),
            status: Vec::new(),
            db_status: Vec::new(),
        };
        while !stop.load(Ordering::Relaxed) {
            watch.rss_kib.push(rss_kib(pid));
            let started = Instant::now();
            api.get("/rest/system/status");
            watch.status.push(started.elapsed());
            let started = Instant::now();
            api.get("/rest/db/status?folder=docs");
            watch.db_status.push(started.elapsed());
            std::thread::sleep(Duration::from_millis(200));
        }
        watch
    })
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Writes b's honest files in batches over `spread`, scanning after each.
fn write_honest(b: &Device, root: &Path, spread: Duration) {
    let per_batch = HONEST_FILES / BATCHES;
    for batch in 0..BATCHES {
        for i in batch * per_batch..(batch + 1) * per_batch {
            let (name, data) = honest_file(i);
            let path = root.join(&name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        }
        b.scan("docs");
        std::thread::sleep(spread / BATCHES as u32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_for_minutes_while_an_honest_one_syncs_1000_files() {
    let (a, b) = (Device::init(), Arc::new(Device::init()));
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    let evil = Identity::generate().unwrap();
    share_docs_with(&a, &evil);
    fs::write(root_b.join(BIG), noise(7, BIG_LEN)).unwrap();
    let [running_a, _running_b] = connect_devices(&a, &b);
    let a_id: DeviceId = a.id().parse().unwrap();
    let api = Api::of(&a, &running_a);
    let big_on_a = root_a.join(BIG);
    wait_until("b's big file reaches a", 60, || {
        fs::metadata(&big_on_a).is_ok_and(|m| m.len() == BIG_LEN as u64)
    });
    let before_kib = running_a.status_kib("VmRSS");
    let log_before = a.log().len();

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(api, running_a.pid(), stop.clone());
    let soak = soak_time();
    let writer = {
        let b = b.clone();
        std::thread::spawn(move || write_honest(&b, &b.path("docs"), soak * 2 / 3))
    };
    let hostile = Evil {
        a_short: a_id.short().0,
        identity: evil,
        a_id,
        port: running_a.port,
    };
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < soak {
        let attack = ATTACKS[round % ATTACKS.len()];
        hostile.run(attack, round).await;
        round += 1;
    }
    writer.join().unwrap();

    // Every honest file arrives intact.
    let check = (0..HONEST_FILES).map(honest_file).collect::<Vec<_>>();
    let root = root_a.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("all 1,000 honest files reach a intact", 120, || {
            check
                .iter()
                .all(|(name, data)| fs::read(root.join(name)).is_ok_and(|d| d == *data))
        });
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let watch = watcher.join().unwrap();

    let peak_kib = watch.rss_kib.iter().copied().max().unwrap_or(0);
    let grown_mib = peak_kib.saturating_sub(before_kib) / 1024;
    let log_grown = a.log().len() - log_before;
    eprintln!(
        "soak: {round} rounds in {:?}; RSS {} MiB before, peak {} MiB; status p50 {:?} p99 {:?} \
         max {:?}; db/status p50 {:?} p99 {:?} max {:?}; log grew {} KiB",
        started.elapsed(),
        before_kib / 1024,
        peak_kib / 1024,
        quantile(&watch.status, 0.5),
        quantile(&watch.status, 0.99),
        quantile(&watch.status, 1.0),
        quantile(&watch.db_status, 0.5),
        quantile(&watch.db_status, 0.99),
        quantile(&watch.db_status, 1.0),
        log_grown / 1024,
    );
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB");
    for (what, samples) in [("status", &watch.status), ("db/status", &watch.db_status)] {
        let p99 = quantile(samples, 0.99);
        assert!(p99 < Duration::from_millis(100), "{what} p99 {p99:?}");
    }
    // Nothing hostile was written: no escape, no setuid bit, no non-NFC name.
    assert!(!a.path("escape").exists());
    assert!(!root_a.join(".peerfold/evil").exists());
    for (name, what) in crate::support::tree(&root_a) {
        assert!(!name.contains('\u{301}'), "{name} written");
        if name.starts_with("e-suid-") && !name.contains(".peerfold.") {
            assert!(what.starts_with("file 755"), "{name}: {what}");
        }
    }
    let log = a.log();
    assert!(
        log.contains("too many invalid block requests"),
        "the flood was cut off"
    );
    assert!(log.contains("too slowly"), "the silent peer was cut off");
    drop(running_a);
}
