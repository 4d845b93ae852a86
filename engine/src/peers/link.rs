//! The port a session runs over: a `Link` to one authenticated peer that opens and accepts
//! bidirectional streams of frames. QUIC connections implement it (`net/`, direct or through a
//! relay), and tests use an in-memory pair ([`memory_pair`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use peerfold_protocol::framing::{FrameCodec, FrameError};
use peerfold_protocol::wire;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::Reason;
use super::rate::Throttle;

/// Why a link or one of its streams stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The peer sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading or writing failed (connection lost, stream reset).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The link is closed.
    #[error("connection closed: {0}")]
    Closed(String),
}

/// Whether a link runs directly or through a relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// A direct QUIC path.
    Direct,
    /// Through a relay server.
    Relayed,
}

/// Bytes a link carried so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Received.
    pub rx_bytes: u64,
    /// Sent.
    pub tx_bytes: u64,
}

/// One authenticated connection to a peer.
#[async_trait::async_trait]
pub(crate) trait Link: Send + Sync + 'static {
    /// Opens a stream to the peer.
    async fn open(&self) -> Result<FramedStream, LinkError>;
    /// Waits for the peer to open a stream.
    async fn accept(&self) -> Result<FramedStream, LinkError>;
    /// Closes the link (and its streams), telling the peer why.
    fn close(&self, reason: &Reason);
    /// Why the link closed, once it has.
    fn close_reason(&self) -> Option<String>;
    /// Where the peer is.
    fn remote_address(&self) -> String;
    /// Traffic so far.
    fn stats(&self) -> LinkStats;
    /// Tells links apart (unique among the links of one process).
    fn id(&self) -> usize;
    /// Direct or relayed.
    fn path(&self) -> PathKind;
    /// Whether the peer's end still answers: sends it something its transport must
    /// acknowledge and waits at most `within` for a sign of life. A closed link does not
    /// answer. (The registry asks before it lets an old link beat a new one.)
    async fn answers(&self, within: Duration) -> bool;
    /// Whether this device's own receive limits hold the link back (then a peer that
    /// delivers slowly is not to blame).
    fn receive_limited(&self) -> bool {
        false
    }
    /// The round trip measured when the link was made, before any load (what its windows
    /// are sized to, peers/flow); zero for a link with no network under it.
    fn round_trip(&self) -> Duration {
        Duration::ZERO
    }
}

/// A bidirectional stream of frames.
pub(crate) struct FramedStream {
    /// Where frames go.
    pub(crate) send: FrameSender,
    /// Where frames come from.
    pub(crate) recv: FrameReceiver,
}

impl FramedStream {
    /// A stream over any byte-stream halves. `closed` (if any) ends reads when the link is
    /// closed, for transports whose streams do not end on their own.
    pub(crate) fn new(
        read: impl AsyncRead + Send + 'static,
        write: impl AsyncWrite + Send + 'static,
        closed: Option<CancellationToken>,
    ) -> Self {
        Self {
            send: FrameSender {
                inner: Box::pin(write),
                throttle: None,
            },
            recv: FrameReceiver {
                inner: Box::pin(read),
                buffer: BytesMut::with_capacity(64 * 1024),
                codec: FrameCodec::default(),
                closed,
                received: None,
                throttle: None,
            },
        }
    }

    /// Holds the stream's bytes, both ways, to `throttle`'s limits.
    pub(crate) fn throttle(&mut self, throttle: Arc<Throttle>) {
        self.send.throttle = Some(throttle.clone());
        self.recv.throttle = Some(throttle);
    }
}

/// Writes messages as frames.
pub(crate) struct FrameSender {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
    /// The rate limits the bytes keep to, if any.
    throttle: Option<Arc<Throttle>>,
}

impl FrameSender {
    /// Writes one message.
    pub(crate) async fn send(&mut self, message: &wire::Message) -> Result<(), LinkError> {
        let mut buffer = BytesMut::new();
        FrameCodec::default().encode(message, &mut buffer)?;
        if let Some(throttle) = &self.throttle {
            throttle.sending(buffer.len()).await;
        }
        self.inner.write_all(&buffer).await?;
        Ok(())
    }

    /// Writes one message it takes (the frame is all that is kept of it while it goes out),
    /// failing with `TimedOut` when the peer takes none of it for `stall`: a peer that stops
    /// reading holds what it asked for only that long.
    pub(crate) async fn send_unless_stalled(
        &mut self,
        message: wire::Message,
        stall: Duration,
    ) -> Result<(), LinkError> {
        let mut buffer = BytesMut::new();
        FrameCodec::default().encode(&message, &mut buffer)?;
        drop(message);
        // Waiting for the limit is not the peer's stall.
        if let Some(throttle) = &self.throttle {
            throttle.sending(buffer.len()).await;
        }
        let mut written = 0;
        while written < buffer.len() {
            match tokio::time::timeout(stall, self.inner.write(&buffer[written..])).await {
                Ok(Ok(0)) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            }
        }
        Ok(())
    }

    /// Ends the stream cleanly (the peer reads the end after the last frame).
    pub(crate) async fn finish(&mut self) -> Result<(), LinkError> {
        self.inner.shutdown().await?;
        Ok(())
    }
}

/// Reads whole messages.
pub(crate) struct FrameReceiver {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    buffer: BytesMut,
    codec: FrameCodec,
    closed: Option<CancellationToken>,
    /// Where bytes are counted as they arrive, if anywhere.
    received: Option<Arc<AtomicU64>>,
    /// The rate limits the bytes keep to, if any.
    throttle: Option<Arc<Throttle>>,
}

