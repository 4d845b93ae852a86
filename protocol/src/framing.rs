//! Length-delimited frames: a 4-byte big-endian length, then one encoded [`wire::Message`].
//!
//! The decoder is a pure function over a byte buffer. "Incomplete" is a normal outcome
//! (`Ok(None)`): the caller reads more bytes and tries again. The length is checked against the
//! limit before anything is allocated for the frame, so a peer cannot make us buffer more than
//! one maximum-size frame.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message as _;

use crate::chunking::MAX_BLOCK_SIZE;
use crate::wire;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// The largest frame body anyone may send: one maximum-size block plus room for the rest of a
/// response. Index batches are kept far below it by their senders.
pub const MAX_FRAME_LEN: usize = MAX_BLOCK_SIZE as usize + 64 * 1024;

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
    /// A well-formed message with no body.
    #[error("frame carries an empty message")]
    EmptyMessage,
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

    /// Appends one frame holding `message` to `dst`.
    pub fn encode(&self, message: &wire::Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = message.encoded_len();
        if len > self.max_frame_len {
            return Err(FrameError::Oversized {
                len,
                max: self.max_frame_len,
            });
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
        if src.len() < HEADER_LEN + len {
            // Make room for the rest now: the length is within the limit.
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(len).freeze();
        let message = wire::Message::decode(body)?;
        if message.body.is_none() {
            return Err(FrameError::EmptyMessage);
        }
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
            Err(FrameError::Undecodable(_))
        ));
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut empty),
            Err(FrameError::EmptyMessage)
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
