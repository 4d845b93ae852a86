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

    /// The version of `name` whose list is kept, and the list. The caller keeps its own
    /// handle on it: other files' requests may push it out of here meanwhile.
    pub(super) fn get(&self, folder: FolderIdx, name: &str) -> Option<(u64, Arc<Vec<Block>>)> {
        self.kept()
            .iter()
            .find(|l| l.folder == folder && l.name == name)
            .map(|l| (l.sequence, l.blocks.clone()))
    }

    /// Keeps `blocks` as the list of version `sequence` of `name` (the oldest kept goes).
    pub(super) fn keep(
        &self,
        folder: FolderIdx,
        name: &str,
        sequence: u64,
        blocks: Arc<Vec<Block>>,
    ) {
        let mut kept = self.kept();
        kept.retain(|l| !(l.folder == folder && l.name == name));
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(Listed {
            folder,
            name: name.to_owned(),
            sequence,
            blocks,
        });
    }
}

/// Whether `blocks` (in offset order) holds `block`: its offset, size and hash.
pub(super) fn holds(blocks: &[Block], block: &Block) -> bool {
    blocks
        .binary_search_by_key(&block.offset, |b| b.offset)
        .is_ok_and(|i| blocks[i] == *block)
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
    fn a_block_counts_only_with_its_offset_size_and_hash() {
        let blocks = [block(0, 10, 1), block(10, 5, 2)];
        assert!(holds(&blocks, &block(10, 5, 2)));
        assert!(!holds(&blocks, &block(10, 5, 3)), "wrong hash");
        assert!(!holds(&blocks, &block(10, 6, 2)), "wrong size");
        assert!(!holds(&blocks, &block(5, 5, 2)), "not a block start");
    }

    #[test]
    fn a_list_is_kept_per_folder_name_and_version() {
        let kept = BlockLists::default();
        let folder = FolderIdx::for_tests(1);
        kept.keep(folder, "f", 7, Arc::new(vec![block(0, 10, 1)]));
        let (sequence, blocks) = kept.get(folder, "f").unwrap();
        assert_eq!((sequence, blocks.len()), (7, 1));
        assert!(
            kept.get(FolderIdx::for_tests(2), "f").is_none(),
            "another folder"
        );
        assert!(kept.get(folder, "g").is_none(), "another name");
    }

    #[test]
    fn only_the_latest_few_lists_are_kept_and_a_list_taken_outlives_its_place() {
        let kept = BlockLists::default();
        let folder = FolderIdx::for_tests(1);
        kept.keep(folder, "f0", 0, Arc::new(vec![block(0, 1, 1)]));
        let (_, first) = kept.get(folder, "f0").unwrap();
        for i in 1..=KEPT as u64 {
            kept.keep(folder, &format!("f{i}"), i, Arc::new(vec![block(0, 1, 1)]));
        }
        assert!(kept.get(folder, "f0").is_none());
        assert!(holds(&first, &block(0, 1, 1)), "the handle still lists it");
        assert_eq!(
            kept.get(folder, &format!("f{KEPT}")).unwrap().0,
            KEPT as u64
        );
        kept.keep(folder, "f1", 9, Arc::new(vec![]));
        assert_eq!(
            kept.get(folder, "f1").unwrap().0,
            9,
            "a new version replaces the old"
        );
    }
}
