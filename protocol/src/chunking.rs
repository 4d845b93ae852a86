//! Content-defined chunking: how every device cuts a file into blocks.
//!
//! This is protocol, not policy: two devices only share blocks if they cut identically, so the
//! parameters below may never change within `peerfold/1`. Files are cut with FastCDC (the 2020
//! algorithm, normalisation level 1) and each block is hashed with BLAKE3.
//!
//! The average block size is [`BASE_AVG_SIZE`] for files up to 1.5 x `BASE_AVG_SIZE` x
//! [`TARGET_BLOCKS_PER_FILE`] bytes (768 MiB) and doubles each time the file size passes
//! 1.5 x avg x `TARGET_BLOCKS_PER_FILE`, so a file has 4096 to 12288 blocks on average until the
//! average reaches FastCDC's ceiling of 4 MiB (files past 48 GiB). The class boundaries sit at
//! 1.5 x a power of two on purpose: files of exactly 1, 2 or 4 GiB are common, and a boundary
//! there would re-chunk such a file completely when one byte is appended or inserted.
//! Minimum and maximum are a quarter and four times the average. ARCHITECTURE.md has the
//! measurements behind these numbers.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut, select_masks};

/// Average block size for files of up to `BASE_AVG_SIZE * TARGET_BLOCKS_PER_FILE` bytes.
pub const BASE_AVG_SIZE: u32 = 64 * 1024;

/// Large files have 1.5 times this many blocks at most, on average (see the module doc).
pub const TARGET_BLOCKS_PER_FILE: u64 = 8192;

/// FastCDC's largest supported average block size.
const MAX_AVG_SIZE: u32 = 4 * 1024 * 1024;

/// The largest block any file can have.
pub const MAX_BLOCK_SIZE: u32 = MAX_AVG_SIZE * 4;

/// FastCDC parameters for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// No block is shorter, except a file's last one.
    pub min_size: u32,
    /// The expected block size.
    pub avg_size: u32,
    /// No block is longer.
    pub max_size: u32,
}

impl ChunkParams {
    /// The parameters every device uses for a file of `file_size` bytes.
    pub fn for_file_size(file_size: u64) -> Self {
        let mut avg = BASE_AVG_SIZE;
        // file_size > 1.5 * avg * TARGET, in integers.
        while avg < MAX_AVG_SIZE && file_size / 3 > u64::from(avg) * TARGET_BLOCKS_PER_FILE / 2 {
            avg *= 2;
        }
        Self::with_avg(avg)
    }

    /// Parameters around an average size, with min = avg/4 and max = avg*4.
    pub const fn with_avg(avg_size: u32) -> Self {
        Self {
            min_size: avg_size / 4,
            avg_size,
            max_size: avg_size * 4,
        }
    }
}

/// One content-defined block of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Block {
    /// Where the block starts in the file.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u32,
    /// BLAKE3 digest of its bytes.
    pub hash: blake3::Hash,
}

/// Positional reads, so a file can be read at any offset without moving a cursor.
pub trait ReadAt {
    /// Reads into `buf` from `offset`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Reads as much of `buf` as the source holds from `offset`.
fn read_full_at(source: &(impl ReadAt + ?Sized), buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match source.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A [`Read`] over a [`ReadAt`] from some offset on.
struct ReadAtReader<'a, S: ?Sized> {
    source: &'a S,
    offset: u64,
}

impl<S: ReadAt + ?Sized> Read for ReadAtReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Whether `blocks` follow each other from offset 0 without gaps, as a file's blocks do.
fn is_contiguous(blocks: &[Block]) -> bool {
    let mut offset = 0;
    blocks.iter().all(|b| {
        let ok = b.offset == offset && b.size > 0;
        offset += u64::from(b.size);
        ok
    })
}

/// Bytes read from the source per refill, beyond the one maximum block kept in the buffer.
const READ_SIZE: usize = 4 * 1024 * 1024;

/// Cuts byte streams into blocks and hashes them in one streaming pass.
///
/// It keeps one buffer of at most `max_size + 4 MiB` bytes and reuses it from file to file, so
/// a worker thread that chunks many files allocates once. The fastcdc crate's own `StreamCDC`
/// copies every block into a fresh `Vec`; this loop hashes blocks where they lie.
#[derive(Debug, Default)]
pub struct Chunker {
    buffer: Vec<u8>,
}

impl Chunker {
    /// A chunker with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `source` to its end, calling `on_block` for each block in order. `size_hint` (the
    /// file's size when it was opened) selects the parameters, so the caller must pass the
    /// same size it will record. Returns the number of bytes read.
    pub fn chunk(
        &mut self,
        source: impl Read,
        size_hint: u64,
        mut on_block: impl FnMut(Block),
    ) -> io::Result<u64> {
        let params = ChunkParams::for_file_size(size_hint);
        self.chunk_from(source, params, 0, size_hint, |block| {
            on_block(block);
            true
        })
    }

