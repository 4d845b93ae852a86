//! Frames over QUIC streams: the async read loop around the pure `FrameCodec`.

use bytes::BytesMut;
use peerfold_protocol::framing::{FrameCodec, FrameError};
use peerfold_protocol::wire;
use quinn::{RecvStream, SendStream};

/// Why a stream stopped carrying frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The peer sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading failed (connection lost, stream reset).
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was already closed.
    #[error("stream closed")]
    Closed(#[from] quinn::ClosedStream),
}

/// The most bytes taken from the stream per read.
const MAX_CHUNK: usize = 256 * 1024;

/// Reads whole messages from a receive stream.
pub(crate) struct FrameReader {
    stream: RecvStream,
    buffer: BytesMut,
    codec: FrameCodec,
}

impl FrameReader {
    pub(crate) fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            buffer: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::default(),
        }
    }

    /// The next message, or `None` when the peer finished the stream cleanly.
    pub(crate) async fn next(&mut self) -> Result<Option<wire::Message>, StreamError> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(message));
            }
            // Take whatever arrived (often one packet) and append it: the decoder already
            // reserved room for the frame it is waiting for.
            match self.stream.read_chunk(MAX_CHUNK, true).await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk.bytes),
                None => {
                    self.codec.finish(&self.buffer)?;
                    return Ok(None);
                }
            }
        }
    }
}

/// Writes one message as a frame.
pub(crate) async fn send(
    stream: &mut SendStream,
    message: &wire::Message,
) -> Result<(), StreamError> {
    let mut buffer = BytesMut::new();
    FrameCodec::default().encode(message, &mut buffer)?;
    stream.write_all(&buffer).await?;
    Ok(())
}
