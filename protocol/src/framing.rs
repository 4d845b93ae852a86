//! Length-delimited frames: a 4-byte big-endian length, then one encoded [`wire::Message`].
//!
//! The decoder is a pure function over a byte buffer. "Incomplete" is a normal outcome
//! (`Ok(None)`): the caller reads more bytes and tries again. Three bounds keep a hostile peer
//! from making us allocate much:
//! - the length is checked before anything is buffered for the frame: block responses may
//!   be up to [`MAX_FRAME_LEN`], every other message up to [`MAX_CONTROL_FRAME_LEN`];
//! - before decoding, a walk over the protobuf wire format estimates what the decoded structs
//!   will take (an empty `FileInfo` is 2 bytes on the wire but a few hundred in memory) and
//!   refuses frames that would take more than [`DECODE_BUDGET_FACTOR`] times their size;
//! - the envelope must hold exactly one body.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message as _;

use crate::chunking::MAX_BLOCK_SIZE;
use crate::wire;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// The largest frame body anyone may send: a block response carrying one maximum-size block,
/// plus room for the rest of the response.
pub const MAX_FRAME_LEN: usize = MAX_BLOCK_SIZE as usize + 64 * 1024;

/// The largest frame body of any other message (index batches, cluster config...). A single
/// file's entry with the most blocks (about 12,000) takes well under 1 MiB.
pub const MAX_CONTROL_FRAME_LEN: usize = 4 << 20;

/// A frame may decode into at most this many times its own size (plus 64 KiB).
pub const DECODE_BUDGET_FACTOR: usize = 8;

/// The most the decoder reserves ahead of bytes that arrived (the buffer still grows
/// geometrically as they do).
pub const RESERVE_STEP: usize = 64 * 1024;

/// The envelope key of a `Response` body (field 6, length-delimited).
const RESPONSE_KEY: u8 = (6 << 3) | 2;

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than the limit; nothing of it is buffered.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Announced (or encoded) length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} of {needed} bytes received)")]
    Truncated {
        /// Bytes that did arrive.
        buffered: usize,
        /// Bytes the frame needed (header included).
        needed: usize,
    },
    /// The frame body is not a valid protobuf message.
    #[error("undecodable frame: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// The protobuf wire format is broken.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A well-formed message with no body, or with more than one.
    #[error("frame carries {0} message bodies instead of one")]
    BodyCount(usize),
    /// The frame would take too much memory once decoded.
    #[error("frame of {len} bytes would decode into about {estimate} bytes; refused")]
    TooExpensive {
        /// Frame length.
        len: usize,
        /// Estimated decoded size.
        estimate: usize,
    },
}

/// Encodes and decodes frames under a size limit.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec refusing frames larger than `max_frame_len` bytes (header excluded).
    pub const fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// The limit for a frame whose body starts with `first_byte`.
    fn limit_for(&self, first_byte: u8) -> usize {
        if first_byte == RESPONSE_KEY {
            self.max_frame_len
        } else {
            self.max_frame_len.min(MAX_CONTROL_FRAME_LEN)
        }
    }

    /// Appends one frame holding `message` to `dst`.
    pub fn encode(&self, message: &wire::Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = message.encoded_len();
        let max = match message.body {
            Some(wire::message::Body::Response(_)) => self.max_frame_len,
            _ => self.max_frame_len.min(MAX_CONTROL_FRAME_LEN),
        };
        if len > max {
            return Err(FrameError::Oversized { len, max });
        }
        dst.reserve(HEADER_LEN + len);
        // The limit is far below u32::MAX, so the cast is lossless.
        dst.put_u32(len as u32);
        message
            .encode(dst)
            .expect("reserved enough capacity for the encoded message");
        Ok(())
    }

    /// Takes one complete frame off the front of `src`. Returns `Ok(None)` when `src` does
    /// not yet hold a whole frame; the bytes stay in `src` for the next call.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<wire::Message>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::Oversized {
                len,
                max: self.max_frame_len,
            });
        }
        if len > MAX_CONTROL_FRAME_LEN.min(self.max_frame_len) {
            // Only a block response may be this large; its first byte says which it is.
            let Some(&first) = src.get(HEADER_LEN) else {
                return Ok(None);
            };
            let max = self.limit_for(first);
            if len > max {
                return Err(FrameError::Oversized { len, max });
            }
        }
        if src.len() < HEADER_LEN + len {
            // Room for the next part only: what a frame holds in memory grows with what
            // arrived, so a peer that announces a large frame and stalls pins little.
            src.reserve((HEADER_LEN + len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        let estimate = decoded_size(&src[HEADER_LEN..HEADER_LEN + len])?;
        if estimate > DECODE_BUDGET_FACTOR * len + 64 * 1024 {
            return Err(FrameError::TooExpensive { len, estimate });
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(len).freeze();
        let message = wire::Message::decode(body)?;
        Ok(Some(message))
    }

    /// Call when the byte stream has ended: leftover bytes mean the last frame was cut off.
    pub fn finish(&self, src: &BytesMut) -> Result<(), FrameError> {
        if src.is_empty() {
            return Ok(());
        }
        let needed = if src.len() < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
        };
        Err(FrameError::Truncated {
            buffered: src.len(),
            needed,
        })
    }
}

/// The message types whose fields the cost walk descends into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Envelope,
    ClusterConfig,
    Folder,
    Index,
    FileInfo,
    Vector,
    DownloadProgress,
    FileDownloadProgress,
    /// Any message without repeated sub-messages of its own.
    Leaf(usize),
}

