//! One QUIC endpoint, two kinds of path: `MuxSocket` is the endpoint's socket. Datagrams
//! for a real address go out through the UDP socket; datagrams for a relayed path's stand-in
//! address go, length-prefixed, into that relay session's byte stream, and what comes back
//! from it is handed to quinn as if it came from the stand-in address. So a relayed
//! connection is dialed, accepted, authenticated and run exactly like a direct one, and TLS
//! stays end to end: the relay only ever carries QUIC packets.
//!
//! The same socket also carries the STUN probes of `net::stun` ([`MuxSocket::send_stun`]),
//! so the mapping they learn is the one QUIC uses, and hole-punching datagrams
//! ([`MuxSocket::send_punch`]), so the NAT opens for the port QUIC uses; STUN that arrives
//! is taken out of what the UDP socket receives before quinn sees it.
//!
//! Who wakes me: quinn (sends, receives), the session streams' reader tasks. Whom I wake:
//! quinn's endpoint driver (a datagram arrived on a relayed path), a STUN probe waiting for
//! its answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use peerfold_protocol::stun::{self, TxId};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::life::Life;

/// Datagrams queued towards one relay session before new ones are dropped (QUIC retransmits
/// what is lost; its congestion control slows down). About 1.5 MB of 1,500-byte packets.
const SEND_QUEUE: usize = 1024;
/// Datagrams from every relay session waiting for quinn.
const RECV_QUEUE: usize = 2048;
/// How long a closing path may take to write what is still queued.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);
/// How much of a session stream is read at once.
const READ_CHUNK: usize = 256 * 1024;
/// The largest datagram a frame holds (its length is a `u16`).
const MAX_DATAGRAM: usize = u16::MAX as usize;

/// Stand-in addresses come from 240.0.0.0/4 ("reserved for future use"): never a real
/// peer's, so a datagram to one is always a relayed one.
fn stand_in(n: u32) -> SocketAddr {
    let [_, b, c, d] = n.to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(240, b, c, d)), 1)
}

/// `addr` as a stand-in's key when it is one (an IPv6 endpoint sees IPv4-mapped forms).
fn as_stand_in(addr: SocketAddr) -> Option<SocketAddr> {
    let ip = addr.ip().to_canonical();
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 240 => Some(SocketAddr::new(ip, addr.port())),
        _ => None,
    }
}

/// A relayed path, while its session stream is open.
struct RelayedPath {
    to_session: mpsc::Sender<Bytes>,
}

/// The endpoint's socket: UDP plus relayed paths.
pub(crate) struct MuxSocket {
    udp: Arc<dyn AsyncUdpSocket>,
    /// The UDP socket is IPv6 (stand-ins are then handed to quinn IPv4-mapped).
    ipv6: bool,
    paths: Mutex<HashMap<SocketAddr, RelayedPath>>,
    next: AtomicU32,
    /// Datagrams from every relayed path: (its stand-in address, the datagram).
    from_relays: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    to_quinn: mpsc::Sender<(SocketAddr, Bytes)>,
    /// STUN transactions sent on this socket and not yet answered: the answer's mapped
    /// address goes to the probe that waits for it.
    stun_waiting: Mutex<HashMap<TxId, oneshot::Sender<SocketAddr>>>,
}

/// STUN transactions outstanding at once (each probe has one; more is a bug, refused).
const MAX_STUN_WAITING: usize = 64;

impl fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSocket")
            .field("udp", &self.udp)
            .field("relayed_paths", &self.paths().len())
            .finish()
    }
}

/// A relayed path as its owner holds it: the address quinn knows it by, and a token that
/// fires when the session stream ends (the path is then gone).
#[derive(Debug, Clone)]
pub(crate) struct PathHandle {
    pub(crate) stand_in: SocketAddr,
    pub(crate) ended: CancellationToken,
}

