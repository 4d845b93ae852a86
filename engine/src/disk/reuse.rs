//! Blocks a pulled file takes from disk instead of the network: what an interrupted earlier
//! attempt left in the temp file, then any local file the index says holds the same hash
//! (the file's own earlier version first). Every block is checked against its hash as read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use peerfold_protocol::chunking::Block;

use crate::model::entry::FileEntry;
use crate::model::names;
use crate::store::{FolderIdx, StoreError, StoreHandle};

// Store errors here are not fatal: a block that cannot be found locally is asked of a peer.

/// Where a running folder is: its index row and its root. `None` for a folder not running.
pub(crate) type FolderLookup<'a> = &'a (dyn Fn(&str) -> Option<(FolderIdx, PathBuf)> + Sync);

/// A local file that holds some of the wanted blocks.
struct Holder {
    /// Opened on first use; `None` once it failed to open.
    file: Option<File>,
    blocks: HashMap<blake3::Hash, Block>,
}

/// Local files looked at while one file is pulled, by (folder ID, name).
struct Holders<'a> {
    store: &'a StoreHandle,
    folders: FolderLookup<'a>,
    known: HashMap<(String, String), Holder>,
}

impl Holders<'_> {
    /// Loads the block list of a local file, once.
    fn load(&mut self, folder_id: &str, name: &str) {
        let key = (folder_id.to_owned(), name.to_owned());
        if self.known.contains_key(&key) {
            return;
        }
        let folder = (self.folders)(folder_id);
        let entry = folder.as_ref().and_then(|(idx, _)| {
            self.store
                .read_blocking(|r| r.local_entry(*idx, name))
                .map_err(|e: StoreError| e)
                .ok()
                .flatten()
        });
        let blocks = entry
            .filter(|e| !e.deleted && !e.invalid)
            .map(|e| e.blocks.into_iter().map(|b| (b.hash, b)).collect())
            .unwrap_or_default();
        let file = folder
            .and_then(|(_, root)| names::join(&root, name).ok())
            .and_then(|path| File::open(path).ok());
        self.known.insert(key, Holder { file, blocks });
    }

    /// Reads `block` into `buf` from a holder that has it, checked against its hash.
    fn read(&mut self, block: &Block, buf: &mut Vec<u8>) -> bool {
        if self.read_known(block, buf) {
            return true;
        }
        let Ok(holders) = self
            .store
            .read_blocking(|r| r.local_block_holders(&block.hash))
            .map_err(|e: StoreError| e)
        else {
            return false;
        };
        let mut loaded_any = false;
        for (folder_id, name) in holders {
            if !self.known.contains_key(&(folder_id.clone(), name.clone())) {
                self.load(&folder_id, &name);
                loaded_any = true;
            }
        }
        loaded_any && self.read_known(block, buf)
    }

    fn read_known(&mut self, block: &Block, buf: &mut Vec<u8>) -> bool {
        self.known.values().any(|holder| {
            let (Some(file), Some(found)) = (&holder.file, holder.blocks.get(&block.hash)) else {
                return false;
            };
            // Memory for the block only once some file holds it (a peer can announce
            // blocks of 16 MiB that nobody has).
            buf.resize(block.size as usize, 0);
            found.size == block.size
                && file.read_exact_at(buf, found.offset).is_ok()
                && blake3::hash(buf) == block.hash
        })
    }
}

/// Writes into `temp` every block of `target` (a file of folder `folder_id`) found on
/// disk, and returns the others with their index in the block list. Blocking: run it off
/// the async threads.
pub(crate) fn fill_from_disk(
    store: &StoreHandle,
    folders: FolderLookup<'_>,
    folder_id: &str,
    target: &FileEntry,
    temp: &File,
) -> Result<Vec<(usize, Block)>, std::io::Error> {
    let mut holders = Holders {
        store,
        folders,
        known: HashMap::new(),
    };
    holders.load(folder_id, &target.name);
    let mut missing = Vec::new();
    let mut buf = Vec::new();
    // Only blocks within what an earlier attempt wrote can be in the temp file.
    let written = temp.metadata()?.len();
    for (index, block) in target.blocks.iter().enumerate() {
        if block.offset + u64::from(block.size) <= written {
            buf.resize(block.size as usize, 0);
            if temp.read_exact_at(&mut buf, block.offset).is_ok()
                && blake3::hash(&buf) == block.hash
            {
                continue;
            }
        }
        if holders.read(block, &mut buf) {
            temp.write_all_at(&buf, block.offset)?;
        } else {
            missing.push((index, *block));
        }
    }
    Ok(missing)
}
