//! A file that grew at its end: the block the old end falls in is asked for past what this
//! device holds of it, and put together and checked whole; a peer that sends the whole
//! block anyway (it predates `skip`) is fine too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Chunker;

use super::tests::pull_once;
use crate::model::entry::FileEntry;
use crate::peers::{BlockData, BlockError, BlockRequest, Peers, Reason};
use crate::testing::Node;

const PEER: DeviceId = DeviceId::from_bytes([8; 32]);

/// A peer with `content`, counting the bytes it sends and the requests that skipped some.
struct Grown {
    content: Vec<u8>,
    honours_skip: bool,
    sent: AtomicU64,
    skipping: AtomicU64,
}

#[async_trait::async_trait]
impl Peers for Grown {
    async fn request_block(
        &self,
        _device: DeviceId,
        request: &BlockRequest,
    ) -> Result<BlockData, BlockError> {
        let block = request.block;
        let mut from = block.offset as usize;
        if self.honours_skip {
            from += request.skip as usize;
        }
        if request.skip > 0 {
            self.skipping.fetch_add(1, Ordering::Relaxed);
        }
        let data = &self.content[from..block.offset as usize + block.size as usize];
        self.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(Bytes::copy_from_slice(data).into())
    }

    fn is_connected(&self, _device: DeviceId) -> bool {
        true
    }

    fn disconnect(&self, _device: DeviceId, _reason: Reason) {}
}

fn noise(len: usize, seed: &[u8]) -> Vec<u8> {
    let mut data = vec![0; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut data);
    data
}

/// The node has `old` as `big.bin`; the peer announces `new` as its next version.
fn grown(node: &Node, old: &[u8], new: &[u8]) {
    node.write_file("big.bin", old);
    let idx = node.folder().idx;
    let local: FileEntry = node
        .context
        .store
        .read_blocking(|r| r.local_entry(idx, "big.bin"))
        .map_err(|e: crate::store::StoreError| e)
        .unwrap()
        .unwrap();
    let entry = FileEntry {
        size: new.len() as u64,
        blocks: Chunker::new().blocks(new, new.len() as u64).unwrap(),
        version: local.version.incremented(PEER.short(), 1).unwrap(),
        modified_by: PEER.short(),
        sequence: 1,
        ..local
    };
    node.context
        .store
        .write_blocking(|s| s.apply_remote_index(idx, PEER, 1, &[entry]))
        .map_err(|e: crate::store::StoreError| e)
        .unwrap();
}

#[tokio::test]
async fn an_append_fetches_only_what_was_appended_and_a_peer_that_sends_more_is_fine() {
    for honours_skip in [true, false] {
        let node = Node::new(&[PEER]);
        let old = noise(3 << 20, b"old");
        let mut new = old.clone();
        new.extend_from_slice(&noise(1 << 20, b"appended"));
        grown(&node, &old, &new);
        let peer = Arc::new(Grown {
            content: new.clone(),
            honours_skip,
            sent: AtomicU64::new(0),
            skipping: AtomicU64::new(0),
        });
        pull_once(&node, peer.clone()).await;
        assert_eq!(std::fs::read(node.root().join("big.bin")).unwrap(), new);
        assert_eq!(
            peer.skipping.load(Ordering::Relaxed),
            1,
            "one block skips its start"
        );
        let appended = (new.len() - old.len()) as u64;
        let sent = peer.sent.load(Ordering::Relaxed);
        if honours_skip {
            assert_eq!(sent, appended, "only the appended bytes crossed");
        } else {
            assert!(sent > appended, "the whole grown block came, and was taken");
        }
    }
}
