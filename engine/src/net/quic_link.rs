//! A QUIC connection as a [`Link`]: each stream of frames is a QUIC bidirectional stream.

use std::time::Duration;

use bytes::Bytes;
use peerfold_protocol::wire::{self, message::Body};

use crate::peers::Reason;
use crate::peers::flow::Windows;
use crate::peers::link::{FramedStream, Link, LinkError, LinkStats, PathKind, next_link_id};

/// A QUIC connection to a peer, direct or through a relay.
pub(super) struct QuicLink {
    connection: quinn::Connection,
    id: usize,
    /// The round trip when the handshake completed.
    round_trip: Duration,
    /// The relay's URL, for a connection over a relayed path.
    relay: Option<String>,
}

impl QuicLink {
    /// A connection whose handshake is complete: its windows are sized to the round trip
    /// the handshake measured (the transport starts every connection at the floors).
    pub(super) fn new(connection: quinn::Connection) -> Self {
        let round_trip = connection.rtt();
        let windows = Windows::for_round_trip(round_trip);
        connection.set_send_window(windows.send.into());
        connection.set_receive_window(windows.receive.into());
        Self {
            connection,
            id: next_link_id(),
            round_trip,
            relay: None,
        }
    }

    /// A connection over a session of the relay at `relay` (its URL).
    pub(super) fn relayed(connection: quinn::Connection, relay: String) -> Self {
        Self {
            relay: Some(relay),
            ..Self::new(connection)
        }
    }
}

/// How often a liveness probe looks for the peer's answer.
const PROBE_POLL: Duration = Duration::from_millis(20);

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
        match &self.relay {
            Some(relay) => relay.clone(),
            None => self.connection.remote_address().to_string(),
        }
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
        match self.relay {
            Some(_) => PathKind::Relayed,
            None => PathKind::Direct,
        }
    }

    fn round_trip(&self) -> Duration {
        self.round_trip
    }

    /// Sends the peer something its QUIC stack must acknowledge and watches for any datagram
    /// from it: a live peer's acks (within its ack delay, 25 ms by default) or its traffic
    /// are the sign of life; a dead peer sends none, and a restarted one on the same port
    /// answers with a stateless reset, which closes the connection. What is sent: a QUIC
    /// DATAGRAM frame (not held back by flow control, so a busy link whose streams wait
    /// for the peer's window still answers at once) and a Ping on a stream of its own (for
    /// a peer that takes no datagrams). The watching starts before the sending, which may
    /// wait.
    async fn answers(&self, within: Duration) -> bool {
        let before = self.connection.stats().udp_rx.datagrams;
        let ping = async {
            let _ = self.connection.send_datagram(Bytes::from_static(b"."));
            if let Ok(mut stream) = self.open().await {
                let ping = wire::Message {
                    body: Some(Body::Ping(wire::Ping {})),
                };
                if stream.send.send(&ping).await.is_ok() {
                    let _ = stream.send.finish().await;
                }
            }
            std::future::pending::<()>().await;
        };
        let heard = async {
            loop {
                if self.connection.close_reason().is_some() {
                    return false;
                }
                if self.connection.stats().udp_rx.datagrams > before {
                    return true;
                }
                tokio::time::sleep(PROBE_POLL).await;
            }
        };
        let probe = async {
            tokio::select! {
                () = ping => false,
                heard = heard => heard,
            }
        };
        tokio::time::timeout(within, probe).await.unwrap_or(false)
    }
}
