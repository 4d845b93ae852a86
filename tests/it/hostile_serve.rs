//! The serving side against a hostile peer (issue 10 items 2, 3 and 8): what its block
//! requests cost the daemon in CPU, memory and streams, and what its handshake frames cost
//! in log. Measured on the real process through /proc.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::api::Api;
use crate::support::{Device, Running, noise, wait_until};
use crate::wire_peer::{
    connect, handshake_keeping_buffer, next, offering_docs, plain_hello, send, share_docs_with,
    try_handshake_on, try_send,
};

/// The file whose blocks are asked for.
const BIG: &str = "big.bin";
/// What the daemon may grow by (issue 10: one hostile peer, at most 64 MiB).
const RSS_GROWTH_LIMIT: u64 = 64 << 20;

/// A device sharing "docs" (holding `BIG` with `content`) with each of `peers`, running.
fn target_for(peers: &[&Identity], content: &[u8]) -> (Device, Running, DeviceId) {
    let a = Device::init();
    let root = a.add_folder("docs", "docs");
    fs::write(root.join(BIG), content).unwrap();
    for peer in peers {
        share_docs_with(&a, peer);
    }
    let running = a.serve();
    let a_id = a.id().parse().unwrap();
    (a, running, a_id)
}

/// The blocks of `name` as the daemon announces them on the control stream.
async fn announced_blocks(
    rx: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    name: &str,
) -> Vec<wire::BlockInfo> {
    let wait = async {
        loop {
            let files = match next(rx, buf)
                .await
                .expect("the control stream stays open")
                .body
            {
                Some(Body::Index(index)) => index.files,
                Some(Body::IndexUpdate(update)) => update.files,
                _ => continue,
            };
            if let Some(file) = files.into_iter().find(|f| f.name == name) {
                return file.blocks;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the daemon announces the file")
}

/// The process serving `device`'s home (found through /proc: its environment names the home).
fn daemon_pid(device: &Device) -> u32 {
    let home = format!("PEERFOLD_HOME={}", device.home().display());
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmdline), Ok(environ)) = (
            fs::read(entry.path().join("cmdline")),
            fs::read(entry.path().join("environ")),
        ) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).nth(1) == Some(b"serve")
            && environ.split(|b| *b == 0).any(|v| v == home.as_bytes())
        {
            return pid;
        }
    }
    panic!("no peerfold serve process for {home}");
}

