//! Block lists sent as changes (`BlockListDelta`), played at the wire level against a real
//! daemon: the daemon announces a large file's list as a change to what the peer announced,
//! takes the peer's changes and rebuilds exactly the file they describe, and when a change
//! names an entry of its own that has moved on, it ends the session and asks for the index
//! again from that entry on.

use std::fs;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Chunker;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::api::Api;
use crate::support::wait_until;
use crate::wire_peer::{
    Control, next, offering_docs, plain_hello, send, serving_docs_to, try_handshake,
};
use crate::wire_server::{Answer, serve_blocks};

/// `len` bytes that differ for each `seed`.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

/// The blocks every device cuts `data` into.
fn cut(data: &[u8]) -> Vec<wire::BlockInfo> {
    let mut blocks = Vec::new();
    Chunker::new()
        .chunk(data, data.len() as u64, |b| {
            blocks.push(wire::BlockInfo {
                offset: b.offset,
                size: b.size,
                hash: b.hash.as_bytes().to_vec(),
            });
        })
        .unwrap();
    blocks
}

/// `evil`'s entry for `name` with `data`, at its counter `value` and sequence `sequence`.
fn file(evil: &Identity, name: &str, data: &[u8], value: u64, sequence: u64) -> wire::FileInfo {
    let me = evil.device_id().short().0;
    wire::FileInfo {
        name: name.into(),
        kind: wire::FileKind::File as i32,
        size: data.len() as u64,
        permissions: 0o644,
        modified_s: 1_700_000_000 + value as i64,
        sequence,
        version: Some(wire::Vector {
            counters: vec![wire::Counter { id: me, value }],
        }),
        blocks: cut(data),
        modified_by: me,
        ..Default::default()
    }
}

/// What names a base list in a change: BLAKE3 over each block's size (u32, little-endian)
/// and hash.
fn digest(blocks: &[wire::BlockInfo]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    for block in blocks {
        hasher.update(&block.size.to_le_bytes());
        hasher.update(&block.hash);
    }
    hasher.finalize().as_bytes().to_vec()
}

/// The ClusterConfig of a peer that takes block lists as changes.
fn taking_deltas(evil: &Identity) -> wire::ClusterConfig {
    wire::ClusterConfig {
        block_list_deltas: true,
        ..offering_docs(evil.device_id())
    }
}

/// Connects to the daemon at `port` as `evil`, a peer that takes block lists as changes.
async fn connect_taking_deltas(evil: &Identity, a_id: DeviceId, port: u16) -> Control {
    connect_with_index(evil, a_id, port, 1).await
}

/// Like [`connect_taking_deltas`], with the peer's own index under `index_id` (a new one
/// says it was rebuilt).
async fn connect_with_index(evil: &Identity, a_id: DeviceId, port: u16, index_id: u64) -> Control {
    let mut config = taking_deltas(evil);
    config.folders[0].devices[0].index_id = index_id;
    try_handshake(evil, a_id, port, plain_hello(), config)
        .await
        .expect("the daemon completes the handshake")
}

/// The daemon's next announcement of `name` that `wanted` accepts (within 30 s).
async fn announcement(
    rx: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    name: &str,
    wanted: impl Fn(&wire::FileInfo) -> bool,
) -> wire::FileInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(left, next(rx, buf))
            .await
            .unwrap_or_else(|_| panic!("the daemon announces {name:?} as expected in time"))
            .expect("the control stream stays open");
        let files = match message.body {
            Some(Body::Index(index)) => index.files,
            Some(Body::IndexUpdate(update)) => update.files,
            _ => continue,
        };
        if let Some(info) = files.into_iter().find(|f| f.name == name && wanted(f)) {
            return info;
        }
    }
}