impl FrameReceiver {
    /// Refuses frames larger than `max_frame_len` from now on: each kind of stream accepts
    /// only what is valid on it (a Request is small, a Response as large as the block asked).
    pub(crate) fn limit(&mut self, max_frame_len: usize) {
        self.codec = FrameCodec::new(max_frame_len);
    }

    /// Adds every byte read from now on to `counter`, as it arrives (a large frame shows
    /// progress long before it is complete).
    pub(crate) fn count_into(&mut self, counter: Arc<AtomicU64>) {
        self.received = Some(counter);
    }

    /// The next message, or `None` when the peer finished the stream cleanly.
    pub(crate) async fn next(&mut self) -> Result<Option<wire::Message>, LinkError> {
        loop {
            if let Some(message) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(message));
            }
            // The decoder reserved room for the frame it waits for; take what arrived.
            let read = match &self.closed {
                None => self.inner.read_buf(&mut self.buffer).await?,
                Some(closed) => tokio::select! {
                    biased;
                    () = closed.cancelled() => return Err(LinkError::Closed("link closed".into())),
                    read = self.inner.read_buf(&mut self.buffer) => read?,
                },
            };
            if read == 0 {
                self.codec.finish(&self.buffer)?;
                return Ok(None);
            }
            if let Some(counter) = &self.received {
                counter.fetch_add(read as u64, Ordering::Relaxed);
            }
            if let Some(throttle) = &self.throttle {
                throttle.received(read).await;
            }
        }
    }
}

/// A new link ID.
pub(crate) fn next_link_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Two ends of an in-memory link, for tests of the session and the peer registry.
#[cfg(test)]
pub(crate) fn memory_pair() -> (Arc<MemoryLink>, Arc<MemoryLink>) {
    let closed = CancellationToken::new();
    let reason = Arc::new(std::sync::Mutex::new(None));
    let (a_tx, a_rx) = tokio::sync::mpsc::channel(64);
    let (b_tx, b_rx) = tokio::sync::mpsc::channel(64);
    let end = |to_peer, from_peer| {
        Arc::new(MemoryLink {
            to_peer,
            from_peer: tokio::sync::Mutex::new(from_peer),
            closed: closed.clone(),
            reason: reason.clone(),
            id: next_link_id(),
            muted: std::sync::atomic::AtomicBool::new(false),
            relayed: std::sync::atomic::AtomicBool::new(false),
            streams: AtomicU64::new(0),
        })
    };
    (end(b_tx, a_rx), end(a_tx, b_rx))
}

/// One end of [`memory_pair`].
#[cfg(test)]
pub(crate) struct MemoryLink {
    to_peer: tokio::sync::mpsc::Sender<tokio::io::DuplexStream>,
    from_peer: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>>,
    closed: CancellationToken,
    reason: Arc<std::sync::Mutex<Option<String>>>,
    id: usize,
    /// Plays a peer that crashed: the link stays open but no longer answers.
    muted: std::sync::atomic::AtomicBool,
    /// Plays a path through a relay.
    relayed: std::sync::atomic::AtomicBool,
    /// Streams opened and accepted: what this end shows as its traffic (each block request
    /// is a stream), so a draining session sees a link in use as one.
    streams: AtomicU64,
}

#[cfg(test)]
impl MemoryLink {
    /// From now on the link does not answer [`Link::answers`], as if the peer had crashed.
    pub(crate) fn mute(&self) {
        self.muted.store(true, Ordering::Relaxed);
    }

    /// From now on the link says it goes through a relay.
    pub(crate) fn relay(&self) {
        self.relayed.store(true, Ordering::Relaxed);
    }

    fn stream(&self, io: tokio::io::DuplexStream) -> FramedStream {
        let (read, write) = tokio::io::split(io);
        FramedStream::new(read, write, Some(self.closed.clone()))
    }

    fn closed_error(&self) -> LinkError {
        LinkError::Closed(self.close_reason().unwrap_or_else(|| "link closed".into()))
    }
}

#[cfg(test)]
#[async_trait::async_trait]
impl Link for MemoryLink {
    async fn open(&self) -> Result<FramedStream, LinkError> {
        if self.closed.is_cancelled() {
            return Err(self.closed_error());
        }
        self.streams.fetch_add(1, Ordering::Relaxed);
        let (here, there) = tokio::io::duplex(1 << 20);
        self.to_peer
            .send(there)
            .await
            .map_err(|_| self.closed_error())?;
        Ok(self.stream(here))
    }

    async fn accept(&self) -> Result<FramedStream, LinkError> {
        let mut incoming = self.from_peer.lock().await;
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Err(self.closed_error()),
            io = incoming.recv() => {
                self.streams.fetch_add(1, Ordering::Relaxed);
                io.map(|io| self.stream(io)).ok_or_else(|| self.closed_error())
            }
        }
    }

    fn close(&self, reason: &Reason) {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| reason.to_string());
        self.closed.cancel();
    }

    fn close_reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remote_address(&self) -> String {
        "memory".into()
    }

    fn stats(&self) -> LinkStats {
        let streams = self.streams.load(Ordering::Relaxed);
        LinkStats {
            rx_bytes: streams,
            tx_bytes: streams,
        }
    }

    fn id(&self) -> usize {
        self.id
    }

    fn path(&self) -> PathKind {
        if self.relayed.load(Ordering::Relaxed) {
            PathKind::Relayed
        } else {
            PathKind::Direct
        }
    }

    /// Both ends live in this process: the link answers while it is open (and not muted).
    async fn answers(&self, _within: Duration) -> bool {
        !self.closed.is_cancelled() && !self.muted.load(Ordering::Relaxed)
    }
}
