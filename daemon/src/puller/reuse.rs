//! Blocks a pulled file takes from disk instead of the network: what an interrupted earlier
//! attempt left in the temp file, then any local file the index says holds the same hash
//! (the file's own earlier version first). Every block is checked against its hash as read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use peerfold_protocol::chunking::Block;

use crate::daemon::Shared;
use peerfold_engine::model::entry::FileEntry;
use peerfold_engine::model::names;

/// A local file that holds some of the wanted blocks.
struct Holder {
    /// Opened on first use; `None` once it failed to open.
    file: Option<File>,
    blocks: HashMap<blake3::Hash, Block>,
}

/// Local files looked at while one file is pulled, by (folder ID, name).
struct Holders<'a> {
    shared: &'a Shared,
    known: HashMap<(String, String), Holder>,
}

impl<'a> Holders<'a> {
    fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            known: HashMap::new(),
        }
    }

    /// Loads the block list of a local file, once.
    fn load(&mut self, folder_id: &str, name: &str) {
        let key = (folder_id.to_owned(), name.to_owned());
        if self.known.contains_key(&key) {
            return;
        }
        let entry = self.shared.folder(folder_id).and_then(|folder| {
            self.shared
                .store()
                .local_entry(folder.idx, name)
                .ok()
                .flatten()
        });
        let blocks = entry
            .filter(|e| !e.deleted && !e.invalid)
            .map(|e| e.blocks.into_iter().map(|b| (b.hash, b)).collect())
            .unwrap_or_default();
        let file = self
            .shared
            .folder(folder_id)
            .and_then(|folder| names::join(&folder.path(), name).ok())
            .and_then(|path| File::open(path).ok());
        self.known.insert(key, Holder { file, blocks });
    }

    /// Reads `block` into `buf` from a holder that has it, checked against its hash.
    fn read(&mut self, block: &Block, buf: &mut [u8]) -> bool {
        let found = self.read_known(block, buf);
        if found {
            return true;
        }
        let Ok(holders) = self.shared.store().local_block_holders(&block.hash) else {
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

    fn read_known(&mut self, block: &Block, buf: &mut [u8]) -> bool {
        self.known.values().any(|holder| {
            let (Some(file), Some(found)) = (&holder.file, holder.blocks.get(&block.hash)) else {
                return false;
            };
            found.size == block.size
                && file.read_exact_at(buf, found.offset).is_ok()
                && blake3::hash(buf) == block.hash
        })
    }
}

/// Writes into `temp` every block of `target` found on disk, and returns the others with
/// their index in the block list. Blocking: run it off the async threads.
pub(super) fn fill_from_disk(
    shared: &Shared,
    folder_id: &str,
    target: &FileEntry,
    temp: &File,
) -> std::io::Result<Vec<(usize, Block)>> {
    let mut holders = Holders::new(shared);
    holders.load(folder_id, &target.name);
    let mut missing = Vec::new();
    let mut buf = Vec::new();
    for (index, block) in target.blocks.iter().enumerate() {
        buf.resize(block.size as usize, 0);
        if temp.read_exact_at(&mut buf, block.offset).is_ok() && blake3::hash(&buf) == block.hash {
            continue;
        }
        if holders.read(block, &mut buf) {
            temp.write_all_at(&buf, block.offset)?;
        } else {
            missing.push((index, *block));
        }
    }
    Ok(missing)
}