/// Waits until the daemon's file at `path` holds `data`, then for its announcement of it:
/// the peer's list of the entry at `sequence`, given whole as a change to that entry, with
/// no block of its own.
async fn installed_and_echoed(
    rx: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    path: &std::path::Path,
    data: &[u8],
    (sequence, blocks): (u64, &[wire::BlockInfo]),
) -> wire::FileInfo {
    tokio::task::block_in_place(|| {
        wait_until("the peer's version arrives", 60, || {
            fs::read(path).is_ok_and(|d| d == data)
        })
    });
    let name = path.file_name().unwrap().to_str().unwrap();
    let installed = announcement(rx, buf, name, |f| f.size == data.len() as u64).await;
    let delta = installed
        .blocks_delta
        .clone()
        .expect("announced as a change");
    assert_eq!(delta.base_sequence, sequence, "based on the peer's entry");
    assert_eq!(delta.base_digest, digest(blocks));
    assert_eq!(
        (delta.kept_prefix as usize, delta.kept_suffix),
        (blocks.len(), 0)
    );
    assert!(
        installed.blocks.is_empty(),
        "{} blocks",
        installed.blocks.len()
    );
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_travel_as_changes_to_the_block_list_both_ways() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let (connection, mut tx, mut rx, mut buf) =
        connect_taking_deltas(&evil, a_id, running.port).await;

    // Version 2 changes a few bytes in the middle and appends 200 KiB: with content-defined
    // blocks, most of version 1's blocks stay.
    let first = noise("v1", 3 << 20);
    let mut second = first.clone();
    second[1_500_000..1_500_100].copy_from_slice(&noise("edit", 100));
    second.extend_from_slice(&noise("tail", 200 << 10));
    let versions = [first.clone(), second.clone()];
    // Serves whichever version holds the requested block.
    let _server = serve_blocks(connection.clone(), move |request: &wire::Request| {
        let found = versions.iter().find_map(|data| {
            let start = usize::try_from(request.offset).ok()?;
            let block = data.get(start..start.checked_add(request.size as usize)?)?;
            (blake3::hash(block).as_bytes().as_slice() == request.hash).then_some(block)
        });
        match found {
            Some(block) => Answer::Data(Bytes::copy_from_slice(&block[request.skip as usize..])),
            None => Answer::Refuse(wire::ErrorCode::NoSuchFile),
        }
    });

    let v1 = file(&evil, "big.bin", &first, 1, 1);
    let v1_blocks = v1.blocks.clone();
    assert!(
        v1_blocks.len() >= 32,
        "a file of many blocks: {}",
        v1_blocks.len()
    );
    let body = wire::Index {
        folder: "docs".into(),
        files: vec![v1],
    };
    send(&mut tx, Body::Index(body)).await;
    let path = a.path("docs").join("big.bin");
    // The daemon announces what it installed: the list the peer sent, so all of it as a
    // change to the peer's entry, and no block at all.
    let installed = installed_and_echoed(&mut rx, &mut buf, &path, &first, (1, &v1_blocks)).await;

    // The peer's version 2 as a change to the daemon's entry: a few new blocks.
    let mut v2 = file(&evil, "big.bin", &second, 2, 2);
    let whole = v2.blocks.clone();
    let prefix = whole
        .iter()
        .zip(cut(&first))
        .take_while(|(a, b)| a.hash == b.hash)
        .count();
    assert!(
        prefix > v1_blocks.len() / 3,
        "the edit keeps the blocks before it"
    );
    v2.blocks.drain(..prefix);
    v2.blocks_delta = Some(wire::BlockListDelta {
        base_sequence: installed.sequence,
        kept_prefix: prefix as u32,
        kept_suffix: 0,
        base_digest: digest(&v1_blocks),
    });
    let body = wire::IndexUpdate {
        folder: "docs".into(),
        files: vec![v2],
    };
    send(&mut tx, Body::IndexUpdate(body)).await;
    installed_and_echoed(&mut rx, &mut buf, &path, &second, (2, &whole)).await;
    // What the daemon recorded is the whole list.
    let api = Api::of(&a, &running);
    let recorded =
        tokio::task::block_in_place(|| api.get("/rest/db/file?folder=docs&file=big.bin"));
    assert_eq!(recorded["local"]["numBlocks"], whole.len(), "{recorded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_an_entry_that_moved_on_ends_the_session_and_comes_again() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let (connection, mut tx, _rx, _buf) = connect_taking_deltas(&evil, a_id, running.port).await;
    let mut stale = file(&evil, "big.bin", &noise("big", 1 << 20), 1, 2);
    stale.blocks.drain(..4);
    stale.blocks_delta = Some(wire::BlockListDelta {
        base_sequence: 77,
        kept_prefix: 4,
        ..Default::default()
    });
    let files = vec![
        file(&evil, "before.txt", b"before", 1, 1),
        stale,
        file(&evil, "after.txt", b"after", 1, 3),
    ];
    let body = wire::Index {
        folder: "docs".into(),
        files,
    };
    send(&mut tx, Body::Index(body)).await;
    let reason = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the daemon ends the session");
    assert!(reason.to_string().contains("has changed since"), "{reason}");

    // Only what came before the stale change is held, and the daemon says so: the peer
    // sends the rest again from there.
    let api = Api::of(&a, &running);
    tokio::task::block_in_place(|| {
        let held = |name: &str| {
            let (status, _) = api.call("GET", &format!("/rest/db/file?folder=docs&file={name}"));
            status == 200
        };
        assert!(held("before.txt"));
        assert!(!held("big.bin") && !held("after.txt"));
    });
    let (_connection, _tx, mut rx, mut buf) =
        connect_taking_deltas(&evil, a_id, running.port).await;
    let config = loop {
        match next(&mut rx, &mut buf).await.expect("a ClusterConfig").body {
            Some(Body::ClusterConfig(config)) => break config,
            _ => continue,
        }
    };
    let held = config.folders[0]
        .devices
        .iter()
        .find(|d| d.id == evil.device_id().as_bytes())
        .expect("the peer's index is listed");
    assert_eq!(held.max_sequence, 1, "the index is asked for again after 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_new_index_gets_whole_lists() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let (connection, mut tx, mut rx, mut buf) =
        connect_taking_deltas(&evil, a_id, running.port).await;
    let data = noise("v1", 2 << 20);
    let served = data.clone();
    let _server = serve_blocks(connection.clone(), move |request: &wire::Request| {
        let start = request.offset as usize;
        Answer::Data(Bytes::copy_from_slice(
            &served[start + request.skip as usize..start + request.size as usize],
        ))
    });
    let entry = file(&evil, "big.bin", &data, 1, 1);
    let blocks = entry.blocks.clone();
    let body = wire::Index {
        folder: "docs".into(),
        files: vec![entry],
    };
    send(&mut tx, Body::Index(body)).await;
    let path = a.path("docs").join("big.bin");
    installed_and_echoed(&mut rx, &mut buf, &path, &data, (1, &blocks)).await;
    connection.close(0u32.into(), b"rebuilt");

    // The peer lost its index: what the daemon holds of the old one names lists the peer
    // no longer has, so the file goes out whole.
    let (_connection, _tx, mut rx, mut buf) =
        connect_with_index(&evil, a_id, running.port, 2).await;
    let whole = announcement(&mut rx, &mut buf, "big.bin", |_| true).await;
    assert!(whole.blocks_delta.is_none(), "{:?}", whole.blocks_delta);
    assert_eq!(whole.blocks, blocks);
}
