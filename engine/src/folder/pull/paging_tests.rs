//! The pull loop walks a whole-folder plan page by page (`PLAN_PAGE` is 3 in tests): a
//! folder that needs many names gets all of them, and a directory whose contents span
//! pages is deleted once they are gone, without a failed attempt on the way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Chunker;
use peerfold_protocol::version::VersionVector;

use super::{PullContext, pull_loop};
use crate::events::Event;
use crate::folder::FolderState;
use crate::model::entry::{FileEntry, FileKind, Timestamp};
use crate::peers::{BlockData, BlockError, BlockRequest, Peers, Reason};
use crate::testing::Node;

const PEER: DeviceId = DeviceId::from_bytes([9; 32]);

/// A peer that serves each file's blocks by name.
struct FilesPeer(HashMap<String, Vec<u8>>);

#[async_trait::async_trait]
impl Peers for FilesPeer {
    async fn request_block(
        &self,
        _device: DeviceId,
        request: &BlockRequest,
    ) -> Result<BlockData, BlockError> {
        let content = self.0.get(&request.name).ok_or(BlockError::Refused(2))?;
        let block = request.block;
        let data = &content[block.offset as usize..][..block.size as usize];
        Ok(Bytes::copy_from_slice(data).into())
    }

    fn is_connected(&self, _device: DeviceId) -> bool {
        true
    }

    fn disconnect(&self, _device: DeviceId, _reason: Reason) {}
}

fn entry(name: &str, kind: FileKind, content: &[u8], version: u64, sequence: u64) -> FileEntry {
    let blocks = if kind == FileKind::File {
        Chunker::new()
            .blocks(content, content.len() as u64)
            .unwrap()
    } else {
        Vec::new()
    };
    FileEntry {
        name: name.into(),
        kind,
        size: content.len() as u64,
        permissions: if kind == FileKind::Directory {
            0o755
        } else {
            0o644
        },
        modified: Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
        deleted: false,
        invalid: false,
        sequence,
        version: VersionVector::new()
            .incremented(PEER.short(), version)
            .unwrap(),
        modified_by: PEER.short(),
        symlink_target: String::new(),
        blocks,
    }
}

/// Polls `done` every 20 ms for up to 30 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 30 s");
}

#[tokio::test]
async fn a_folder_needing_many_pages_is_pulled_whole_and_a_directory_spanning_pages_is_deleted() {
    let node = Node::new(&[PEER]);
    let folder = node.folder();
    let idx = folder.idx;
    let names: Vec<String> = (0..7).map(|i| format!("d/f{i}")).collect();
    let mut files = HashMap::new();
    let mut announced = vec![entry("d", FileKind::Directory, b"", 1, 1)];
    for (name, seq) in names
        .iter()
        .chain([&"a".to_owned(), &"z".to_owned()])
        .zip(2..)
    {
        let content = format!("content of {name}").into_bytes();
        announced.push(entry(name, FileKind::File, &content, 1, seq));
        files.insert(name.clone(), content);
    }
    let apply = |batch: Vec<FileEntry>| {
        node.context
            .store
            .write_blocking(move |s| s.apply_remote_index(idx, PEER, 1, &batch))
            .map_err(|e: crate::store::StoreError| e)
            .unwrap();
    };
    apply(announced);
    let context = PullContext {
        peers: Arc::new(FilesPeer(files.clone())),
        folders: node.context.folders.clone(),
    };
    let puller = tokio::spawn(pull_loop(folder.clone(), context));
    folder.pull.notify_one();
    let root = node.root();
    eventually("every file of four pages", || {
        files
            .iter()
            .all(|(name, content)| std::fs::read(root.join(name)).ok().as_ref() == Some(content))
            && folder.state() == FolderState::Idle
    })
    .await;

    // The peer deletes the directory and everything in it.
    let mut gone: Vec<FileEntry> = Vec::new();
    for (name, seq) in names.iter().zip(20..) {
        gone.push(FileEntry {
            deleted: true,
            size: 0,
            blocks: Vec::new(),
            ..entry(name, FileKind::File, b"", 2, seq)
        });
    }
    gone.push(FileEntry {
        deleted: true,
        ..entry("d", FileKind::Directory, b"", 2, 30)
    });
    apply(gone);
    // A whole-folder plan (as after more than 20,000 changed names) walks them in pages.
    folder.replan_everything();
    folder.pull.notify_one();
    eventually("the directory gone", || {
        !root.join("d").exists() && folder.state() == FolderState::Idle
    })
    .await;
    assert!(root.join("a").exists() && root.join("z").exists());
    assert!(
        folder.pull_errors().is_empty(),
        "{:?}",
        folder.pull_errors()
    );
    let failures: Vec<String> = node
        .events()
        .await
        .iter()
        .filter_map(|e| match &**e {
            Event::ItemFinished {
                item,
                error: Some(error),
                ..
            } => Some(format!("{item}: {error}")),
            _ => None,
        })
        .collect();
    assert!(failures.is_empty(), "failed on the way: {failures:?}");
    folder.stop.cancel();
    puller.await.unwrap();
}
