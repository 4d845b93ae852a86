//! The STUN responder on the listen port number over UDP.

use std::net::SocketAddr;
use std::time::Duration;

use peerfold_protocol::stun;
use tokio::net::UdpSocket;

use crate::support::{Backend, Harness};

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
    let harness = Harness::start(Backend::Sqlite).await;
    let stun_addr = harness.server().stun_addr().expect("STUN is on by default");
    assert_eq!(stun_addr.port(), harness.addr().port());
    let (me, answer) = ask(
        stun_addr,
        &stun::binding_request([5; 12]),
        Duration::from_secs(5),
    )
    .await;
    let answer = answer.expect("an answer");
    assert_eq!(stun::parse_binding_response(&answer), Some(([5; 12], me)));
    let (_, answer) = ask(stun_addr, &[0u8; 64], Duration::from_millis(300)).await;
    assert_eq!(answer, None);
}

#[tokio::test]
async fn no_stun_means_no_udp_answer() {
    let harness = Harness::start_with(Backend::Sqlite, |config| config.stun = false).await;
    assert_eq!(harness.server().stun_addr(), None);
    let (_, answer) = ask(
        harness.addr(),
        &stun::binding_request([6; 12]),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(answer, None);
}
