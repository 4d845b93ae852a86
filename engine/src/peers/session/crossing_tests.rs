//! Two devices that dial each other at the same moment. Each side may register the two
//! links in either order, so one side can be asking for blocks over a link the other side
//! refuses; both must end on the same link, and no request may fail on the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::{Block, Chunker};
use tokio::task::JoinHandle;

use crate::peers::connection::run_connection;
use crate::peers::link::{Link, memory_pair};
use crate::peers::{BlockError, BlockRequest, Peers};
use crate::testing::Node;

/// Blocks of this file are asked for all the time, both ways.
const FILE: &str = "big.bin";

/// Asks `from` for every block of [`FILE`] over and over until `stop`; returns the
/// failures. Not connected yet (between rounds) and "ask again on the new link" are what
/// a puller handles by asking again; anything else is a request lost with its link.
fn keep_requesting(
    node: &Node,
    from: DeviceId,
    blocks: Arc<Vec<Block>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(usize, Vec<String>)> {
    let registry = node.context.registry.clone();
    tokio::spawn(async move {
        let (mut answered, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            for block in blocks.iter() {
                let request = BlockRequest {
                    folder: "docs".into(),
                    name: FILE.into(),
                    block: *block,
                    skip: 0,
                };
                match registry.request_block(from, &request).await {
                    Ok(data) => {
                        assert_eq!(blake3::hash(&data.data), block.hash);
                        answered += 1;
                    }
                    Err(BlockError::PeerGone | BlockError::Moved) => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
        }
        (answered, failures)
    })
}

async fn registered(node: &Node, peer: DeviceId, link: &Arc<impl Link>) {
    // Bounds the wait (10 s), it measures nothing: 2 s was once too short with the whole
    // unit suite running beside it on two cores.
    for _ in 0..2000 {
        if node
            .context
            .registry
            .link(peer)
            .is_some_and(|l| l.id() == link.id())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("link {} never registered", link.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_dials_settle_on_one_link_and_lose_no_request() {
    let (a, b) = super::tests::pair().await;
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    a.write_file(FILE, &data);
    b.write_file(FILE, &data);
    let blocks = Arc::new(Chunker::new().blocks(&data[..], data.len() as u64).unwrap());
    assert!(blocks.len() > 4, "several blocks, so requests overlap");
    let (low, high) = if a.me < b.me { (&a, &b) } else { (&b, &a) };
    let mut answered = [0, 0];

    // Each side registers the link the higher ID dialed (`by_high`, the loser of the
    // tie-break) first or second: all four orders, twice.
    for round in 0..8 {
        let (high_first, low_first) = (round & 1 == 0, round & 2 == 0);
        let (by_high_at_high, by_high_at_low) = memory_pair();
        let (by_low_at_low, by_low_at_high) = memory_pair();
        let attach = |node: &Node, link: Arc<dyn Link>, peer: DeviceId, dialed: bool| {
            let context = node.context.clone();
            tokio::spawn(async move { run_connection(&context, link, peer, dialed).await })
        };
        let mut sessions = Vec::new();
        // First links on both sides, and requests in flight over them...
        let (first_at_high, second_at_high) = if high_first {
            (by_high_at_high.clone(), by_low_at_high.clone())
        } else {
            (by_low_at_high.clone(), by_high_at_high.clone())
        };
        let (first_at_low, second_at_low) = if low_first {
            (by_high_at_low.clone(), by_low_at_low.clone())
        } else {
            (by_low_at_low.clone(), by_high_at_low.clone())
        };
        let dialed_by_high_at_high = |l: &Arc<_>| Arc::ptr_eq(l, &by_high_at_high);
        let dialed_by_low_at_low = |l: &Arc<_>| Arc::ptr_eq(l, &by_low_at_low);
        sessions.push(attach(
            high,
            first_at_high.clone(),
            low.me,
            dialed_by_high_at_high(&first_at_high),
        ));
        sessions.push(attach(
            low,
            first_at_low.clone(),
            high.me,
            dialed_by_low_at_low(&first_at_low),
        ));
        registered(high, low.me, &first_at_high).await;
        registered(low, high.me, &first_at_low).await;
        let stop = Arc::new(AtomicBool::new(false));
        let low_asks = keep_requesting(low, high.me, blocks.clone(), stop.clone());
        let high_asks = keep_requesting(high, low.me, blocks.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...then the second links, at the same moment.
        sessions.push(attach(
            high,
            second_at_high.clone(),
            low.me,
            dialed_by_high_at_high(&second_at_high),
        ));
        sessions.push(attach(
            low,
            second_at_low.clone(),
            high.me,
            dialed_by_low_at_low(&second_at_low),
        ));

        // Both keep the link the lower ID dialed; the other one closes once quiet.
        registered(high, low.me, &by_low_at_high).await;
        registered(low, high.me, &by_low_at_low).await;
        for _ in 0..400 {
            if by_high_at_high.close_reason().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reason = by_high_at_high.close_reason();
        assert!(
            matches!(
                reason.as_deref(),
                Some("duplicate connection" | "replaced by a better connection")
            ),
            "round {round}: the losing link ends cleanly, not {reason:?}"
        );
        assert!(by_low_at_low.close_reason().is_none(), "round {round}");
        // The kept link serves both ways; then it ends, for the next round.
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::Relaxed);
        for (side, asks) in [(0, low_asks), (1, high_asks)] {
            let (got, failures) = asks.await.unwrap();
            answered[side] += got;
            assert!(
                failures.is_empty(),
                "round {round}, {}: {} requests failed, e.g. {:?}",
                ["low", "high"][side],
                failures.len(),
                &failures[..failures.len().min(3)]
            );
        }
        by_low_at_low.close(&crate::peers::Reason::Shutdown);
        for session in sessions {
            session.await.unwrap();
        }
        assert!(!low.context.registry.is_connected(high.me));
        assert!(!high.context.registry.is_connected(low.me));
    }
    assert!(
        answered.iter().all(|&n| n > 0),
        "blocks crossed both ways: {answered:?}"
    );
}
