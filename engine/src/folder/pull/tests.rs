//! The pull round against fake peers: one that refuses, one that sends bad hashes, one
//! that vanishes mid-file, and an honest one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Chunker;
use peerfold_protocol::version::VersionVector;

use super::{PullContext, Puller, Replan, plan};
use crate::model::entry::{FileEntry, FileKind, Timestamp};
use crate::peers::{BlockData, BlockError, BlockRequest, Peers, Reason};
use crate::testing::Node;

const PEER: DeviceId = DeviceId::from_bytes([7; 32]);

/// How a fake peer answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    Refuses,
    BadHashes,
    /// Answers this many requests, then is gone.
    VanishesAfter(usize),
    /// Its connection moves under each request this many times before it is answered.
    MovesUnderEach(usize),
}

struct FakePeer {
    content: Vec<u8>,
    behaviour: Behaviour,
    asked: AtomicUsize,
    gone: AtomicBool,
    /// Moves so far, by block offset.
    moved: Mutex<HashMap<u64, usize>>,
}

impl FakePeer {
    fn new(content: &[u8], behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            content: content.to_vec(),
            behaviour,
            asked: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            moved: Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl Peers for FakePeer {
    async fn request_block(
        &self,
        device: DeviceId,
        request: &BlockRequest,
    ) -> Result<BlockData, BlockError> {
        assert_eq!(device, PEER);
        if self.gone.load(Ordering::Relaxed) {
            return Err(BlockError::PeerGone);
        }
        let asked = self.asked.fetch_add(1, Ordering::Relaxed);
        let block = request.block;
        let data = &self.content[block.offset as usize..][..block.size as usize];
        match self.behaviour {
            Behaviour::Honest => Ok(Bytes::copy_from_slice(data).into()),
            Behaviour::Refuses => Err(BlockError::Refused(3)),
            Behaviour::BadHashes => Ok(Bytes::from(vec![0u8; data.len()]).into()),
            Behaviour::VanishesAfter(n) if asked < n => Ok(Bytes::copy_from_slice(data).into()),
            Behaviour::VanishesAfter(_) => {
                self.gone.store(true, Ordering::Relaxed);
                Err(BlockError::PeerGone)
            }
            Behaviour::MovesUnderEach(n) => {
                let mut moved = self.moved.lock().unwrap();
                let count = moved.entry(block.offset).or_default();
                *count += 1;
                if *count <= n {
                    Err(BlockError::Moved)
                } else {
                    Ok(Bytes::copy_from_slice(data).into())
                }
            }
        }
    }

    fn is_connected(&self, _device: DeviceId) -> bool {
        !self.gone.load(Ordering::Relaxed)
    }

    fn disconnect(&self, _device: DeviceId, _reason: Reason) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

/// A node whose peer announced `big.bin` with `content` (many blocks).
fn node_offered(content: &[u8]) -> Node {
    let node = Node::new(&[PEER]);
    let blocks = Chunker::new()
        .blocks(content, content.len() as u64)
        .unwrap();
    assert!(blocks.len() > 4, "the test needs a file of several blocks");
    let entry = FileEntry {
        name: "big.bin".into(),
        kind: FileKind::File,
        size: content.len() as u64,
        permissions: 0o644,
        modified: Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
        deleted: false,
        invalid: false,
        sequence: 1,
        version: VersionVector::new().incremented(PEER.short(), 1).unwrap(),
        modified_by: PEER.short(),
        symlink_target: String::new(),
        blocks,
    };
    let idx = node.folder().idx;
    node.context
        .store
        .write_blocking(|s| s.apply_remote_index(idx, PEER, 1, &[entry]))
        .map_err(|e: crate::store::StoreError| e)
        .unwrap();
    node
}

/// One whole-folder pull of the node's `docs` folder against `peers` (every page of the
/// walk, a round each), settled.
pub(super) async fn pull_once(node: &Node, peers: Arc<dyn Peers>) {
    let folder = node.folder();
    let context = PullContext {
        peers,
        folders: node.context.folders.clone(),
    };
    let mut puller = Puller::new(folder.clone(), context);
    let mut after = None;
    loop {
        let planned = plan(&folder, Replan::Names(Default::default()), Some(after))
            .await
            .unwrap();
        after = planned.next.clone();
        puller.round(planned).await;
        puller.settle().await;
        if after.is_none() {
            break;
        }
    }
}

fn content() -> Vec<u8> {
    // About 1 MiB of noise: 64 KiB blocks on average.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_honest_peer_brings_the_file_and_it_is_recorded() {
    let data = content();
    let node = node_offered(&data);
    pull_once(&node, FakePeer::new(&data, Behaviour::Honest)).await;
    assert_eq!(std::fs::read(node.root().join("big.bin")).unwrap(), data);
    assert!(node.folder().pull_errors().is_empty());
    let info = node.folder().file_info("big.bin").await.unwrap().unwrap();
    assert_eq!(info.local.unwrap().version, info.global.unwrap().version);
}

#[tokio::test(start_paused = true)]
async fn requests_follow_a_connection_that_moves_under_them() {
    // Three moves under every request (a relayed link replaced by a punched one, that one
    // by the peer's own dial...) used up all three tries of a block, and the file waited
    // for the next pull.
    let data = content();
    let node = node_offered(&data);
    pull_once(&node, FakePeer::new(&data, Behaviour::MovesUnderEach(3))).await;
    assert!(node.folder().pull_errors().is_empty());
    assert_eq!(std::fs::read(node.root().join("big.bin")).unwrap(), data);
}

#[tokio::test(start_paused = true)]
async fn a_refusing_peer_leaves_no_file_and_a_reported_error() {
    let data = content();
    let node = node_offered(&data);
    pull_once(&node, FakePeer::new(&data, Behaviour::Refuses)).await;
    assert!(!node.root().join("big.bin").exists());
    let errors = node.folder().pull_errors();
    assert!(
        errors["big.bin"].contains("no peer could provide"),
        "{errors:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn blocks_that_fail_their_hash_are_never_written() {
    let data = content();
    let node = node_offered(&data);
    let liar = FakePeer::new(&data, Behaviour::BadHashes);
    pull_once(&node, liar.clone()).await;
    assert!(liar.asked.load(Ordering::Relaxed) > 0);
    assert!(!node.root().join("big.bin").exists());
    assert!(node.folder().pull_errors().contains_key("big.bin"));
    // Nothing of the bad data reached the temp file either.
    let temp = node.root().join(".peerfold.big.bin.tmp");
    assert_eq!(std::fs::metadata(&temp).map_or(0, |m| m.len()), 0);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_vanishes_mid_file_costs_only_the_blocks_it_did_not_send() {
    let data = content();
    let node = node_offered(&data);
    let blocks = node
        .folder()
        .file_info("big.bin")
        .await
        .unwrap()
        .unwrap()
        .global
        .unwrap()
        .blocks
        .len();
    let first = FakePeer::new(&data, Behaviour::VanishesAfter(3));
    pull_once(&node, first.clone()).await;
    assert!(!node.root().join("big.bin").exists());
    assert!(node.folder().pull_errors().contains_key("big.bin"));
    // The next round, with a peer that stays, completes the file from the temp file plus
    // what is still missing.
    let second = FakePeer::new(&data, Behaviour::Honest);
    pull_once(&node, second.clone()).await;
    assert_eq!(std::fs::read(node.root().join("big.bin")).unwrap(), data);
    let asked_again = second.asked.load(Ordering::Relaxed);
    assert!(
        asked_again < blocks,
        "blocks that arrived before the peer vanished are kept ({asked_again} of {blocks} asked again)"
    );
    assert!(!node.root().join(".peerfold.big.bin.tmp").exists());
}

#[tokio::test]
async fn a_name_brought_to_the_front_is_fetched_first_once() {
    let node = Node::new(&[PEER]);
    let folder = node.folder();
    let fetch = |name: &str| crate::model::planner::Action::Fetch {
        target: FileEntry {
            name: name.into(),
            kind: FileKind::File,
            size: 1,
            permissions: 0o644,
            modified: Timestamp::default(),
            deleted: false,
            invalid: false,
            sequence: 1,
            version: VersionVector::new().incremented(PEER.short(), 1).unwrap(),
            modified_by: PEER.short(),
            symlink_target: String::new(),
            blocks: Vec::new(),
        },
        sources: vec![PEER],
    };
    let names = |actions: &[crate::model::planner::Action]| -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| a.name().map(str::to_owned))
            .collect()
    };
    folder.prioritize("c");
    folder.prioritize("b");
    let mut actions = vec![fetch("a"), fetch("b"), fetch("c"), fetch("d")];
    folder.put_first(&mut actions);
    assert_eq!(
        names(&actions),
        ["b", "c", "a", "d"],
        "the latest asked for first"
    );
    // Started now, so the next round keeps the planner's order.
    let mut again = vec![fetch("a"), fetch("b"), fetch("c"), fetch("d")];
    folder.put_first(&mut again);
    assert_eq!(names(&again), ["a", "b", "c", "d"]);
}
