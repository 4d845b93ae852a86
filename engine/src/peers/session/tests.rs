//! The session over an in-memory link pair: two devices' owners, no sockets.

use std::collections::HashMap;
use std::time::Duration;

use peerfold_protocol::wire::{self, message::Body};

use crate::events::Event;
use crate::folder::Replan;
use crate::peers::connection::run_connection;
use crate::peers::link::{FramedStream, Link, memory_pair};
use crate::peers::{BlockError, BlockRequest, Peers, Reason};
use crate::store::StoreError;
use crate::testing::Node;

/// Two nodes sharing `docs` with each other.
pub(super) async fn pair() -> (Node, Node) {
    let a = Node::new(&[]);
    let b = Node::new(&[a.me]);
    a.know(b.me).await;
    (a, b)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn indexes_cross_and_blocks_are_served_then_the_link_ends_cleanly() {
    let (a, b) = pair().await;
    a.write_file("hello.txt", b"hello from a");
    let (link_a, link_b) = memory_pair();
    let (ca, cb) = (a.context.clone(), b.context.clone());
    let (me_a, me_b) = (a.me, b.me);
    let (la, lb) = (link_a.clone(), link_b.clone());
    let run_a = tokio::spawn(async move { run_connection(&ca, la, me_b, true).await });
    let run_b = tokio::spawn(async move { run_connection(&cb, lb, me_a, false).await });

    // B learns A's index.
    let idx_b = b.folder().idx;
    eventually("b holds a's entry", async || {
        b.context
            .store
            .read(move |r| r.remote_index_state(idx_b, me_a))
            .await
            .unwrap()
            .is_some_and(|(_, max)| max >= 1)
    })
    .await;
    let info = b.folder().file_info("hello.txt").await.unwrap().unwrap();
    let global = info.global.unwrap();
    assert_eq!(info.availability, vec![me_a]);
    assert!(info.local.is_none());

    // B asks A for the block through its registry, as the puller would.
    let request = BlockRequest {
        folder: "docs".into(),
        name: "hello.txt".into(),
        block: global.blocks[0],
        skip: 0,
    };
    let data = b
        .context
        .registry
        .request_block(me_a, &request)
        .await
        .unwrap();
    assert_eq!(&data.data[..], b"hello from a");
    // Skipping the start B holds: only the rest comes; all of it skipped is refused.
    let tail = BlockRequest {
        skip: 6,
        ..request.clone()
    };
    let data = b.context.registry.request_block(me_a, &tail).await.unwrap();
    assert_eq!(&data.data[..], b"from a");
    let nothing = BlockRequest {
        skip: request.block.size,
        ..request.clone()
    };
    assert!(matches!(
        b.context.registry.request_block(me_a, &nothing).await,
        Err(BlockError::Refused(_))
    ));
    // A block the index does not list is refused, not read.
    let mut wrong = request.clone();
    wrong.block.hash = blake3::hash(b"something else");
    assert!(matches!(
        b.context.registry.request_block(me_a, &wrong).await,
        Err(BlockError::Refused(_))
    ));
    let status = b.context.registry.status(me_a).unwrap();
    assert_eq!(status.client_name, "peerfold");

    // Both saw the other connect; closing ends both sessions and both forget the link.
    for node in [&a, &b] {
        assert!(
            node.events()
                .await
                .iter()
                .any(|e| matches!(**e, Event::DeviceConnected { .. }))
        );
    }
    link_a.close(&Reason::Shutdown);
    run_a.await.unwrap();
    run_b.await.unwrap();
    assert!(!b.context.registry.is_connected(me_a));
    assert!(matches!(
        b.context.registry.request_block(me_a, &request).await,
        Err(BlockError::PeerGone)
    ));
    assert!(
        b.events()
            .await
            .iter()
            .any(|e| matches!(**e, Event::DeviceDisconnected { .. }))
    );
}

/// A session replaced by a better link drops its index reader wherever it waits: a batch
/// it had begun to store is still stored, and its names still planned and the puller
/// woken (else the file waited for the next full plan, ten minutes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_begun_by_a_dropped_reader_is_still_stored_and_planned() {
    let (a, b) = pair().await;
    a.write_file("hello.txt", b"hello from a");
    let entry = a.folder().file_info("hello.txt").await.unwrap().unwrap();
    let update = wire::Message {
        body: Some(Body::IndexUpdate(wire::IndexUpdate {
            folder: "docs".into(),
            files: vec![entry.local.unwrap().to_wire()],
        })),
    };
    let (here, there) = tokio::io::duplex(1 << 16);
    let (read, write) = tokio::io::split(here);
    let mut reader = FramedStream::new(read, write, None).recv;
    let (read, write) = tokio::io::split(there);
    FramedStream::new(read, write, None)
        .send
        .send(&update)
        .await
        .unwrap();
    let folder = b.folder();
    let _ = folder.take_replan();
    // A permit left by the set-up would pass for the wake-up.
    let _ = tokio::time::timeout(Duration::from_millis(10), folder.pull.notified()).await;

    // B's writer is busy, so the batch waits to be stored when its reader is dropped.
    let (held, release) = std::sync::mpsc::channel::<()>();
    let store = b.context.store.clone();
    let holder = std::thread::spawn(move || {
        store.write_blocking(move |_| -> Result<(), StoreError> {
            let _ = release.recv();
            Ok(())
        })
    });
    let no_index_ids = HashMap::new();
    let receiving = super::index::receive(&b.context, a.me, &mut reader, &no_index_ids);
    tokio::select! {
        result = receiving => panic!("the reader ended with the link open: {result:?}"),
        () = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    held.send(()).unwrap();
    holder.join().unwrap().unwrap();

    tokio::time::timeout(Duration::from_secs(10), folder.pull.notified())
        .await
        .expect("the puller was woken for the batch");
    match folder.take_replan() {
        Replan::Names(names) => assert!(names.contains("hello.txt"), "{names:?}"),
        Replan::Everything => {}
    }
    let idx = folder.idx;
    let held_of_a = b
        .context
        .store
        .read(move |r| r.remote_index_state(idx, a.me))
        .await
        .unwrap();
    assert!(held_of_a.is_some_and(|(_, max)| max >= 1), "{held_of_a:?}");
}

#[tokio::test]
async fn an_unknown_device_is_recorded_as_pending_and_turned_away() {
    let a = Node::new(&[]);
    let stranger = Node::new(&[]);
    let (link, _far) = memory_pair();
    run_connection(&a.context, link.clone(), stranger.me, false).await;
    assert_eq!(
        link.close_reason().as_deref(),
        Some(Reason::UnknownDevice.to_string().as_str())
    );
    let pending = a.context.store.read(|r| r.pending_devices()).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].device, stranger.me);
    assert!(!a.context.registry.is_connected(stranger.me));
}

#[tokio::test]
async fn a_peer_that_sends_no_hello_is_dropped_after_the_handshake_timeout() {
    let (a, b) = pair().await;
    let (link, _silent) = memory_pair();
    tokio::time::pause();
    // A waits for B's control stream, which never comes.
    let run = run_connection(&a.context, link.clone(), b.me, false);
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the session gave up on its own");
    assert!(link.close_reason().unwrap().contains("handshake"));
}

#[test]
fn a_hello_is_kept_cut_short_at_a_character_boundary() {
    let kept = super::KeptHello::from(wire::Hello {
        device_name: "é".repeat(1_000_000),
        client_name: "peerfold".into(),
        client_version: format!("x{}", "é".repeat(100)),
    });
    assert_eq!(kept.device_name, "é".repeat(32));
    assert_eq!(kept.client_name, "peerfold");
    // 1 + 31 * 2 bytes: the 32nd "é" would end past 64.
    assert_eq!(kept.client_version, format!("x{}", "é".repeat(31)));
}
