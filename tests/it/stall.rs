//! Issue 9 item 4: no runtime thread of the daemon ever waits on the store.
//!
//! A rescan of 150,000 small files runs while four clients loop on
//! `GET /rest/cluster/pending/devices` (which reads the store) and a peer asks for blocks.
//! `GET /rest/system/status` touches no store and block serving must not wait for a scan:
//! both must keep answering promptly for the whole scan. When a scan holds the store's
//! writer for its whole run and handlers lock it on the runtime's worker threads, every
//! worker ends up parked on that lock and the daemon stops answering anything for seconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::api::Api;
use crate::support::{Device, noise, wait_until};
use crate::wire_peer::{handshake_keeping_buffer, next, try_send};

const DIRS: usize = 150;
const FILES_PER_DIR: usize = 1000;
const SMALL_FILES: usize = DIRS * FILES_PER_DIR;
const SMALL_SIZE: usize = 512;
/// The file whose blocks the peer asks for.
const BIG: &str = "big.bin";
const BIG_SIZE: usize = 4 << 20;

/// What the measure allows.
const STATUS_P99_LIMIT: Duration = Duration::from_millis(100);
const BLOCK_WAIT_LIMIT: Duration = Duration::from_secs(1);
const MIN_BLOCKS_ANSWERED: usize = 20;
/// Between one client's `GET /rest/cluster/pending/devices` requests.
const PENDING_PAUSE: Duration = Duration::from_millis(5);
/// A shorter scan would measure nothing.
const MIN_WINDOW: Duration = Duration::from_secs(2);

/// Writes (or rewrites with new content) the 150,000 small files, on two threads.
fn write_small_files(root: &Path, round: u64) {
    std::thread::scope(|s| {
        for part in 0..2 {
            s.spawn(move || {
                for d in (part..DIRS).step_by(2) {
                    let dir = root.join(format!("d{d:03}"));
                    fs::create_dir_all(&dir).unwrap();
                    for f in 0..FILES_PER_DIR {
                        let seed = (round << 32) | (d * FILES_PER_DIR + f) as u64;
                        fs::write(dir.join(format!("f{f:04}")), noise(seed, SMALL_SIZE)).unwrap();
                    }
                }
            });
        }
    });
}