impl MuxSocket {
    pub(crate) fn new(udp: Arc<dyn AsyncUdpSocket>) -> Self {
        let (to_quinn, from_relays) = mpsc::channel(RECV_QUEUE);
        Self {
            ipv6: udp.local_addr().is_ok_and(|a| a.is_ipv6()),
            udp,
            paths: Mutex::new(HashMap::new()),
            next: AtomicU32::new(1),
            from_relays: Mutex::new(from_relays),
            to_quinn,
            stun_waiting: Mutex::new(HashMap::new()),
        }
    }

    fn stun_waiting(&self) -> MutexGuard<'_, HashMap<TxId, oneshot::Sender<SocketAddr>>> {
        self.stun_waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a STUN Binding request with transaction ID `tx` to `to` through the UDP socket
    /// quinn uses; the receiver gets the mapped address from the answer. Dropping it (or
    /// calling [`MuxSocket::forget_stun`]) forgets the transaction.
    pub(crate) fn send_stun(
        &self,
        to: SocketAddr,
        tx: TxId,
    ) -> io::Result<oneshot::Receiver<SocketAddr>> {
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = self.stun_waiting();
            waiting.retain(|_, sender| !sender.is_closed());
            if waiting.len() >= MAX_STUN_WAITING {
                return Err(io::Error::other("too many STUN transactions"));
            }
            match waiting.entry(tx) {
                Entry::Occupied(_) => return Err(io::Error::other("STUN transaction reused")),
                Entry::Vacant(slot) => slot.insert(answer),
            };
        }
        if let Err(error) = self.send_datagram(to, &stun::binding_request(tx)) {
            self.forget_stun(tx);
            return Err(error);
        }
        Ok(answered)
    }

    /// Sends a hole-punching datagram to `to` through the UDP socket quinn uses: a STUN
    /// Binding indication, which asks for no answer and which a peerfold socket at the other
    /// end takes out of what its QUIC sees (as it does STUN answers).
    pub(crate) fn send_punch(&self, to: SocketAddr, tx: TxId) -> io::Result<()> {
        self.send_datagram(to, &stun::binding_indication(tx))
    }

    fn send_datagram(&self, to: SocketAddr, contents: &[u8]) -> io::Result<()> {
        // An IPv6 socket speaks of IPv4 peers in their mapped form.
        let destination = match (self.ipv6, to.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port()),
            _ => to,
        };
        self.udp.try_send(&Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        })
    }

    /// The UDP socket's port (0 if it cannot be read).
    pub(crate) fn local_port(&self) -> u16 {
        self.udp.local_addr().map_or(0, |a| a.port())
    }

    /// Whether the UDP socket is IPv4 (it then reaches IPv4 servers only).
    pub(crate) fn is_ipv4(&self) -> bool {
        !self.ipv6
    }

    /// Forgets an unanswered STUN transaction.
    pub(crate) fn forget_stun(&self, tx: TxId) {
        self.stun_waiting().remove(&tx);
    }

    /// Whether `datagram` is STUN, so not for quinn: the answer to one of our transactions
    /// is handed to its probe, anything else (a peer's hole-punching indication, a stray
    /// answer) dropped. QUIC packets never pass `is_stun` (a long header has the top bit
    /// set, a short one bit 0x40).
    fn stun_answer(&self, datagram: &[u8]) -> bool {
        let Some(tx) = stun::transaction_id(datagram) else {
            return false;
        };
        if let Some(probe) = self.stun_waiting().remove(&tx)
            && let Some((_, mapped)) = stun::parse_binding_response(datagram)
        {
            let _ = probe.send(mapped);
        }
        true
    }

    /// Takes the STUN answers out of `n` received datagrams, moving the others down so the
    /// batch stays contiguous; returns how many are left for quinn.
    fn take_stun_answers(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        n: usize,
    ) -> usize {
        let mut kept = 0;
        for i in 0..n {
            let m = meta[i];
            // A GRO batch (len > stride) is QUIC: STUN answers come one at a time.
            if m.len == m.stride && m.len <= bufs[i].len() && self.stun_answer(&bufs[i][..m.len]) {
                continue;
            }
            if kept != i {
                let (head, tail) = bufs.split_at_mut(i);
                head[kept][..m.len].copy_from_slice(&tail[0][..m.len]);
                meta[kept] = m;
            }
            kept += 1;
        }
        kept
    }

    fn paths(&self) -> MutexGuard<'_, HashMap<SocketAddr, RelayedPath>> {
        // Inserts and removals only: a poisoned map is still whole.
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `stream` (a joined relay session) a path: returns the stand-in address to dial
    /// or to expect a connection from. The path ends when the stream does, when `life`
    /// stops, or when the handle's token is cancelled (the link over it closed).
    pub(crate) fn attach<S>(self: &Arc<Self>, stream: S, life: &Life) -> PathHandle
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let key = stand_in(self.next.fetch_add(1, Ordering::Relaxed) & 0x0FFF_FFFF);
        // quinn on an IPv6 socket speaks of IPv4 peers in their mapped form.
        let stand_in = match (self.ipv6, key.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), key.port()),
            _ => key,
        };
        let (to_session, queued) = mpsc::channel(SEND_QUEUE);
        let ended = CancellationToken::new();
        self.paths().insert(key, RelayedPath { to_session });
        let (reader, writer) = tokio::io::split(stream);
        let mux = self.clone();
        let stop = ended.clone();
        let stopped = life.child_token();
        life.spawn(async move {
            tokio::select! {
                result = read_frames(reader, stand_in, &mux.to_quinn) => {
                    debug!(%stand_in, ?result, "relayed path: the session stream ended");
                }
                result = write_frames(writer, queued, &stop) => {
                    debug!(%stand_in, ?result, "relayed path: closed or cannot write");
                }
                () = stopped.cancelled() => {}
            }
            stop.cancel();
            mux.paths().remove(&key);
        });
        PathHandle { stand_in, ended }
    }

    fn send_relayed(&self, stand_in: SocketAddr, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(to_session) = self.paths().get(&stand_in).map(|p| p.to_session.clone()) else {
            // The session ended: like a packet to a host that went away.
            return Ok(());
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(segment) {
            if datagram.len() > MAX_DATAGRAM {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "datagram too large",
                ));
            }
            // A full queue drops the packet (never blocks quinn): QUIC recovers from loss.
            let _ = to_session.try_send(Bytes::copy_from_slice(datagram));
        }
        Ok(())
    }

    fn poll_relayed(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<usize> {
        let mut from_relays = self.from_relays.lock().unwrap_or_else(|p| p.into_inner());
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            match from_relays.poll_recv(cx) {
                Poll::Ready(Some((from, datagram))) => {
                    let buf = &mut bufs[filled];
                    if datagram.len() > buf.len() {
                        continue; // larger than quinn takes: a peer's bug, dropped
                    }
                    buf[..datagram.len()].copy_from_slice(&datagram);
                    meta[filled] = RecvMeta {
                        addr: from,
                        len: datagram.len(),
                        stride: datagram.len(),
                        ecn: None,
                        dst_ip: None,
                    };
                    filled += 1;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if filled == 0 {
            Poll::Pending
        } else {
            Poll::Ready(filled)
        }
    }
}

/// Datagrams from a session stream: `u16` big-endian length, then the datagram. The
/// stream is read in large chunks and every whole frame in a chunk is handed on as a slice
/// of it (a read per datagram, two with the length, was what a relayed path spent its time
/// on: bench/RESULTS.md).
async fn read_frames(
    mut reader: impl AsyncRead + Unpin,
    from: SocketAddr,
    to_quinn: &mpsc::Sender<(SocketAddr, Bytes)>,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        while let [high, low, ..] = buf[..] {
            let len = usize::from(u16::from_be_bytes([high, low]));
            if buf.len() < 2 + len {
                break;
            }
            buf.advance(2);
            // quinn's queue full: dropped, as a busy UDP socket would.
            let _ = to_quinn.try_send((from, buf.split_to(len).freeze()));
        }
        // Room for at least one more whole frame (a new chunk once the datagrams handed
        // on from this one are gone, or a copy of the partial frame into a fresh one).
        buf.reserve(READ_CHUNK.max(2 + MAX_DATAGRAM));
        if reader.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Queued datagrams into a session stream, as many per write as are waiting; once `stop`
/// fires, what is still queued (a QUIC close, say) is written before the stream is shut.
async fn write_frames(
    mut writer: impl AsyncWrite + Unpin,
    mut queued: mpsc::Receiver<Bytes>,
    stop: &CancellationToken,
) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            first = queued.recv() => first,
            () = stop.cancelled() => {
                while let Ok(next) = queued.try_recv() {
                    push_frame(&mut out, &next);
                }
                let flush = async {
                    writer.write_all(&out).await?;
                    writer.shutdown().await
                };
                return tokio::time::timeout(FLUSH_LIMIT, flush)
                    .await
                    .unwrap_or(Ok(()));
            }
        };
        let Some(first) = first else {
            return Ok(());
        };
        push_frame(&mut out, &first);
        while out.len() < 256 * 1024 {
            match queued.try_recv() {
                Ok(next) => push_frame(&mut out, &next),
                Err(_) => break,
            }
        }
        writer.write_all(&out).await?;
        out.clear();
    }
}