/// User + system CPU time the process used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A `Vm*` line of /proc/PID/status, in bytes.
fn vm(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Resets the process's peak resident size to its current one; returns that.
fn reset_peak(pid: u32) -> u64 {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    vm(pid, "VmRSS:")
}

fn request(id: u64, name: &str, offset: u64, size: u32, hash: Vec<u8>) -> Body {
    Body::Request(wire::Request {
        id,
        folder: "docs".into(),
        name: name.into(),
        offset,
        size,
        hash,
        skip: 0,
    })
}

/// Sends each request on its own stream, all at once, and collects the answers' codes
/// (`None`: no answer, the stream or the connection ended).
async fn ask_all(connection: &quinn::Connection, requests: Vec<Body>) -> Vec<Option<i32>> {
    let mut tasks = tokio::task::JoinSet::new();
    for body in requests {
        let connection = connection.clone();
        tasks.spawn(async move {
            let (mut tx, mut rx) = connection.open_bi().await.ok()?;
            try_send(&mut tx, body).await.ok()?;
            let _ = tx.finish();
            match next(&mut rx, &mut BytesMut::new()).await?.body {
                Some(Body::Response(r)) => Some(r.code),
                _ => None,
            }
        });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_blocks_the_index_does_not_list_cost_no_disk_reads() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = target_for(&[&evil], &noise(3, 17 << 20));
    let (connection, _tx, mut rx, mut buf) =
        handshake_keeping_buffer(&evil, a_id, running.port).await;
    announced_blocks(&mut rx, &mut buf, BIG).await;
    let pid = daemon_pid(&a);
    let (rss, cpu) = (reset_peak(pid), cpu_time(pid));

    // 1,024 requests of 30-odd bytes, each for a 16 MiB "block" with a random hash.
    let huge = |i: u64| request(i, BIG, 0, 16 << 20, noise(1000 + i, 32));
    let codes = ask_all(&connection, (0..1024).map(huge).collect()).await;
    let (cpu, growth) = (cpu_time(pid) - cpu, vm(pid, "VmHWM:").saturating_sub(rss));
    let no_such_file = Some(wire::ErrorCode::NoSuchFile as i32);
    let refused = codes.iter().filter(|c| **c == no_such_file).count();
    assert!(
        cpu < Duration::from_secs(2) && growth < RSS_GROWTH_LIMIT,
        "1,024 refused requests took {cpu:?} of CPU and grew the daemon by {} MiB",
        growth >> 20
    );
    // A burst this size is what a peer pulling several files that change under it may
    // cause: refused, not cut off.
    assert_eq!(refused, 1024, "every request is refused, none cut off");

    // Refusals are counted: a peer that goes on is disconnected.
    let (mut more, mut refused) = (1024, refused);
    while connection.close_reason().is_none() && more < 16 * 1024 {
        let codes = ask_all(&connection, (0..1024).map(|i| huge(more + i)).collect()).await;
        more += 1024;
        refused += codes.iter().filter(|c| **c == no_such_file).count();
        if codes.iter().any(Option::is_none) {
            break;
        }
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the daemon closes the connection");
    assert!(
        reason
            .to_string()
            .contains("too many refused block requests"),
        "{reason}"
    );
    assert!(a.log().contains("too many refused block requests"));
    eprintln!(
        "1,024 requests for 16 MiB blocks: {cpu:?} of CPU, {} KiB of peak growth; \
         disconnected after {refused} refusals",
        growth >> 10
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_its_answers_pins_a_bounded_budget() {
    let (evil, honest) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    // Zeros hold no cut point: every block is as large as the file's class allows.
    let (a, running, a_id) = target_for(&[&evil, &honest], &vec![0u8; 64 << 20]);
    // A peer whose QUIC stack takes 4 KiB per stream and whose application reads 1 byte.
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(4096u32.into());
    let connection = connect(&evil, a_id, running.port, transport).await;
    let (_tx, mut rx, mut buf) =
        try_handshake_on(&connection, plain_hello(), offering_docs(evil.device_id()))
            .await
            .expect("the daemon completes the handshake");
    let blocks = announced_blocks(&mut rx, &mut buf, BIG).await;
    let block = blocks[1].clone();
    assert!(block.size >= 256 << 10, "blocks of {} bytes", block.size);
    let pid = daemon_pid(&a);
    let rss = reset_peak(pid);

    let started = Arc::new(AtomicUsize::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..256u64 {
        let (connection, started) = (connection.clone(), started.clone());
        let body = request(i, BIG, block.offset, block.size, block.hash.clone());
        streams.spawn(async move {
            let (mut tx, mut rx) = connection.open_bi().await.unwrap();
            send(&mut tx, body).await;
            let _ = tx.finish();
            let mut first = [0u8; 1];
            if rx.read_exact(&mut first).await.is_ok() {
                started.fetch_add(1, Ordering::SeqCst);
            }
            // Keep the stream, never read again.
            std::future::pending::<()>().await;
        });
    }
    // The serving budget is the link's send window: its floor (1 MiB) on loopback, 16 MiB
    // at most whatever round trip the handshake measured (peers/flow.rs); a larger block
    // takes all of it.
    let at_most = ((16usize << 20) / block.size as usize).max(1);
    poll_until("the first answers start", 20, || {
        started.load(Ordering::SeqCst) >= 1
    })
    .await;
    // Every answer the daemon would read at once is read by now (they come from the page
    // cache); watch a few seconds more, well inside the 30 s a stalled answer is kept.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = vm(pid, "VmHWM:").saturating_sub(rss);
    let answering = started.load(Ordering::SeqCst);
    let budgeted = answering;
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "256 unread answers grew the daemon by {} MiB ({answering} answers started)",
        growth >> 20
    );
    assert!(
        answering <= at_most,
        "{answering} answers started; the budget holds {at_most} at most"
    );
    eprintln!(
        "256 unread answers of {} KiB: {} MiB of peak growth, {answering} started",
        block.size >> 10,
        growth >> 20
    );

    // The daemon still answers its API and other peers.
    let api = Api::of(&a, &running);
    let status = tokio::task::spawn_blocking(move || {
        let asked = Instant::now();
        let status = api.get("/rest/system/status");
        (status, asked.elapsed())
    })
    .await
    .unwrap();
    assert!(status.0["myID"].is_string(), "{}", status.0);
    assert!(
        status.1 < Duration::from_secs(1),
        "REST took {:?}",
        status.1
    );
    let (other, _otx, _orx, _) = handshake_keeping_buffer(&honest, a_id, running.port).await;
    let other = ask_block(&other, &blocks[2]).await;
    assert_eq!(other.map(|r| r.code), Some(0), "an honest peer is served");

    // An answer that makes no progress for 30 s is dropped and its budget goes on.
    poll_until("stalled answers make room", 50, || {
        started.load(Ordering::SeqCst) > budgeted
    })
    .await;
    streams.abort_all();
    drop(running);
}

/// One request on its own stream; the daemon's answer.
async fn ask_block(
    connection: &quinn::Connection,
    block: &wire::BlockInfo,
) -> Option<wire::Response> {
    let (mut tx, mut rx) = connection.open_bi().await.ok()?;
    send(
        &mut tx,
        request(7, BIG, block.offset, block.size, block.hash.clone()),
    )
    .await;
    let _ = tx.finish();
    match next(&mut rx, &mut BytesMut::new()).await?.body {
        Some(Body::Response(r)) => Some(r),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_streams_take_small_frames_and_end_when_silent() {
    let evil = Identity::generate().unwrap();
    let (_a, running, a_id) = target_for(&[&evil], b"some content");
    let (connection, _tx, _rx) = crate::wire_peer::handshake(&evil, a_id, running.port).await;

    // A Request frame of 1 MiB (a valid Request is some 100 bytes) gets no answer.
    let name = "n".repeat(1 << 20);
    let (mut tx, mut rx) = connection.open_bi().await.unwrap();
    send(&mut tx, request(1, &name, 0, 10, vec![0; 32])).await;
    let _ = tx.finish();
    let answer = tokio::time::timeout(Duration::from_secs(10), next(&mut rx, &mut BytesMut::new()))
        .await
        .expect("the daemon ends the stream");
    assert!(
        answer.is_none(),
        "a 1 MiB request frame was read: {answer:?}"
    );

    // A stream that never delivers its Request is ended.
    let (mut tx, mut rx) = connection.open_bi().await.unwrap();
    tx.write_all(&[0, 0]).await.unwrap();
    let began = Instant::now();
    let end =
        tokio::time::timeout(Duration::from_secs(20), next(&mut rx, &mut BytesMut::new())).await;
    assert!(
        matches!(end, Ok(None)),
        "a silent request stream is still open after {:?}",
        began.elapsed()
    );
    assert!(connection.close_reason().is_none(), "the connection stays");
    drop(running);
}

/// Polls `condition` (in async code) until it holds; fails with `what` after `seconds`.
async fn poll_until(what: &str, seconds: u64, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One frame a peer may send first on the control stream, as raw bytes.
fn frame(body: Body) -> BytesMut {
    let mut buf = BytesMut::new();
    peerfold_protocol::framing::FrameCodec::default()
        .encode(&wire::Message { body: Some(body) }, &mut buf)
        .unwrap();
    buf
}

fn hello(device_name: String, client_name: String, client_version: String) -> Body {
    Body::Hello(wire::Hello {
        device_name,
        client_name,
        client_version,
    })
}

/// A ClusterConfig of about 3 MB: a 2 MB label, and names and addresses of its device.
fn cluster_config(peer: DeviceId, id: &str) -> Body {
    Body::ClusterConfig(wire::ClusterConfig {
        folders: vec![wire::Folder {
            id: id.into(),
            label: "é".repeat(1 << 20),
            devices: vec![wire::FolderDevice {
                id: peer.as_bytes().to_vec(),
                name: "d".repeat(500_000),
                addresses: vec!["a".repeat(500_000)],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn small_cluster_config(peer: DeviceId) -> Body {
    Body::ClusterConfig(wire::ClusterConfig {
        folders: vec![wire::Folder {
            id: "docs".into(),
            devices: vec![wire::FolderDevice {
                id: peer.as_bytes().to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// About 4 MB of text, a peer's name or label.
fn big_text() -> String {
    "é".repeat(1_900_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_frames_of_4_mb_grow_the_log_by_a_few_kib() {
    const CASES: usize = 8;
    let peers: Vec<Identity> = (0..CASES).map(|_| Identity::generate().unwrap()).collect();
    let (a, running, a_id) = target_for(&peers.iter().collect::<Vec<_>>(), b"x");
    let api = Arc::new(Api::of(&a, &running));
    let (mut grown, mut kept) = (Vec::new(), Vec::new());
    for (case, peer) in peers.iter().enumerate() {
        let id = peer.device_id();
        let (first, then, connects): (BytesMut, Option<Body>, bool) = match case {
            0 => (frame(hello(big_text(), "c".into(), "v".into())), None, true),
            1 => (frame(hello("n".into(), big_text(), "v".into())), None, true),
            2 => (frame(hello("n".into(), "c".into(), big_text())), None, true),
            3 => (
                frame(hello("n".into(), "c".into(), "v".into())),
                Some(cluster_config(id, "offered")),
                true,
            ),
            4 => (frame(cluster_config(id, "docs")), None, false),
            5 => {
                let files = (0..60)
                    .map(|i| wire::FileInfo {
                        name: format!("{i}{}", "f".repeat(60_000)),
                        ..Default::default()
                    })
                    .collect();
                let index = Body::Index(wire::Index {
                    folder: "docs".into(),
                    files,
                });
                (frame(index), None, false)
            }
            6 => (
                frame(request(1, &big_text(), 0, 1, vec![0; 32])),
                None,
                false,
            ),
            _ => {
                // Not protobuf at all: a length header and 4 MB of noise.
                let junk = noise(7, 4_000_000);
                let mut raw = BytesMut::new();
                raw.put_u32(junk.len() as u32);
                raw.extend_from_slice(&junk);
                (raw, None, false)
            }
        };
        let before = a.log().len();
        let connection = connect(peer, a_id, running.port, quinn::TransportConfig::default()).await;
        let (mut tx, mut rx) = connection.open_bi().await.unwrap();
        tx.write_all(&first).await.unwrap();
        match then {
            Some(body) => send(&mut tx, body).await,
            None if connects => send(&mut tx, small_cluster_config(id)).await,
            None => {}
        }
        assert!(matches!(
            next(&mut rx, &mut BytesMut::new())
                .await
                .and_then(|m| m.body),
            Some(Body::Hello(_))
        ));
        if connects {
            // The daemon took the Hello: the connection is listed with what it kept of it.
            let api = api.clone();
            let short = id.to_string();
            let listed = tokio::task::spawn_blocking(move || {
                let mut listed = serde_json::Value::Null;
                wait_until("the peer is listed as connected", 20, || {
                    listed = api.get("/rest/system/connections")["connections"][&short].clone();
                    listed["connected"] == true && listed["clientVersion"] != ""
                });
                listed
            })
            .await
            .unwrap();
            kept.push(listed["clientVersion"].as_str().unwrap_or_default().len());
            if case == 3 {
                let a = &a;
                tokio::task::block_in_place(|| {
                    wait_until("the offer is recorded", 20, || {
                        a.log().contains("offers a folder")
                    })
                });
            }
            connection.close(0u32.into(), b"done");
        } else {
            let reason = tokio::time::timeout(Duration::from_secs(15), connection.closed())
                .await
                .expect("the daemon closes the connection");
            assert!(!reason.to_string().is_empty());
        }
        let short = id.short().to_string();
        tokio::task::block_in_place(|| {
            wait_until("the daemon logs the end of the connection", 20, || {
                a.log()[before..].lines().any(|l| {
                    l.contains(&short) && (l.contains("disconnected") || l.contains("ended"))
                })
            })
        });
        grown.push(a.log().len() - before);
    }
    eprintln!("log growth per case (bytes): {grown:?}; client versions kept: {kept:?}");
    // All cases measured first, so a failure shows every one.
    assert!(
        grown.iter().all(|g| *g < 8 << 10) && kept.iter().all(|k| *k <= 64),
        "log growth per case (bytes): {grown:?}; client versions kept (bytes): {kept:?}"
    );
    drop(running);
}
