//! Block lists as changes to a list the receiver holds (`BlockListDelta` on the wire).
//!
//! A 1 GiB file has about 8,000 content-defined blocks, 40 bytes each in an index entry: a
//! one-byte edit or a 1 MiB append would send all of them again, and the device that pulls
//! the change sends them back in its own index update. With content-defined chunking an
//! edit changes only the blocks around it, so the new list is the old one's first and last
//! blocks around a few new ones: that is all that crosses the network.

use peerfold_protocol::chunking::Block;
use peerfold_protocol::wire;

use super::entry::wire_block;

/// Lists shorter than this go whole: a delta saves little and costs the sender a lookup.
pub(crate) const MIN_BLOCKS: usize = 16;

/// How `new` differs from `base`: the count of leading and trailing blocks they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shared {
    pub prefix: usize,
    pub suffix: usize,
}

/// The blocks `new` shares with `base` at its start and its end (by size and hash), or
/// `None` when it shares none (the whole list goes out then).
pub(crate) fn shared(base: &[Block], new: &[Block]) -> Option<Shared> {
    let same = |a: &Block, b: &Block| a.size == b.size && a.hash == b.hash;
    let prefix = base.iter().zip(new).take_while(|(a, b)| same(a, b)).count();
    let room = base.len().min(new.len()) - prefix;
    let suffix = base
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(room)
        .take_while(|(a, b)| same(a, b))
        .count();
    (prefix + suffix > 0).then_some(Shared { prefix, suffix })
}

/// What names a base list beside its sequence number: BLAKE3 over each block's size
/// (little-endian) and hash.
fn digest(base: &[Block]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    for block in base {
        hasher.update(&block.size.to_le_bytes());
        hasher.update(block.hash.as_bytes());
    }
    hasher.finalize().as_bytes().to_vec()
}

/// The blocks of `info` past what it shares with `base` (the receiver's entry of sequence
/// `base_sequence`), with the delta that names the rest.
pub(crate) fn shorten(
    info: &mut wire::FileInfo,
    (base_sequence, base): (u64, &[Block]),
    shared: Shared,
) {
    let end = info.blocks.len() - shared.suffix;
    info.blocks.truncate(end);
    info.blocks.drain(..shared.prefix);
    info.blocks_delta = Some(wire::BlockListDelta {
        base_sequence,
        kept_prefix: shared.prefix as u32,
        kept_suffix: shared.suffix as u32,
        base_digest: digest(base),
    });
}

/// Why a delta could not be applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeltaError {
    /// The receiver's entry is not the one the sender based the delta on (it changed since,
    /// or is gone): only the whole list will do.
    #[error("the block list it changes is not held here any more")]
    BaseGone,
    /// The delta keeps more blocks than its base has.
    #[error("the change keeps more blocks than the list it changes")]
    OutOfRange,
}