impl Shape {
    fn decoded_size(self) -> usize {
        use std::mem::size_of;
        match self {
            Self::Envelope => size_of::<wire::Message>(),
            Self::ClusterConfig => size_of::<wire::ClusterConfig>(),
            Self::Folder => size_of::<wire::Folder>(),
            Self::Index => size_of::<wire::Index>(),
            Self::FileInfo => size_of::<wire::FileInfo>(),
            Self::Vector => size_of::<wire::Vector>(),
            Self::DownloadProgress => size_of::<wire::DownloadProgress>(),
            Self::FileDownloadProgress => size_of::<wire::FileDownloadProgress>(),
            Self::Leaf(size) => size,
        }
    }

    /// The shape of a length-delimited field, when it is a sub-message.
    fn child(self, field: u32) -> Option<Self> {
        use std::mem::size_of;
        Some(match (self, field) {
            (Self::Envelope, 2) => Self::ClusterConfig,
            (Self::Envelope, 3 | 4) => Self::Index,
            (Self::Envelope, 7) => Self::DownloadProgress,
            (Self::Envelope, 1 | 5 | 6 | 8 | 9) => Self::Leaf(size_of::<wire::Hello>()),
            (Self::ClusterConfig, 1) => Self::Folder,
            (Self::Folder, 5) => Self::Leaf(size_of::<wire::FolderDevice>()),
            (Self::Index, 2) => Self::FileInfo,
            (Self::FileInfo, 10) | (Self::FileDownloadProgress, 2) => Self::Vector,
            (Self::FileInfo, 11) => Self::Leaf(size_of::<wire::BlockInfo>()),
            (Self::Vector, 1) => Self::Leaf(size_of::<wire::Counter>()),
            (Self::DownloadProgress, 2) => Self::FileDownloadProgress,
            _ => return None,
        })
    }
}

/// Estimates the bytes `wire::Message::decode` would allocate for `body`, without allocating:
/// each sub-message costs its struct size, each string, bytes or packed field its length (four
/// times for packed integers, which widen) plus a `Vec` header, each scalar 8 bytes. Also
/// checks the envelope holds exactly one body.
fn decoded_size(body: &[u8]) -> Result<usize, FrameError> {
    let mut bodies = 0;
    let mut buf = body;
    while buf.has_remaining() {
        let (_, wire_type) = prost::encoding::decode_key(&mut buf)?;
        skip_value(&mut buf, wire_type)?;
        bodies += 1;
    }
    if bodies != 1 {
        return Err(FrameError::BodyCount(bodies));
    }
    Ok(Shape::Envelope.decoded_size() + walk(body, Shape::Envelope)?)
}

fn walk(mut buf: &[u8], shape: Shape) -> Result<usize, FrameError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut cost = 0usize;
    while buf.has_remaining() {
        let (field, wire_type) = decode_key(&mut buf)?;
        if wire_type != WireType::LengthDelimited {
            skip_value(&mut buf, wire_type)?;
            cost += 8;
            continue;
        }
        let len = decode_varint(&mut buf)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= buf.len())
            .ok_or(FrameError::Malformed(
                "length-delimited field overruns the frame",
            ))?;
        let (value, rest) = buf.split_at(len);
        cost += match shape.child(field) {
            Some(child) => child.decoded_size() + walk(value, child)?,
            // FileDownloadProgress.block_indexes: packed u32, up to 4 bytes per wire byte.
            None if shape == Shape::FileDownloadProgress && field == 3 => 4 * len + 24,
            None => len + 24,
        };
        buf = rest;
    }
    Ok(cost)
}

