//! Peers that are slow to answer block requests, or never do (issue 10, items 1 and 2),
//! against a real daemon: they delay only their own blocks, pin little memory, and are
//! disconnected when they keep it up.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::api::Api;
use crate::support::noise;
use crate::wire_peer::{
    file_entry, handshake, handshake_keeping_buffer, next, send, serving_docs_to,
};
use crate::wire_server::{Answer, from_files, serve_blocks};

/// Polls `condition` every 100 ms until it holds; fails the test with `what` after `seconds`.
async fn eventually(what: &str, seconds: u64, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_delays_only_its_own_blocks_and_is_disconnected() {
    let evil = Identity::generate().unwrap();
    let honest = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil, &honest]);
    let root = a.path("docs");
    let big = noise(1, 256 << 10);
    let theirs = noise(2, 10_000);

    // The silent peer offers big.bin, which the honest one has too, and files only it has.
    let (e_conn, mut e_tx, mut e_rx, mut e_buf) =
        handshake_keeping_buffer(&evil, a_id, running.port).await;
    let e_asked = serve_blocks(e_conn.clone(), |_| Answer::Silent);
    let mut files = vec![file_entry("big.bin", &big, 64 << 10)];
    files.extend((0..3).map(|i| file_entry(&format!("only-e-{i}"), &noise(10 + i, 5000), 4096)));
    send(
        &mut e_tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files,
        }),
    )
    .await;
    // What the daemon announces to the silent peer, as it goes.
    let announced = Arc::new(Mutex::new(HashSet::new()));
    let watcher = {
        let announced = announced.clone();
        tokio::spawn(async move {
            while let Some(message) = next(&mut e_rx, &mut e_buf).await {
                if let Some(Body::Index(wire::Index { files, .. }))
                | Some(Body::IndexUpdate(wire::IndexUpdate { files, .. })) = message.body
                {
                    announced
                        .lock()
                        .unwrap()
                        .extend(files.into_iter().map(|f| f.name));
                }
            }
        })
    };
    eventually("the daemon asks the silent peer for big.bin", 20, || {
        e_asked.was_asked("big.bin")
    })
    .await;

    // Meanwhile a local change is scanned (by the watcher) and announced.
    fs::write(root.join("local.txt"), b"made here").unwrap();
    eventually("local.txt is announced while a request hangs", 30, || {
        announced.lock().unwrap().contains("local.txt")
    })
    .await;

    // The honest peer comes: its own file arrives, and big.bin comes from it.
    let (h_conn, mut h_tx, _h_rx) = handshake(&honest, a_id, running.port).await;
    let h_asked = serve_blocks(
        h_conn.clone(),
        from_files(HashMap::from([
            ("big.bin".to_owned(), big.clone()),
            ("theirs.txt".to_owned(), theirs.clone()),
        ])),
    );
    send(
        &mut h_tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files: vec![
                file_entry("big.bin", &big, 64 << 10),
                file_entry("theirs.txt", &theirs, 4096),
            ],
        }),
    )
    .await;
    eventually("the honest peer's file arrives", 20, || {
        fs::read(root.join("theirs.txt")).is_ok_and(|d| d == theirs)
    })
    .await;
    eventually("big.bin arrives from the honest peer", 60, || {
        fs::read(root.join("big.bin")).is_ok_and(|d| d == big)
    })
    .await;
    assert!(h_asked.was_asked("big.bin"));

    // The silent peer still owes its own files: a few slow windows, and it is cut off.
    let reason = tokio::time::timeout(Duration::from_secs(60), e_conn.closed())
        .await
        .expect("the daemon disconnects the silent peer");
    assert!(reason.to_string().contains("too slowly"), "{reason}");
    assert!(a.log().contains("too slowly"), "the log says why");
    assert!(!root.join("only-e-0").exists());
    watcher.abort();
    h_conn.close(0u32.into(), b"done");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_inside_large_answers_pins_little_memory() {
    const BLOCK: usize = 8 << 20;
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let api = Api::of(&a, &running);
    let (e_conn, mut e_tx, _e_rx) = handshake(&evil, a_id, running.port).await;
    // Every answer starts as an 8 MiB block, sends 4 MiB of it, and stops.
    let asked = serve_blocks(e_conn.clone(), |_| Answer::Stalls {
        size: BLOCK,
        sent: 4 << 20,
    });
    let before = running.status_kib("VmRSS");
    // 16 files of four 8 MiB blocks each: 64 requests could be in flight at once.
    let files = (0..16)
        .map(|i| {
            let mut info = file_entry(&format!("big-{i}"), &[], BLOCK);
            info.size = 4 * BLOCK as u64;
            info.blocks = (0..4)
                .map(|b| wire::BlockInfo {
                    offset: (b * BLOCK) as u64,
                    size: BLOCK as u32,
                    hash: blake3::hash(&[i as u8, b as u8]).as_bytes().to_vec(),
                })
                .collect();
            info
        })
        .collect();
    send(
        &mut e_tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files,
        }),
    )
    .await;
    eventually("the daemon asks for blocks", 20, || asked.requests() > 0).await;
    // Watch for a while: memory stays bounded and the REST API answers.
    let mut slowest = Duration::ZERO;
    let watch_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < watch_until {
        let started = Instant::now();
        let status = api.get("/rest/system/status");
        slowest = slowest.max(started.elapsed());
        assert!(status["myID"].is_string());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let peak = running.status_kib("VmHWM");
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "RSS before {} MiB, peak {} MiB; {} requests; slowest status {slowest:?}",
        before / 1024,
        peak / 1024,
        asked.requests()
    );
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB");
    assert!(slowest < Duration::from_secs(1), "status took {slowest:?}");
    e_conn.close(0u32.into(), b"done");
    drop(running);
}