/// Makes `info`'s block list whole again from `base` (this device's entry for the name, with
/// its sequence number), offsets recounted; `FileEntry::from_wire` checks the result as it
/// checks any list. An entry without a delta is left as it is, and so is one whose delta
/// cannot be applied (`from_wire` refuses it then).
pub(crate) fn expand(
    info: &mut wire::FileInfo,
    base: Option<(u64, &[Block])>,
) -> Result<(), DeltaError> {
    let Some(delta) = &info.blocks_delta else {
        return Ok(());
    };
    let Some((_, base)) =
        base.filter(|(s, list)| *s == delta.base_sequence && digest(list) == delta.base_digest)
    else {
        return Err(DeltaError::BaseGone);
    };
    let (prefix, suffix) = (delta.kept_prefix as usize, delta.kept_suffix as usize);
    if prefix
        .checked_add(suffix)
        .is_none_or(|kept| kept > base.len())
    {
        return Err(DeltaError::OutOfRange);
    }
    let middle = std::mem::take(&mut info.blocks);
    let mut blocks = Vec::with_capacity(prefix + middle.len() + suffix);
    blocks.extend(base[..prefix].iter().map(wire_block));
    blocks.extend(middle);
    blocks.extend(base[base.len() - suffix..].iter().map(wire_block));
    let mut offset = 0u64;
    for block in &mut blocks {
        block.offset = offset;
        offset = offset.saturating_add(u64::from(block.size));
    }
    info.blocks = blocks;
    info.blocks_delta = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of the given sizes, each hashed from its own `(seed, index)`.
    fn blocks(seeds: &[(u8, u32)]) -> Vec<Block> {
        let mut offset = 0;
        seeds
            .iter()
            .map(|&(seed, size)| {
                let block = Block {
                    offset,
                    size,
                    hash: blake3::hash(&[seed, size as u8, (size >> 8) as u8]),
                };
                offset += u64::from(size);
                block
            })
            .collect()
    }

    fn info_of(list: &[Block]) -> wire::FileInfo {
        wire::FileInfo {
            name: "f".into(),
            size: list.iter().map(|b| u64::from(b.size)).sum(),
            blocks: list.iter().map(wire_block).collect(),
            ..Default::default()
        }
    }

    /// Sends `new` as a change to `base` and expands it again on the other side.
    fn round_trip(base: &[Block], new: &[Block]) -> (wire::FileInfo, wire::FileInfo) {
        let whole = info_of(new);
        let mut sent = whole.clone();
        if let Some(shared) = shared(base, new) {
            shorten(&mut sent, (7, base), shared);
        }
        let mut received = sent.clone();
        expand(&mut received, Some((7, base))).unwrap();
        assert_eq!(
            received, whole,
            "the receiver rebuilds exactly the sent list"
        );
        (sent, received)
    }

    fn many(seed: u8, n: usize) -> Vec<(u8, u32)> {
        (0..n).map(|i| (seed, 1000 + i as u32)).collect()
    }

    #[test]
    fn an_append_sends_the_new_tail_only() {
        let old = many(1, 100);
        let mut new = old[..99].to_vec();
        new.extend([(2, 5000), (2, 5001), (2, 7)]);
        let (sent, _) = round_trip(&blocks(&old), &blocks(&new));
        assert_eq!(sent.blocks.len(), 3);
        assert_eq!(sent.blocks[0].offset, blocks(&new)[99].offset);
        let delta = sent.blocks_delta.unwrap();
        assert_eq!((delta.kept_prefix, delta.kept_suffix), (99, 0));
    }

    #[test]
    fn an_edit_in_the_middle_keeps_both_ends() {
        let old = many(1, 100);
        let mut new = old.clone();
        new[40] = (9, 1040);
        new.insert(41, (9, 3));
        let (sent, _) = round_trip(&blocks(&old), &blocks(&new));
        assert_eq!(sent.blocks.len(), 2);
        let delta = sent.blocks_delta.unwrap();
        assert_eq!((delta.kept_prefix, delta.kept_suffix), (40, 59));
    }

    #[test]
    fn unchanged_and_truncated_lists_and_lists_with_nothing_shared() {
        let old = blocks(&many(1, 50));
        let (sent, _) = round_trip(&old, &old);
        assert!(
            sent.blocks.is_empty(),
            "the same list costs no block at all"
        );
        round_trip(&old, &old[..20]);
        round_trip(&old, &[]);
        round_trip(&old[..1], &old);
        // Repeated blocks: the prefix and suffix must not overlap.
        let same = blocks(&[(3, 10), (3, 10), (3, 10)]);
        let (sent, _) = round_trip(&same, &same[..2]);
        let delta = sent.blocks_delta.unwrap();
        assert_eq!(delta.kept_prefix + delta.kept_suffix, 2);
        let other = blocks(&many(2, 50));
        let (sent, _) = round_trip(&old, &other);
        assert!(
            sent.blocks_delta.is_none(),
            "nothing shared: the whole list"
        );
    }

    #[test]
    fn a_delta_on_another_base_or_out_of_its_range_is_refused() {
        let old = blocks(&many(1, 30));
        let mut sent = info_of(&old);
        shorten(&mut sent, (7, &old), shared(&old, &old).unwrap());
        let mut moved_on = sent.clone();
        assert_eq!(
            expand(&mut moved_on, Some((8, &old))),
            Err(DeltaError::BaseGone)
        );
        // The same sequence number on another list (an index rebuilt since).
        let mut other = old.clone();
        other[29].size += 1;
        assert_eq!(
            expand(&mut moved_on, Some((7, &other))),
            Err(DeltaError::BaseGone)
        );
        let mut gone = sent.clone();
        assert_eq!(expand(&mut gone, None), Err(DeltaError::BaseGone));
        let mut too_long = sent.clone();
        let delta = too_long.blocks_delta.as_mut().unwrap();
        (delta.kept_prefix, delta.kept_suffix) = (20, 11);
        let refused = too_long.clone();
        assert_eq!(
            expand(&mut too_long, Some((7, &old))),
            Err(DeltaError::OutOfRange)
        );
        assert_eq!(
            too_long, refused,
            "an entry whose delta failed is left as it came"
        );
        let mut huge = sent;
        let delta = huge.blocks_delta.as_mut().unwrap();
        (delta.kept_prefix, delta.kept_suffix) = (u32::MAX, u32::MAX);
        assert_eq!(
            expand(&mut huge, Some((7, &old))),
            Err(DeltaError::OutOfRange)
        );
    }
}