fn skip_value(buf: &mut &[u8], wire_type: prost::encoding::WireType) -> Result<(), FrameError> {
    use prost::encoding::{WireType, decode_varint};
    let skip = match wire_type {
        WireType::Varint => {
            decode_varint(buf)?;
            0
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => usize::try_from(decode_varint(buf)?).unwrap_or(usize::MAX),
        WireType::StartGroup | WireType::EndGroup => {
            return Err(FrameError::Malformed("groups are not used by peerfold/1"));
        }
    };
    if skip > buf.len() {
        return Err(FrameError::Malformed("field overruns the frame"));
    }
    buf.advance(skip);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wire::message::Body;

    fn ping() -> wire::Message {
        wire::Message {
            body: Some(Body::Ping(wire::Ping {})),
        }
    }

    fn close(reason: &str) -> wire::Message {
        wire::Message {
            body: Some(Body::Close(wire::Close {
                reason: reason.into(),
            })),
        }
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let codec = FrameCodec::default();
        let mut stream = BytesMut::new();
        codec.encode(&ping(), &mut stream).unwrap();
        codec.encode(&close("bye"), &mut stream).unwrap();
        let all = stream.freeze();
        for cut in 0..=all.len() {
            let mut buf = BytesMut::from(&all[..cut]);
            let mut got = Vec::new();
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&all[cut..]);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got.push(m);
            }
            assert_eq!(got, vec![ping(), close("bye")]);
            codec.finish(&buf).unwrap();
        }
    }

    #[test]
    fn oversized_frames_are_refused_on_both_sides() {
        let codec = FrameCodec::new(8);
        let mut out = BytesMut::new();
        assert!(matches!(
            codec.encode(&close("far too long a reason"), &mut out),
            Err(FrameError::Oversized { max: 8, .. })
        ));
        assert!(out.is_empty());
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::Oversized {
                len: 0xffff_ffff,
                max: 8
            })
        ));
    }

    #[test]
    fn truncated_undecodable_and_empty_frames_are_errors() {
        let codec = FrameCodec::default();
        let mut src = BytesMut::from(&[0, 0, 0, 9, 1, 2][..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(matches!(
            codec.finish(&src),
            Err(FrameError::Truncated {
                buffered: 6,
                needed: 13
            })
        ));
        // Field 1 (hello) as a length-delimited field claiming 100 bytes it does not have.
        let mut bad = BytesMut::from(&[0, 0, 0, 2, 0x0a, 100][..]);
        assert!(matches!(
            codec.decode(&mut bad),
            Err(FrameError::Malformed(_))
        ));
        // A well-formed frame whose Hello has a string field with invalid UTF-8.
        let mut bad = BytesMut::from(&[0, 0, 0, 5, 0x0a, 3, 0x0a, 1, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut bad),
            Err(FrameError::Undecodable(_))
        ));
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut empty),
            Err(FrameError::BodyCount(0))
        ));
        // Two bodies (a ping, then a close) in one envelope.
        let mut two = BytesMut::from(&[0, 0, 0, 4, 0x42, 0, 0x4a, 0][..]);
        assert!(matches!(
            codec.decode(&mut two),
            Err(FrameError::BodyCount(2))
        ));
    }

    #[test]
    fn frames_that_would_balloon_when_decoded_are_refused() {
        // An index of thousands of empty FileInfos: 2 bytes each on the wire, hundreds of
        // bytes each in memory.
        let index = wire::Message {
            body: Some(Body::Index(wire::Index {
                folder: String::new(),
                files: vec![wire::FileInfo::default(); 2000],
            })),
        };
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(&index, &mut buf).unwrap();
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(FrameError::TooExpensive { .. })
        ));
        // A realistic batch decodes fine.
        let file = wire::FileInfo {
            name: "photos/2024/IMG_0001.jpg".into(),
            size: 3 << 20,
            version: Some(wire::Vector {
                counters: vec![wire::Counter { id: 1, value: 3 }],
            }),
            blocks: (0..48)
                .map(|i| wire::BlockInfo {
                    offset: i << 16,
                    size: 1 << 16,
                    hash: vec![7; 32],
                })
                .collect(),
            ..Default::default()
        };
        let index = wire::Message {
            body: Some(Body::Index(wire::Index {
                folder: "photos".into(),
                files: vec![file; 500],
            })),
        };
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(&index, &mut buf).unwrap();
        assert_eq!(FrameCodec::default().decode(&mut buf).unwrap(), Some(index));
    }

    #[test]
    fn only_block_responses_may_be_large() {
        let big_close = close(&"x".repeat(MAX_CONTROL_FRAME_LEN));
        assert!(matches!(
            FrameCodec::default().encode(&big_close, &mut BytesMut::new()),
            Err(FrameError::Oversized { .. })
        ));
        let response = wire::Message {
            body: Some(Body::Response(wire::Response {
                id: 1,
                data: vec![1; MAX_CONTROL_FRAME_LEN * 2].into(),
                code: 0,
            })),
        };
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(&response, &mut buf).unwrap();
        assert_eq!(
            FrameCodec::default().decode(&mut buf).unwrap(),
            Some(response)
        );
        // A header announcing a large non-response frame is refused from its first body byte.
        let mut header = BytesMut::from(&(MAX_CONTROL_FRAME_LEN as u32 + 1).to_be_bytes()[..]);
        assert!(FrameCodec::default().decode(&mut header).unwrap().is_none());
        header.extend_from_slice(&[0x4a]);
        assert!(matches!(
            FrameCodec::default().decode(&mut header),
            Err(FrameError::Oversized { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let codec = FrameCodec::new(256);
            let mut src = BytesMut::from(bytes.as_slice());
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        // Never buffers more than one frame's worth.
                        prop_assert!(src.capacity() <= 512.max(HEADER_LEN + 256));
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn encoded_close_round_trips(reason in ".{0,200}") {
            let codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            codec.encode(&close(&reason), &mut buf).unwrap();
            prop_assert_eq!(buf.len(), HEADER_LEN + close(&reason).encoded_len());
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(close(&reason)));
            prop_assert!(buf.is_empty());
        }
    }
}