/// Where the folder goes: on a RAM file system when `/dev/shm` has room (creating, then
/// deleting, 150,000 files takes over a minute on some disks), else in the device's own
/// temp directory. Returns the temp directory to remove, if any, and the folder root.
fn folder_root(device: &Device) -> (Option<tempfile::TempDir>, PathBuf) {
    let room = std::process::Command::new("df")
        .args(["--output=avail", "-B1", "/dev/shm"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .and_then(|line| line.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    if room >= 4 << 30
        && let Ok(dir) = tempfile::tempdir_in("/dev/shm")
    {
        let root = dir.path().join("docs");
        fs::create_dir(&root).unwrap();
        return (Some(dir), root);
    }
    let root = device.path("docs");
    fs::create_dir(&root).unwrap();
    (None, root)
}

/// One timed request: when it started, how long it took, whether it was answered right.
struct Sample {
    at: Instant,
    took: Duration,
    outcome: Result<(), String>,
}

impl Sample {
    fn ended(&self) -> Instant {
        self.at + self.took
    }
}

/// A GET with the API key, timed; never panics.
fn timed_get(api: &Api, path: &str) -> Sample {
    let at = Instant::now();
    let request = ureq::http::Request::builder()
        .method("GET")
        .uri(format!("{}{path}", api.base))
        .header("X-API-Key", &api.key)
        .body(())
        .unwrap();
    let outcome = match api.agent.run(request) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let _ = response.body_mut().read_to_string();
            if status == 200 {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    Sample {
        at,
        took: at.elapsed(),
        outcome,
    }
}

/// Asks the daemon for one block of `BIG` on its own stream and checks the answer.
async fn request_block(
    connection: &quinn::Connection,
    id: u64,
    block: &wire::BlockInfo,
) -> Result<(), String> {
    let (mut tx, mut rx) = connection.open_bi().await.map_err(|e| e.to_string())?;
    try_send(
        &mut tx,
        Body::Request(wire::Request {
            id,
            folder: "docs".into(),
            name: BIG.into(),
            offset: block.offset,
            size: block.size,
            hash: block.hash.clone(),
            skip: 0,
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let _ = tx.finish();
    match next(&mut rx, &mut BytesMut::new()).await {
        Some(wire::Message {
            body: Some(Body::Response(r)),
        }) => {
            if r.code != wire::ErrorCode::None as i32 {
                Err(format!("error code {}", r.code))
            } else if r.id != id {
                Err(format!("answer for request {} to request {id}", r.id))
            } else if r.data.len() != block.size as usize {
                Err(format!(
                    "{} bytes for a block of {}",
                    r.data.len(),
                    block.size
                ))
            } else if blake3::hash(&r.data).as_bytes().as_slice() != block.hash.as_slice() {
                Err(format!("data at {} fails its hash", block.offset))
            } else {
                Ok(())
            }
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The `q` quantile (nearest rank) of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What the peer saw of the daemon's index on the control stream.
#[derive(Default)]
struct SeenIndex {
    files: usize,
    big_blocks: Option<Vec<wire::BlockInfo>>,
}

#[test]
fn a_rescan_stalls_neither_the_rest_api_nor_block_serving() {
    let test_started = Instant::now();
    let peer = Identity::generate().unwrap();
    let peer_id = peer.device_id().to_string();
    let device = Device::init();
    let (ram_dir, root) = folder_root(&device);
    device.ok([
        "folder",
        "add",
        "--id",
        "docs",
        "--path",
        root.to_str().unwrap(),
    ]);
    println!("stall: the folder is at {}", root.display());
    device.ok(["device", "add", &peer_id]);
    device.ok(["folder", "share", "docs", &peer_id]);

    let t = Instant::now();
    write_small_files(&root, 0);
    let big = noise(u64::MAX, BIG_SIZE);
    fs::write(root.join(BIG), &big).unwrap();
    println!(
        "stall: wrote {SMALL_FILES} files of {SMALL_SIZE} B and one of {BIG_SIZE} B in {:.1?}",
        t.elapsed()
    );

    let t = Instant::now();
    let running = device.serve();
    let api = Api::of(&device, &running);
    wait_until("the initial scan indexed every file", 180, || {
        let status = api.get("/rest/db/status?folder=docs");
        status["localFiles"] == SMALL_FILES + 1 && status["state"] == "idle"
    });
    println!("stall: initial scan done after {:.1?}", t.elapsed());

    // The peer: connected at the wire level, reading the daemon's index batches.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let device_id: DeviceId = device.id().parse().unwrap();
    let t = Instant::now();
    let (connection, _control_tx, mut control_rx, mut buf) =
        rt.block_on(handshake_keeping_buffer(&peer, device_id, running.port));
    let seen = Arc::new(Mutex::new(SeenIndex::default()));
    rt.spawn({
        let seen = seen.clone();
        async move {
            while let Some(message) = next(&mut control_rx, &mut buf).await {
                let files = match message.body {
                    Some(Body::Index(index)) => index.files,
                    Some(Body::IndexUpdate(update)) => update.files,
                    _ => continue,
                };
                let mut seen = seen.lock().unwrap();
                for file in files {
                    if file.kind == wire::FileKind::File as i32 && !file.deleted {
                        seen.files += 1;
                    }
                    if file.name == BIG {
                        seen.big_blocks = Some(file.blocks);
                    }
                }
            }
        }
    });
    wait_until("the peer received the whole index", 120, || {
        seen.lock().unwrap().files > SMALL_FILES
    });
    let blocks = seen
        .lock()
        .unwrap()
        .big_blocks
        .clone()
        .expect("big.bin announced");
    assert_eq!(
        blocks.iter().map(|b| u64::from(b.size)).sum::<u64>(),
        BIG_SIZE as u64,
        "big.bin's blocks cover it"
    );
    println!(
        "stall: the peer has the index after {:.1?}; big.bin has {} blocks",
        t.elapsed(),
        blocks.len()
    );

    // The peer asks for big.bin's blocks one after the other until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let requester = rt.spawn({
        let (connection, stop) = (connection.clone(), stop.clone());
        async move {
            let mut samples = Vec::new();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let block = &blocks[id as usize % blocks.len()];
                let at = Instant::now();
                let outcome = tokio::time::timeout(
                    Duration::from_secs(20),
                    request_block(&connection, id, block),
                )
                .await
                .unwrap_or_else(|_| Err("no answer in 20 s".into()));
                samples.push(Sample {
                    at,
                    took: at.elapsed(),
                    outcome,
                });
                id += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        }
    });

    let t = Instant::now();
    write_small_files(&root, 1);
    println!(
        "stall: rewrote the {SMALL_FILES} small files in {:.1?}",
        t.elapsed()
    );

    // The measured window: from the rewrite until `POST /rest/db/scan` returns, which it
    // does when the folder's scan is done (it waits for one the watcher started).
    let (pending_done, pending_longest) = (AtomicU64::new(0), AtomicU64::new(0));
    let (window_start, window_end, status_samples) = std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let sample = timed_get(&api, "/rest/cluster/pending/devices");
                    if sample.outcome.is_ok() {
                        pending_done.fetch_add(1, Ordering::Relaxed);
                    }
                    pending_longest.fetch_max(sample.took.as_micros() as u64, Ordering::Relaxed);
                    // Short enough that a request is nearly always in flight, long enough
                    // that a daemon answering at once does not turn this into a CPU test.
                    std::thread::sleep(PENDING_PAUSE);
                }
            });
        }
        let sampler = s.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(timed_get(&api, "/rest/system/status"));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        let window_start = Instant::now();
        let scan = s.spawn(|| {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .build()
                .into();
            let request = ureq::http::Request::builder()
                .method("POST")
                .uri(format!("{}/rest/db/scan?folder=docs", api.base))
                .header("X-API-Key", &api.key)
                .body(())
                .unwrap();
            let mut response = agent.run(request).expect("POST /rest/db/scan");
            let body = response.body_mut().read_to_string().unwrap_or_default();
            (response.status().as_u16(), body)
        });
        let scanned = scan.join();
        let window_end = Instant::now();
        // Every other thread stops on this, even when the scan call failed.
        stop.store(true, Ordering::Relaxed);
        let (status, body) = scanned.expect("POST /rest/db/scan");
        assert_eq!(status, 200, "POST /rest/db/scan: {body}");
        (window_start, window_end, sampler.join().unwrap())
    });
    let block_samples = rt.block_on(requester).unwrap();
    let window = window_end - window_start;
    let in_window = |s: &&Sample| s.at >= window_start && s.at < window_end;

    let mut status: Vec<Duration> = status_samples
        .iter()
        .filter(in_window)
        .map(|s| s.took)
        .collect();
    status.sort();
    let status_failed: Vec<&String> = status_samples
        .iter()
        .filter(in_window)
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    let (p50, p99, max) = (
        quantile(&status, 0.5),
        quantile(&status, 0.99),
        quantile(&status, 1.0),
    );

    let asked: Vec<&Sample> = block_samples.iter().filter(in_window).collect();
    let answered = block_samples
        .iter()
        .filter(|s| s.outcome.is_ok() && s.ended() >= window_start && s.ended() <= window_end)
        .count();
    let block_errors: Vec<&String> = asked
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    let mut block_waits: Vec<Duration> = asked.iter().map(|s| s.took).collect();
    block_waits.sort();

    println!("stall: the rescan took {window:.1?} (the measured window)");
    println!(
        "stall: GET /rest/system/status during the scan: {} samples, p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}, {} failed",
        status.len(),
        status_failed.len()
    );
    println!(
        "stall: GET /rest/cluster/pending/devices (4 clients): {} answered, longest wait {:.1?}",
        pending_done.load(Ordering::Relaxed),
        Duration::from_micros(pending_longest.load(Ordering::Relaxed))
    );
    println!(
        "stall: block requests during the scan: {} asked, {answered} answered, {} wrong or failed, wait p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        asked.len(),
        block_errors.len(),
        quantile(&block_waits, 0.5),
        quantile(&block_waits, 0.99),
        quantile(&block_waits, 1.0),
    );

    // Clean up before judging, so a failure does not leave a busy daemon to wait for.
    connection.close(0u32.into(), b"done");
    drop(rt);
    let t = Instant::now();
    running.stop();
    println!("stall: daemon stopped in {:.1?}", t.elapsed());
    let t = Instant::now();
    drop(ram_dir);
    drop(device);
    println!("stall: folder removed in {:.1?}", t.elapsed());
    println!("stall: test ran {:.1?}", test_started.elapsed());

    assert!(
        window >= MIN_WINDOW,
        "the rescan took only {window:.1?}: too short to show a stall"
    );
    assert!(
        status_failed.is_empty(),
        "GET /rest/system/status failed during the scan: {status_failed:?}"
    );
    assert!(
        p99 < STATUS_P99_LIMIT,
        "GET /rest/system/status stalled during a {window:.1?} scan: p99 {p99:.1?} (limit {STATUS_P99_LIMIT:?}), p50 {p50:.1?}, max {max:.1?}, {} samples",
        status.len()
    );
    assert!(
        block_errors.is_empty(),
        "block requests during the scan got wrong or no answers: {block_errors:?}"
    );
    assert!(
        answered >= MIN_BLOCKS_ANSWERED,
        "only {answered} block requests answered during a {window:.1?} scan (at least {MIN_BLOCKS_ANSWERED} expected)"
    );
    let longest = quantile(&block_waits, 1.0);
    assert!(
        longest <= BLOCK_WAIT_LIMIT,
        "a block request waited {longest:.1?} during the scan (limit {BLOCK_WAIT_LIMIT:?}); {answered} of {} answered",
        asked.len()
    );
}
