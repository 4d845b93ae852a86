//! The block lists of the files a peer is pulling, kept per connection: a peer asks for a
//! file's blocks one request at a time (8,192 requests for a 1 GiB file), and reading the
//! whole list from the store for each one (300 KB for that file) cost more than serving.
//! A list is used only while the store still holds that version of the file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use peerfold_protocol::chunking::Block;

use crate::store::FolderIdx;

/// Files whose lists are kept per connection (a list is at most about 500 KB).
const KEPT: usize = 4;

struct Listed {
    folder: FolderIdx,
    name: String,
    sequence: u64,
    /// In offset order, as the store keeps them.
    blocks: Arc<Vec<Block>>,
}

/// The lists one connection's requests were checked against lately.
#[derive(Default)]
pub(super) struct BlockLists {
    // Held for lookups and inserts only, never across an await.
    kept: Mutex<VecDeque<Listed>>,
}

impl BlockLists {
    fn kept(&self) -> std::sync::MutexGuard<'_, VecDeque<Listed>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version whose list is kept for `name`, if any.
    pub(super) fn sequence(&self, folder: FolderIdx, name: &str) -> Option<u64> {
        self.kept()
            .iter()
            .find(|l| l.folder == folder && l.name == name)
            .map(|l| l.sequence)
    }

    /// Keeps `blocks` as the list of version `sequence` of `name` (the oldest kept goes).
    pub(super) fn keep(&self, folder: FolderIdx, name: &str, sequence: u64, blocks: Vec<Block>) {
        let mut kept = self.kept();
        kept.retain(|l| !(l.folder == folder && l.name == name));
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(Listed {
            folder,
            name: name.to_owned(),
            sequence,
            blocks: Arc::new(blocks),
        });
    }

    /// Whether version `sequence` of `name` lists `block` (offset, size and hash).
    pub(super) fn lists(
        &self,
        folder: FolderIdx,
        name: &str,
        sequence: u64,
        block: &Block,
    ) -> bool {
        let Some(blocks) = self
            .kept()
            .iter()
            .find(|l| l.folder == folder && l.name == name && l.sequence == sequence)
            .map(|l| l.blocks.clone())
        else {
            return false;
        };
        blocks
            .binary_search_by_key(&block.offset, |b| b.offset)
            .is_ok_and(|i| blocks[i] == *block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(offset: u64, size: u32, seed: u8) -> Block {
        Block {
            offset,
            size,
            hash: blake3::hash(&[seed]),
        }
    }

    #[test]
    fn a_block_counts_only_with_its_offset_size_hash_and_version() {
        let lists = BlockLists::default();
        let folder = FolderIdx::for_tests(1);
        lists.keep(folder, "f", 7, vec![block(0, 10, 1), block(10, 5, 2)]);
        assert_eq!(lists.sequence(folder, "f"), Some(7));
        assert!(lists.lists(folder, "f", 7, &block(10, 5, 2)));
        assert!(!lists.lists(folder, "f", 7, &block(10, 5, 3)), "wrong hash");
        assert!(!lists.lists(folder, "f", 7, &block(10, 6, 2)), "wrong size");
        assert!(
            !lists.lists(folder, "f", 7, &block(5, 5, 2)),
            "not a block start"
        );
        assert!(
            !lists.lists(folder, "f", 8, &block(0, 10, 1)),
            "another version"
        );
        assert!(
            !lists.lists(FolderIdx::for_tests(2), "f", 7, &block(0, 10, 1)),
            "another folder"
        );
    }

    #[test]
    fn only_the_latest_few_lists_are_kept() {
        let lists = BlockLists::default();
        let folder = FolderIdx::for_tests(1);
        for i in 0..=KEPT as u64 {
            lists.keep(folder, &format!("f{i}"), i, vec![block(0, 1, 1)]);
        }
        assert_eq!(lists.sequence(folder, "f0"), None);
        assert_eq!(
            lists.sequence(folder, &format!("f{KEPT}")),
            Some(KEPT as u64)
        );
        lists.keep(folder, "f1", 9, vec![]);
        assert_eq!(
            lists.sequence(folder, "f1"),
            Some(9),
            "a new version replaces the old"
        );
    }
}
