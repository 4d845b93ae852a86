//! The STUN responder on the relay's port number over UDP.

use std::net::SocketAddr;
use std::time::Duration;

use peerfold_protocol::stun;
use tokio::net::UdpSocket;

use crate::support::{PROMPTLY, Relay};

/// Sends `datagram` from a fresh socket on 127.0.0.1 and returns (our address, the answer).
async fn ask(to: SocketAddr, datagram: &[u8], wait: Duration) -> (SocketAddr, Option<Vec<u8>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(datagram, to).await.unwrap();
    let mut buf = [0u8; 1500];
    let answer = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()
        .map(|received| buf[..received.unwrap().0].to_vec());
    (socket.local_addr().unwrap(), answer)
}

#[tokio::test]
async fn binding_requests_get_the_source_address_back() {
    let relay = Relay::start(|_| {}).await;
    let stun_addr = relay.server.stun_addr().expect("STUN is on by default");
    assert_eq!(stun_addr.port(), relay.addr().port());
    let (me, answer) = ask(stun_addr, &stun::binding_request([3; 12]), PROMPTLY).await;
    let answer = answer.expect("an answer");
    assert_eq!(stun::parse_binding_response(&answer), Some(([3; 12], me)));
    // Garbage, and a response sent as if it were a request, get nothing.
    let (_, answer) = ask(
        stun_addr,
        b"GET / HTTP/1.0\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(answer, None);
    let reply = stun::binding_response([3; 12], me);
    let (_, answer) = ask(stun_addr, &reply, Duration::from_millis(300)).await;
    assert_eq!(answer, None);
    relay.server.shutdown().await;
}

#[tokio::test]
async fn no_stun_means_no_udp_answer() {
    let relay = Relay::start(|config| config.stun = false).await;
    assert_eq!(relay.server.stun_addr(), None);
    let to = SocketAddr::new(relay.addr().ip(), relay.addr().port());
    let (_, answer) = ask(
        to,
        &stun::binding_request([4; 12]),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(answer, None);
    relay.server.shutdown().await;
}
