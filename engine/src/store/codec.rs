//! Rows to and from the public types: entries, packed block lists, version vectors.

use peerfold_protocol::ShortId;
use peerfold_protocol::chunking::Block;
use peerfold_protocol::version::VersionVector;
use peerfold_protocol::wire;
use prost::Message as _;

use super::StoreError;
use crate::model::entry::{FileEntry, FileKind, Timestamp};

/// Bytes per block in the packed block list: a u32 size and a 32-byte hash.
const PACKED_BLOCK_LEN: usize = 4 + 32;

/// An entry from a row whose columns start with name, kind, size, permissions, modified_s,
/// modified_ns, deleted, invalid, sequence, version, modified_by, symlink_target, blocks.
pub(super) fn entry_from_row(row: &rusqlite::Row<'_>) -> Result<FileEntry, StoreError> {
    let name: String = row.get(0)?;
    let version: Vec<u8> = row.get(9)?;
    let blocks: Vec<u8> = row.get(12)?;
    Ok(FileEntry {
        kind: kind_of(&name, row.get(1)?)?,
        size: row.get::<_, i64>(2)? as u64,
        permissions: row.get(3)?,
        modified: Timestamp {
            seconds: row.get(4)?,
            nanos: row.get(5)?,
        },
        deleted: row.get(6)?,
        invalid: row.get(7)?,
        sequence: row.get::<_, i64>(8)? as u64,
        version: decode_version(&name, &version)?,
        modified_by: ShortId(row.get::<_, i64>(10)? as u64),
        symlink_target: row.get(11)?,
        blocks: decode_blocks(&name, &blocks)?,
        name,
    })
}

/// The first 8 bytes of a hash as a (signed, for SQLite) integer key.
pub(super) fn hash_prefix(hash: &blake3::Hash) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(first)
}

pub(super) fn encode_blocks(blocks: &[Block]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * PACKED_BLOCK_LEN);
    for block in blocks {
        out.extend_from_slice(&block.size.to_le_bytes());
        out.extend_from_slice(block.hash.as_bytes());
    }
    out
}

pub(super) fn decode_blocks(name: &str, packed: &[u8]) -> Result<Vec<Block>, StoreError> {
    if !packed.len().is_multiple_of(PACKED_BLOCK_LEN) {
        return Err(StoreError::Malformed {
            name: name.to_owned(),
            detail: format!("block list of {} bytes", packed.len()),
        });
    }
    let mut offset = 0u64;
    Ok(packed
        .chunks_exact(PACKED_BLOCK_LEN)
        .map(|chunk| {
            let (size, hash) = chunk.split_at(4);
            let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
            let mut digest = [0u8; 32];
            digest.copy_from_slice(hash);
            let block = Block {
                offset,
                size,
                hash: blake3::Hash::from_bytes(digest),
            };
            offset += u64::from(size);
            block
        })
        .collect())
}

pub(super) fn decode_version(name: &str, blob: &[u8]) -> Result<VersionVector, StoreError> {
    let wire = wire::Vector::decode(blob).map_err(|e| StoreError::Malformed {
        name: name.to_owned(),
        detail: format!("version vector: {e}"),
    })?;
    Ok(VersionVector::from(&wire))
}

pub(super) fn kind_of(name: &str, code: i64) -> Result<FileKind, StoreError> {
    FileKind::from_code(code).ok_or_else(|| StoreError::Malformed {
        name: name.to_owned(),
        detail: format!("unknown kind {code}"),
    })
}
