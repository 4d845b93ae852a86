//! Names that change kind under a pull: a directory the peer replaced by a file goes only
//! once empty, and what no peer deleted in it keeps it (never removed recursively).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Chunker;

use super::tests::pull_once;
use crate::model::entry::{FileEntry, FileKind};
use crate::peers::{BlockData, BlockError, BlockRequest, Peers, Reason};
use crate::testing::Node;

const PEER: DeviceId = DeviceId::from_bytes([9; 32]);

/// A peer that has every file of `files` (name -> content).
struct Holds(HashMap<String, Vec<u8>>);

#[async_trait::async_trait]
impl Peers for Holds {
    async fn request_block(
        &self,
        _device: DeviceId,
        request: &BlockRequest,
    ) -> Result<BlockData, BlockError> {
        let data = self.0.get(&request.name).ok_or(BlockError::Refused(2))?;
        let block = request.block;
        Ok(Bytes::copy_from_slice(&data[block.offset as usize..][..block.size as usize]).into())
    }

    fn is_connected(&self, _device: DeviceId) -> bool {
        true
    }

    fn disconnect(&self, _device: DeviceId, _reason: Reason) {}
}

/// The peer's next version of the local entry `name`: `kind` with `content`, or deleted.
async fn peer_replaces(node: &Node, name: &str, kind: FileKind, content: Option<&[u8]>) {
    let folder = node.folder();
    let local = folder
        .file_info(name)
        .await
        .unwrap()
        .unwrap()
        .local
        .unwrap();
    let mut entry = FileEntry {
        kind,
        deleted: content.is_none(),
        version: local.version.incremented(PEER.short(), 1).unwrap(),
        modified_by: PEER.short(),
        blocks: Vec::new(),
        size: 0,
        ..local
    };
    if let Some(data) = content.filter(|_| kind == FileKind::File) {
        entry.blocks = Chunker::new().blocks(data, data.len() as u64).unwrap();
        entry.size = data.len() as u64;
    }
    let idx = folder.idx;
    node.context
        .store
        .write_blocking(|s| s.apply_remote_index(idx, PEER, 1, &[entry]))
        .map_err(|e: crate::store::StoreError| e)
        .unwrap();
}

#[tokio::test]
async fn a_directory_replaced_by_a_file_keeps_what_no_peer_deleted() {
    let node = Node::new(&[PEER]);
    let root = node.root();
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/known"), b"known to the peer").unwrap();
    assert!(node.folder().scan().await.unwrap());
    // The peer deleted d/known and made d a file; meanwhile d/unknown appeared here,
    // not scanned yet (so no peer could have deleted it).
    peer_replaces(&node, "d/known", FileKind::File, None).await;
    peer_replaces(&node, "d", FileKind::File, Some(b"d is a file")).await;
    std::fs::write(root.join("d/unknown"), b"new here").unwrap();
    let peer: Arc<dyn Peers> = Arc::new(Holds(HashMap::from([(
        "d".to_owned(),
        b"d is a file".to_vec(),
    )])));

    pull_once(&node, peer.clone()).await;
    let versions = root.join(".peerfold/versions");
    assert_eq!(
        std::fs::read(versions.join("d/known")).unwrap(),
        b"known to the peer",
        "the deleted file is kept"
    );
    assert_eq!(
        std::fs::read(root.join("d/unknown")).unwrap(),
        b"new here",
        "what no peer deleted stays where it is"
    );
    let errors = node.folder().pull_errors();
    assert!(errors["d"].contains("still holds files"), "{errors:?}");
    // Once that file is gone (moved away by its owner), the directory makes way.
    std::fs::rename(root.join("d/unknown"), node.root().join("../unknown")).unwrap();
    pull_once(&node, peer).await;
    assert_eq!(std::fs::read(root.join("d")).unwrap(), b"d is a file");
    assert!(node.folder().pull_errors().is_empty());
}

#[tokio::test]
async fn a_file_replaced_by_a_directory_or_a_symlink_is_kept() {
    let node = Node::new(&[PEER]);
    let root = node.root();
    node.write_file("x", b"x was a file");
    node.write_file("s", b"s was a file");
    peer_replaces(&node, "x", FileKind::Directory, Some(b"")).await;
    let folder = node.folder();
    let mut link = folder.file_info("s").await.unwrap().unwrap().local.unwrap();
    link.kind = FileKind::Symlink;
    link.symlink_target = "x".into();
    link.blocks.clear();
    link.size = 0;
    link.version = link.version.incremented(PEER.short(), 1).unwrap();
    let idx = folder.idx;
    node.context
        .store
        .write_blocking(|s| s.apply_remote_index(idx, PEER, 1, &[link]))
        .map_err(|e: crate::store::StoreError| e)
        .unwrap();

    pull_once(&node, Arc::new(Holds(HashMap::new()))).await;
    assert!(
        node.folder().pull_errors().is_empty(),
        "{:?}",
        node.folder().pull_errors()
    );
    assert!(root.join("x").is_dir());
    assert!(
        std::fs::symlink_metadata(root.join("s"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let versions = root.join(".peerfold/versions");
    assert_eq!(std::fs::read(versions.join("x")).unwrap(), b"x was a file");
    assert_eq!(std::fs::read(versions.join("s")).unwrap(), b"s was a file");
}