    /// Cuts `source`, whose first byte lies at `offset` in the file, with `params`, until it
    /// ends or `on_block` returns false. `offset` must be a block boundary of the whole file.
    /// Returns the file offset reached.
    fn chunk_from(
        &mut self,
        mut source: impl Read,
        params: ChunkParams,
        mut offset: u64,
        size_hint: u64,
        mut on_block: impl FnMut(Block) -> bool,
    ) -> io::Result<u64> {
        let (min, avg, max) = (
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        let (mask_s, mask_l) = select_masks(avg, Normalization::Level1);
        let capacity = max + READ_SIZE.min(size_hint.saturating_sub(offset) as usize);
        if self.buffer.len() < capacity {
            self.buffer.resize(capacity, 0);
        }
        let buffer = &mut self.buffer[..capacity];
        let (mut start, mut filled, mut eof) = (0usize, 0usize, false);
        loop {
            while filled < buffer.len() && !eof {
                match source.read(&mut buffer[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // A cut point only depends on the next `max` bytes, so we cut once that many are
            // buffered (or the stream has ended): the result equals cutting the whole file.
            while start < filled && (eof || filled - start >= max) {
                let (_, len) = cut(
                    &buffer[start..filled],
                    min,
                    avg,
                    max,
                    mask_s,
                    mask_l,
                    mask_s << 1,
                    mask_l << 1,
                );
                let go_on = on_block(Block {
                    offset,
                    // `len` is at most `max`, which fits in u32.
                    size: len as u32,
                    hash: blake3::hash(&buffer[start..start + len]),
                });
                start += len;
                offset += len as u64;
                if !go_on {
                    return Ok(offset);
                }
            }
            if eof {
                return Ok(offset);
            }
            buffer.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
    }

    /// The blocks of `source` (`size` bytes), given the blocks of an earlier version of the
    /// same file: the same as [`Chunker::blocks`], but much faster when little changed.
    ///
    /// A cut point depends only on the bytes from its block's start. So once a block of the
    /// new content equals an earlier block, the block after it in the earlier version, tried
    /// where the new block ends, is again a block if it still hashes the same (unless the
    /// earlier end of file cut it) - wherever inserts or deletions have shifted it. Such
    /// blocks are only read and hashed; the chunker runs from where one differs until it
    /// cuts a block equal to an earlier one.
    pub fn blocks_reusing(
        &mut self,
        source: &(impl ReadAt + ?Sized),
        size: u64,
        previous: &[Block],
    ) -> io::Result<Vec<Block>> {
        let params = ChunkParams::for_file_size(size);
        let previous_size = previous.last().map_or(0, |b| b.offset + u64::from(b.size));
        if !is_contiguous(previous) || ChunkParams::for_file_size(previous_size) != params {
            return self.blocks(ReadAtReader { source, offset: 0 }, size);
        }
        let index_of: std::collections::HashMap<blake3::Hash, usize> = previous
            .iter()
            .enumerate()
            .map(|(i, b)| (b.hash, i))
            .collect();
        let mut blocks = Vec::new();
        let mut data = Vec::new();
        let mut offset = 0;
        // The earlier block to try next, where the last block ended.
        let mut candidate = Some(0);
        while offset < size {
            if let Some(i) = candidate.filter(|&i| i < previous.len()) {
                let old = previous[i];
                let end = offset + u64::from(old.size);
                // The earlier last block was cut by the earlier end of file.
                let cut_by_content = i + 1 < previous.len() || end == size;
                if end <= size && cut_by_content {
                    data.resize(old.size as usize, 0);
                    if read_full_at(source, &mut data, offset)? == data.len()
                        && blake3::hash(&data) == old.hash
                    {
                        blocks.push(Block { offset, ..old });
                        offset = end;
                        candidate = Some(i + 1);
                        continue;
                    }
                }
            }
            candidate = None;
            let reader = ReadAtReader { source, offset };
            let reached = self.chunk_from(reader, params, offset, size, |block| {
                blocks.push(block);
                candidate = index_of.get(&block.hash).map(|i| i + 1);
                candidate.is_none()
            })?;
            if reached == offset {
                // The file ended early (it shrank while we read): the caller sees the short sum.
                break;
            }
            offset = reached;
        }
        Ok(blocks)
    }

    /// Convenience: all blocks of `source` as a vector.
    pub fn blocks(&mut self, source: impl Read, size_hint: u64) -> io::Result<Vec<Block>> {
        let mut blocks = Vec::new();
        self.chunk(source, size_hint, |b| blocks.push(b))?;
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic pseudo-random bytes (BLAKE3 in XOF mode).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// A reader that hands out at most `step` bytes per call, like a slow pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn parameters_scale_with_file_size() {
        let kib = |n: u32| ChunkParams::with_avg(n * 1024);
        assert_eq!(ChunkParams::for_file_size(0), kib(64));
        assert_eq!(ChunkParams::for_file_size(768 << 20), kib(64));
        assert_eq!(ChunkParams::for_file_size((768 << 20) + 3), kib(128));
        // Powers of two sit in the middle of a class: a byte more or less changes nothing.
        for gib in [1u64, 2, 4, 8] {
            let size = gib << 30;
            let class = ChunkParams::for_file_size(size);
            assert_eq!(ChunkParams::for_file_size(size + 1), class);
            assert_eq!(ChunkParams::for_file_size(size - 1), class);
        }
        assert_eq!(ChunkParams::for_file_size(1 << 30), kib(128));
        assert_eq!(ChunkParams::for_file_size(3 << 30), kib(256));
        assert_eq!(ChunkParams::for_file_size((3 << 30) + 3), kib(512));
        assert_eq!(ChunkParams::for_file_size(1 << 40), kib(4096));
        assert_eq!(
            ChunkParams::for_file_size(u64::MAX).max_size,
            MAX_BLOCK_SIZE
        );
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let mut chunker = Chunker::new();
        assert!(chunker.blocks(&[][..], 0).unwrap().is_empty());
        let blocks = chunker.blocks(&b"hello"[..], 5).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].hash, blake3::hash(b"hello"));
    }

    #[test]
    fn boundaries_are_stable_snapshot() {
        // If this fails, the cut points changed: that breaks compatibility between devices.
        let data = noise(7, 1 << 20);
        let sizes: Vec<u32> = Chunker::new()
            .blocks(&data[..], data.len() as u64)
            .unwrap()
            .iter()
            .map(|b| b.size)
            .collect();
        assert_eq!(sizes.iter().map(|&s| u64::from(s)).sum::<u64>(), 1 << 20);
        assert_eq!(
            sizes,
            include!("../tests/fixtures/chunk-sizes-noise7-1mib.txt"),
            "chunk boundaries changed"
        );
    }

    #[test]
    fn an_insert_changes_only_nearby_blocks() {
        let data = noise(1, 4 << 20);
        let mut edited = data.clone();
        edited.insert(100_000, 0x42);
        let mut chunker = Chunker::new();
        let before = chunker.blocks(&data[..], data.len() as u64).unwrap();
        let after = chunker.blocks(&edited[..], edited.len() as u64).unwrap();
        let old: std::collections::HashSet<_> = before.iter().map(|b| b.hash).collect();
        let new_bytes: u64 = after
            .iter()
            .filter(|b| !old.contains(&b.hash))
            .map(|b| u64::from(b.size))
            .sum();
        assert!(new_bytes <= 2 * u64::from(ChunkParams::with_avg(BASE_AVG_SIZE).max_size));
        assert!(new_bytes > 0);
    }

    /// An edit for the reuse property: overwrite, insert, delete, truncate or append.
    fn edit(data: &[u8], kind: u8, at: usize, len: usize, seed: u64) -> Vec<u8> {
        let at = at.min(data.len());
        let patch = noise(seed, len);
        let mut out = data.to_vec();
        match kind % 5 {
            0 => {
                let end = (at + len).min(out.len());
                out[at..end].copy_from_slice(&patch[..end - at]);
            }
            1 => {
                out.splice(at..at, patch);
            }
            2 => {
                out.drain(at..(at + len).min(data.len()));
            }
            3 => out.truncate(at),
            _ => out.extend_from_slice(&patch),
        }
        out
    }

    #[test]
    fn reuse_after_a_one_byte_overwrite_rehashes_one_block() {
        let data = noise(3, 3 << 20);
        let mut chunker = Chunker::new();
        let before = chunker.blocks(&data[..], data.len() as u64).unwrap();
        let mut edited = data.clone();
        edited[1_500_000] ^= 1;
        let after = chunker
            .blocks_reusing(&edited[..], edited.len() as u64, &before)
            .unwrap();
        assert_eq!(
            after,
            chunker.blocks(&edited[..], edited.len() as u64).unwrap()
        );
        let changed = after.iter().filter(|b| !before.contains(b)).count();
        assert_eq!(changed, 1);
    }

    #[test]
    fn reuse_after_an_insert_rehashes_only_nearby_blocks() {
        let data = noise(5, 3 << 20);
        let mut chunker = Chunker::new();
        let before = chunker.blocks(&data[..], data.len() as u64).unwrap();
        let mut edited = data.clone();
        edited.insert(1000, 0x42);
        let after = chunker
            .blocks_reusing(&edited[..], edited.len() as u64, &before)
            .unwrap();
        assert_eq!(
            after,
            chunker.blocks(&edited[..], edited.len() as u64).unwrap()
        );
        let old: std::collections::HashSet<_> = before.iter().map(|b| b.hash).collect();
        assert!(after.iter().filter(|b| !old.contains(&b.hash)).count() <= 2);
    }

    #[test]
    fn reuse_ignores_a_block_list_that_is_not_a_file() {
        let data = noise(4, 300_000);
        let mut chunker = Chunker::new();
        let mut bogus = chunker.blocks(&data[..], data.len() as u64).unwrap();
        bogus[1].offset += 1;
        assert_eq!(
            chunker
                .blocks_reusing(&data[..], data.len() as u64, &bogus)
                .unwrap(),
            chunker.blocks(&data[..], data.len() as u64).unwrap()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn streaming_matches_whole_buffer_chunking(
            seed in any::<u64>(),
            len in 0usize..600_000,
            step in 1usize..70_000,
        ) {
            let data = noise(seed, len);
            let params = ChunkParams::for_file_size(len as u64);
            let expected: Vec<(u64, u32)> = fastcdc::v2020::FastCDC::new(
                &data,
                params.min_size as usize,
                params.avg_size as usize,
                params.max_size as usize,
            )
            .map(|c| (c.offset as u64, c.length as u32))
            .collect();
            let mut chunker = Chunker::new();
            let blocks = chunker
                .blocks(Trickle { data: &data, step }, len as u64)
                .unwrap();
            let got: Vec<(u64, u32)> = blocks.iter().map(|b| (b.offset, b.size)).collect();
            prop_assert_eq!(got, expected);
            for b in &blocks {
                let range = b.offset as usize..b.offset as usize + b.size as usize;
                prop_assert_eq!(b.hash, blake3::hash(&data[range]));
            }
        }

        #[test]
        fn reusing_an_earlier_block_list_cuts_like_a_fresh_pass(
            seed in any::<u64>(),
            len in 0usize..1_200_000,
            edits in proptest::collection::vec((any::<u8>(), any::<usize>(), 1usize..200_000, any::<u64>()), 1..4),
        ) {
            let data = noise(seed, len);
            let mut chunker = Chunker::new();
            let before = chunker.blocks(&data[..], len as u64).unwrap();
            let mut edited = data;
            for (kind, at, n, patch_seed) in edits {
                let at = if edited.is_empty() { 0 } else { at % edited.len() };
                edited = edit(&edited, kind, at, n, patch_seed);
            }
            let fresh = chunker.blocks(&edited[..], edited.len() as u64).unwrap();
            let reused = chunker
                .blocks_reusing(&edited[..], edited.len() as u64, &before)
                .unwrap();
            prop_assert_eq!(reused, fresh);
        }
    }
}
