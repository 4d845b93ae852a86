//! A QUIC connection as a [`Link`]: each stream of frames is a QUIC bidirectional stream.

use crate::peers::Reason;
use crate::peers::link::{FramedStream, Link, LinkError, LinkStats, PathKind, next_link_id};

/// A direct QUIC connection to a peer.
pub(super) struct QuicLink {
    connection: quinn::Connection,
    id: usize,
}

impl QuicLink {
    pub(super) fn new(connection: quinn::Connection) -> Self {
        Self {
            connection,
            id: next_link_id(),
        }
    }
}

fn lost(e: quinn::ConnectionError) -> LinkError {
    LinkError::Closed(e.to_string())
}

#[async_trait::async_trait]
impl Link for QuicLink {
    async fn open(&self) -> Result<FramedStream, LinkError> {
        let (send, recv) = self.connection.open_bi().await.map_err(lost)?;
        Ok(FramedStream::new(recv, send, None))
    }

    async fn accept(&self) -> Result<FramedStream, LinkError> {
        let (send, recv) = self.connection.accept_bi().await.map_err(lost)?;
        Ok(FramedStream::new(recv, send, None))
    }

    fn close(&self, reason: &Reason) {
        self.connection
            .close(reason.code().into(), reason.to_string().as_bytes());
    }

    fn close_reason(&self) -> Option<String> {
        self.connection.close_reason().map(|r| r.to_string())
    }

    fn remote_address(&self) -> String {
        self.connection.remote_address().to_string()
    }

    fn stats(&self) -> LinkStats {
        let stats = self.connection.stats();
        LinkStats {
            rx_bytes: stats.udp_rx.bytes,
            tx_bytes: stats.udp_tx.bytes,
        }
    }

    fn id(&self) -> usize {
        self.id
    }

    fn path(&self) -> PathKind {
        PathKind::Direct
    }
}
