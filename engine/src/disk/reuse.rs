//! Blocks a pulled file takes from disk instead of the network: what an interrupted earlier
//! attempt left in the temp file, then any local file the index says holds the same hash
//! (the file's own earlier version first).
//!
//! A local file whose size and modification time still match its index entry holds what
//! the last scan hashed: its blocks are copied without passing through this process
//! (`copy_file_range`: a reflink on XFS and btrfs where the offsets allow, an in-kernel
//! copy elsewhere), consecutive blocks as one range. How the result is still checked
//! against the target's hashes: the first and last block of every copied range are read
//! back and hashed (a wrong offset shows there), and when a source's size or time changed
//! while it was copied, every block taken from it is read back and hashed. A block that
//! fails is fetched from a peer. A source that no longer matches its entry is read and
//! hashed block by block.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use peerfold_protocol::chunking::Block;

use crate::disk::scanner::walk_timestamp;
use crate::model::entry::{FileEntry, Timestamp};
use crate::model::names;
use crate::store::{FolderIdx, StoreError, StoreHandle};

// Store errors here are not fatal: a block that cannot be found locally is asked of a peer.

/// Where a running folder is: its index row and its root. `None` for a folder not running.
pub(crate) type FolderLookup<'a> = &'a (dyn Fn(&str) -> Option<(FolderIdx, PathBuf)> + Sync);

/// A local file that holds some of the wanted blocks.
struct Holder {
    /// `None` once it failed to open.
    file: Option<File>,
    blocks: HashMap<blake3::Hash, Block>,
    /// Its size and time as its index entry has them, when the file still shows them
    /// (checked when it is opened): its blocks may be copied unread.
    indexed: Option<(u64, Timestamp)>,
}

impl Holder {
    /// Whether the file still has the size and time of its entry.
    fn unchanged(&self) -> bool {
        let (Some(file), Some((size, modified))) = (&self.file, self.indexed) else {
            return false;
        };
        file.metadata()
            .is_ok_and(|m| m.len() == size && walk_timestamp(&m) == modified)
    }
}

/// Local files looked at while one file is pulled, by (folder ID, name).
struct Holders<'a> {
    store: &'a StoreHandle,
    folders: FolderLookup<'a>,
    known: HashMap<(String, String), Holder>,
}

/// Where a block was found: a holder's key and the block there.
type Found = ((String, String), Block);

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
        let entry = entry.filter(|e| !e.deleted && !e.invalid);
        let indexed = entry.as_ref().map(|e| (e.size, e.modified));
        let blocks = entry
            .map(|e| e.blocks.into_iter().map(|b| (b.hash, b)).collect())
            .unwrap_or_default();
        let file = folder
            .and_then(|(_, root)| names::join(&root, name).ok())
            .and_then(|path| File::open(path).ok());
        let mut holder = Holder {
            file,
            blocks,
            indexed,
        };
        if !holder.unchanged() {
            holder.indexed = None;
        }
        self.known.insert(key, holder);
    }

    /// A holder that lists `block`, an unchanged one first; the index is asked for more
    /// when none known lists it.
    fn find(&mut self, block: &Block) -> Vec<Found> {
        let mut found = self.listing(block);
        if found.is_empty() {
            let Ok(holders) = self
                .store
                .read_blocking(|r| r.local_block_holders(&block.hash))
                .map_err(|e: StoreError| e)
            else {
                return found;
            };
            for (folder_id, name) in holders {
                self.load(&folder_id, &name);
            }
            found = self.listing(block);
        }
        found
    }

    fn listing(&self, block: &Block) -> Vec<Found> {
        let mut found: Vec<(bool, Found)> = self
            .known
            .iter()
            .filter(|(_, h)| h.file.is_some())
            .filter_map(|(key, h)| {
                let there = h.blocks.get(&block.hash)?;
                (there.size == block.size).then(|| (h.indexed.is_some(), (key.clone(), *there)))
            })
            .collect();
        found.sort_by_key(|(unchanged, _)| !unchanged);
        found.into_iter().map(|(_, f)| f).collect()
    }

    /// Reads `there` from holder `key` into `buf`, checked against `hash`.
    fn read_checked(
        &self,
        key: &(String, String),
        there: &Block,
        hash: &blake3::Hash,
        buf: &mut Vec<u8>,
    ) -> bool {
        let Some(file) = self.known.get(key).and_then(|h| h.file.as_ref()) else {
            return false;
        };
        // Memory for the block only once some file holds it (a peer can announce blocks
        // of 16 MiB that nobody has).
        buf.resize(there.size as usize, 0);
        file.read_exact_at(buf, there.offset).is_ok() && blake3::hash(buf) == *hash
    }
}

/// A block of the target no local file holds whole.
pub(crate) struct Missing {
    /// Its place in the target's block list.
    pub(crate) index: usize,
    pub(crate) block: Block,
    /// The start of it the file's earlier version had, when that version ended inside it
    /// (data was appended: its last block grew): only the rest need be fetched, and the
    /// whole block is checked once put together. Empty: fetch it all.
    pub(crate) held: Vec<u8>,
}

/// Consecutive blocks of the target that lie consecutively in one unchanged holder.
struct Range {
    holder: (String, String),
    from: u64,
    to: u64,
    len: u64,
    /// (index in the target's block list, block) of each block in it.
    blocks: Vec<(usize, Block)>,
}