fn push_frame(out: &mut BytesMut, datagram: &[u8]) {
    // `send_relayed` refuses datagrams that do not fit a u16 length.
    let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&datagram[..usize::from(len)]);
}

impl AsyncUdpSocket for MuxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Relayed sends never wait (a full queue drops), so only UDP's readiness matters.
        self.udp.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match as_stand_in(transmit.destination) {
            Some(stand_in) => self.send_relayed(stand_in, transmit),
            None => self.udp.try_send(transmit),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Relayed datagrams first: a busy UDP socket must not starve a relayed path.
        if let Poll::Ready(n) = self.poll_relayed(cx, bufs, meta) {
            return Poll::Ready(Ok(n));
        }
        loop {
            let n = std::task::ready!(self.udp.poll_recv(cx, bufs, meta))?;
            // STUN answers are ours, not quinn's; a batch of nothing else is read again.
            let kept = self.take_stun_answers(bufs, meta, n);
            if kept > 0 || n == 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.udp.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Frames written in pieces that cut through lengths and bodies, and frames larger than
    /// a read chunk's leftover, come out whole and in order; the end of the stream ends it.
    #[tokio::test]
    async fn frames_are_read_back_whole_whatever_the_stream_cuts() {
        let datagrams: Vec<Vec<u8>> = (0..400u32)
            .map(|i| {
                let len = [0, 1, 1200, 1452, 9000, 65535][i as usize % 6];
                (0..len).map(|j| (i as usize + j) as u8).collect()
            })
            .collect();
        let mut wire = BytesMut::new();
        for d in &datagrams {
            push_frame(&mut wire, d);
        }
        let (mut write, read) = tokio::io::duplex(4096);
        let from = stand_in(7);
        let (to_quinn, mut received) = mpsc::channel(datagrams.len());
        let writer = tokio::spawn(async move {
            for (i, piece) in wire.chunks(777).enumerate() {
                write.write_all(piece).await.unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let ended = read_frames(read, from, &to_quinn).await;
        writer.await.unwrap();
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        for expected in &datagrams {
            let (addr, got) = received.try_recv().unwrap();
            assert_eq!(addr, from);
            assert_eq!(&got[..], &expected[..]);
        }
        assert!(received.try_recv().is_err());
    }
}
