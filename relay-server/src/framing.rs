//! Relay messages on a stream: the 12-byte header, then at most 1024 bytes of body
//! (`peerfold_protocol::relay` does the bytes; this does the I/O).
//!
//! Two readers, because the two modes need different things. Protocol mode waits for a
//! message while pings and invitations go out, so its reader ([`MessageReader`]) must be
//! cancel-safe: it keeps partial messages in its own buffer. Session mode must not read a
//! byte past the `JoinSessionRequest`, since what follows belongs to the peer, so
//! [`read_one`] reads exactly one header and one body.

use bytes::{Buf, BytesMut};
use peerfold_protocol::relay::{HEADER_LEN, MAX_MESSAGE_LEN, Message, RelayError, parse_header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why no message could be read or written. These end one connection, never the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Bytes that are not a relay message (bad magic, length over 1024, unknown type...).
    #[error(transparent)]
    Protocol(#[from] RelayError),
}

/// Reads messages from a stream, keeping partial ones across cancelled reads.
#[derive(Debug, Default)]
pub(crate) struct MessageReader {
    buf: BytesMut,
}

impl MessageReader {
    /// The next message. Cancel-safe: a read interrupted by another `select!` branch loses
    /// nothing. A bad header fails as soon as its 12 bytes are in, before any body is awaited.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Message, FrameError> {
        loop {
            if self.buf.len() >= HEADER_LEN {
                let header: [u8; HEADER_LEN] =
                    self.buf[..HEADER_LEN].try_into().expect("HEADER_LEN bytes");
                let (_, len) = parse_header(&header)?;
                if self.buf.len() >= HEADER_LEN + len {
                    let message = Message::decode(&header, &self.buf[HEADER_LEN..HEADER_LEN + len]);
                    self.buf.advance(HEADER_LEN + len);
                    return Ok(message?);
                }
            }
            // Room for one whole message; `read_buf` is what makes this cancel-safe.
            self.buf.reserve(HEADER_LEN + MAX_MESSAGE_LEN);
            if io.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Closed);
            }
        }
    }
}

/// Reads exactly one message and nothing after it. Not cancel-safe; bound it with a timeout.
pub(crate) async fn read_one<R: AsyncRead + Unpin>(io: &mut R) -> Result<Message, FrameError> {
    let mut header = [0; HEADER_LEN];
    read_exactly(io, &mut header).await?;
    let (_, len) = parse_header(&header)?;
    let mut body = [0; MAX_MESSAGE_LEN];
    read_exactly(io, &mut body[..len]).await?;
    Ok(Message::decode(&header, &body[..len])?)
}

async fn read_exactly<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
        Err(error) => Err(error.into()),
    }
}

/// Writes one message and flushes it (TLS buffers until flushed).
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    io: &mut W,
    message: &Message,
) -> Result<(), FrameError> {
    io.write_all(&message.encode()).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use peerfold_protocol::relay::{MAGIC, Response};

    use super::*;

    #[tokio::test]
    async fn the_reader_splits_coalesced_and_fragmented_messages() {
        let mut bytes = Message::Ping.encode();
        bytes.extend(Message::Response(Response::new(Response::NOT_FOUND)).encode());
        let (mut tx, mut rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            // One byte at a time: every partial state is seen.
            for byte in bytes {
                tx.write_all(&[byte]).await.unwrap();
            }
        });
        let mut reader = MessageReader::default();
        assert_eq!(reader.next(&mut rx).await.unwrap(), Message::Ping);
        assert_eq!(
            reader.next(&mut rx).await.unwrap(),
            Message::Response(Response::new(Response::NOT_FOUND))
        );
        writer.await.unwrap();
        assert!(matches!(
            reader.next(&mut rx).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn bad_headers_fail_without_waiting_for_a_body() {
        let mut header = Vec::new();
        header.extend(MAGIC.to_be_bytes());
        header.extend(0i32.to_be_bytes());
        header.extend(2000i32.to_be_bytes());
        let (mut tx, mut rx) = tokio::io::duplex(64);
        tx.write_all(&header).await.unwrap();
        let error = MessageReader::default().next(&mut rx).await.unwrap_err();
        assert!(matches!(
            error,
            FrameError::Protocol(RelayError::BadLength(2000))
        ));
        // `read_one` leaves what follows the message in the stream.
        let mut bytes = Message::Pong.encode();
        bytes.extend(b"payload");
        tx.write_all(&bytes).await.unwrap();
        assert_eq!(read_one(&mut rx).await.unwrap(), Message::Pong);
        let mut rest = [0; 7];
        rx.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"payload");
    }
}
