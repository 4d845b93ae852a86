//! The STUN responder: a UDP socket on a server's port number that answers STUN Binding
//! requests with the source address it saw, so devices (peerfold's own among them) learn
//! their public UDP mapping from a server they already use, without a third party.
//!
//! Who wakes me: datagrams on the socket, the server's cancellation token. Whom I wake:
//! nobody (it only answers).
//!
//! It answers only well-formed Binding requests (anything else is dropped unanswered), as
//! often as the server's per-IP limit allows, and never with more than the request plus
//! 24 bytes (`SLACK`), so it cannot be used to amplify traffic.

use std::net::{IpAddr, SocketAddr};

use peerfold_protocol::stun;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Binding requests per second per source IP, on average (for the server's limiter).
pub const RATE: f64 = 10.0;
/// Binding requests one source IP may send at once (for the server's limiter).
pub const BURST: u32 = 20;
/// How much larger than its request an answer may be (a 20-byte request with no attribute
/// gets at most a 44-byte answer, IPv6).
const SLACK: usize = 24;
/// Receive buffer: a Binding request is small; anything longer is not one of ours.
const BUF: usize = 548;

/// Binds the UDP socket at `addr` (the server's TCP address, same port number) when STUN
/// is `enabled` (`None` when it is not). When any port was asked for (`any_port`, tests)
/// and that number is taken on UDP, any port will do.
pub async fn bind(
    enabled: bool,
    addr: SocketAddr,
    any_port: bool,
) -> Result<Option<UdpSocket>, (SocketAddr, std::io::Error)> {
    if !enabled {
        return Ok(None);
    }
    bind_at(addr, any_port).await.map(Some)
}

async fn bind_at(
    addr: SocketAddr,
    any_port: bool,
) -> Result<UdpSocket, (SocketAddr, std::io::Error)> {
    match UdpSocket::bind(addr).await {
        Ok(socket) => Ok(socket),
        Err(_) if any_port => {
            let any = SocketAddr::new(addr.ip(), 0);
            UdpSocket::bind(any).await.map_err(|e| (any, e))
        }
        Err(e) => Err((addr, e)),
    }
}

/// Answers Binding requests on `socket` until `cancel`; `allow` is the server's per-IP
/// limit (asked only for well-formed requests).
pub async fn serve(
    socket: UdpSocket,
    cancel: CancellationToken,
    allow: impl Fn(IpAddr, Instant) -> bool,
) {
    let mut buf = [0u8; BUF];
    loop {
        let received = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, from) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors reported on the socket and the like: nothing to do but go on.
                tracing::debug!(%error, "STUN receive failed");
                continue;
            }
        };
        if let Some(answer) = answer(&buf[..len], from, &allow, Instant::now())
            && let Err(error) = socket.send_to(&answer, from).await
        {
            tracing::debug!(%from, %error, "STUN answer not sent");
        }
    }
}

/// The answer to a datagram `request` from `from`, if it gets one.
fn answer(
    request: &[u8],
    from: SocketAddr,
    allow: &impl Fn(IpAddr, Instant) -> bool,
    now: Instant,
) -> Option<Vec<u8>> {
    let tx = stun::parse_binding_request(request)?;
    if !allow(from.ip(), now) {
        tracing::debug!(%from, "STUN rate limit");
        return None;
    }
    let answer = stun::binding_response(tx, from);
    (answer.len() <= request.len() + SLACK).then_some(answer)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn answers_binding_requests_only_and_only_as_the_limit_allows() {
        let from: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        let now = Instant::now();
        let request = stun::binding_request([7; 12]);
        let asked = Cell::new(0);
        let allow_two = |_: IpAddr, _: Instant| {
            asked.set(asked.get() + 1);
            asked.get() <= 2
        };
        let reply = answer(&request, from, &allow_two, now).unwrap();
        assert_eq!(stun::parse_binding_response(&reply), Some(([7; 12], from)));
        assert!(reply.len() <= request.len() + SLACK);
        // Garbage and responses are not requests: dropped without asking the limiter.
        assert!(answer(b"hello, anyone there?", from, &allow_two, now).is_none());
        let response = stun::binding_response([7; 12], from);
        assert!(answer(&response, from, &allow_two, now).is_none());
        assert_eq!(asked.get(), 1);
        assert!(answer(&request, from, &allow_two, now).is_some());
        assert!(answer(&request, from, &allow_two, now).is_none());
    }
}