/// Writes into `temp` every block of `target` (a file of folder `folder_id`) found on
/// disk, and returns the others. Blocking: run it off the async threads.
pub(crate) fn fill_from_disk(
    store: &StoreHandle,
    folders: FolderLookup<'_>,
    folder_id: &str,
    target: &FileEntry,
    temp: &File,
) -> Result<Vec<Missing>, std::io::Error> {
    let mut holders = Holders {
        store,
        folders,
        known: HashMap::new(),
    };
    holders.load(folder_id, &target.name);
    let mut missing = Vec::new();
    let mut ranges: Vec<Range> = Vec::new();
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
        let mut taken = false;
        for (key, there) in holders.find(block) {
            if holders.known[&key].indexed.is_some() {
                extend_ranges(&mut ranges, key, &there, index, block);
                taken = true;
                break;
            }
            if holders.read_checked(&key, &there, &block.hash, &mut buf) {
                temp.write_all_at(&buf, block.offset)?;
                taken = true;
                break;
            }
        }
        if !taken {
            missing.push((index, *block));
        }
    }
    for range in ranges {
        let holder = &holders.known[&range.holder];
        let copied = holder.file.as_ref().is_some_and(|source| {
            copy_range(source, temp, range.from, range.to, range.len).is_ok()
        });
        if copied {
            missing.extend(check_copied(temp, &range, holder.unchanged(), &mut buf));
            continue;
        }
        // No kernel copy here (an old kernel, another filesystem): through this process.
        for (index, block) in &range.blocks {
            let there = Block {
                offset: range.from + (block.offset - range.to),
                ..*block
            };
            if holders.read_checked(&range.holder, &there, &block.hash, &mut buf) {
                temp.write_all_at(&buf, block.offset)?;
            } else {
                missing.push((*index, *block));
            }
        }
    }
    missing.sort_by_key(|(index, _)| *index);
    let own = holders
        .known
        .get(&(folder_id.to_owned(), target.name.clone()));
    Ok(missing
        .into_iter()
        .map(|(index, block)| Missing {
            index,
            block,
            held: own.map(|own| held_start(own, &block)).unwrap_or_default(),
        })
        .collect())
}

/// The start of `block` that `own` (the file's earlier version) holds when its last block
/// begins where `block` does and ends inside it, as after an append; empty otherwise.
fn held_start(own: &Holder, block: &Block) -> Vec<u8> {
    let (Some(file), Some((old_size, _))) = (&own.file, own.indexed) else {
        return Vec::new();
    };
    let ends_inside = block.offset < old_size && old_size < block.offset + u64::from(block.size);
    let was_last = own
        .blocks
        .values()
        .any(|b| b.offset == block.offset && b.offset + u64::from(b.size) == old_size);
    if !ends_inside || !was_last || !own.unchanged() {
        return Vec::new();
    }
    let mut start = vec![0; (old_size - block.offset) as usize];
    match file.read_exact_at(&mut start, block.offset) {
        Ok(()) => start,
        Err(_) => Vec::new(),
    }
}

/// Adds `block` (at `there` in holder `key`) to the last range when it continues it.
fn extend_ranges(
    ranges: &mut Vec<Range>,
    key: (String, String),
    there: &Block,
    index: usize,
    block: &Block,
) {
    if let Some(last) = ranges.last_mut()
        && last.holder == key
        && last.from + last.len == there.offset
        && last.to + last.len == block.offset
    {
        last.len += u64::from(block.size);
        last.blocks.push((index, *block));
        return;
    }
    ranges.push(Range {
        holder: key,
        from: there.offset,
        to: block.offset,
        len: u64::from(block.size),
        blocks: vec![(index, *block)],
    });
}

/// The blocks of a copied `range` that fail their hash in `temp`: its first and last block
/// when the source stayed `unchanged`, every block otherwise (then also those the copy
/// missed).
fn check_copied(
    temp: &File,
    range: &Range,
    unchanged: bool,
    buf: &mut Vec<u8>,
) -> Vec<(usize, Block)> {
    let last = range.blocks.len() - 1;
    range
        .blocks
        .iter()
        .enumerate()
        .filter(|(i, _)| !unchanged || *i == 0 || *i == last)
        .filter(|(_, (_, block))| {
            buf.resize(block.size as usize, 0);
            !(temp.read_exact_at(buf, block.offset).is_ok() && blake3::hash(buf) == block.hash)
        })
        .map(|(_, b)| *b)
        .collect()
}

/// Copies `len` bytes at `from` in `source` to `to` in `dest` inside the kernel. The part
/// where both offsets fall on a 4 KiB boundary goes in one call, so a filesystem with
/// reflinks shares those extents instead of copying them.
fn copy_range(source: &File, dest: &File, from: u64, to: u64, len: u64) -> std::io::Result<()> {
    const PAGE: u64 = 4096;
    let mut pieces = Vec::with_capacity(3);
    let head = (PAGE - to % PAGE) % PAGE;
    if from % PAGE == to % PAGE && len > head + PAGE {
        let middle = (len - head) / PAGE * PAGE;
        pieces.push((from, to, head));
        pieces.push((from + head, to + head, middle));
        pieces.push((
            from + head + middle,
            to + head + middle,
            len - head - middle,
        ));
    } else {
        pieces.push((from, to, len));
    }
    for (mut from, mut to, mut left) in pieces {
        while left > 0 {
            let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
            let n =
                rustix::fs::copy_file_range(source, Some(&mut from), dest, Some(&mut to), chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
