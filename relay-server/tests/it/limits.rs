//! Abuse: malformed frames, connect floods, stalled handshakes, a full relay.

use std::time::Duration;

use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{MAGIC, Message, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{PROMPTLY, Relay, check_flow, expect_eof, session};

fn header(magic: u32, kind: i32, len: i32) -> Vec<u8> {
    [magic.to_be_bytes(), kind.to_be_bytes(), len.to_be_bytes()].concat()
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let relay = Relay::start(|_| {}).await;
    let (mut permanent, mut a, mut b) = session(&relay).await;
    let bad = [
        header(0xDEAD_BEEF, 0, 0),
        header(MAGIC, 2, 1025),
        header(MAGIC, 2, -1),
        header(MAGIC, 42, 0),
    ];
    for frame in &bad {
        // Protocol mode, as the first message...
        let mut client = relay.connect().await;
        client.send_raw(frame).await;
        client.expect_closed().await;
        // ...and in session mode.
        let mut tcp = TcpStream::connect(relay.addr()).await.unwrap();
        tcp.write_all(frame).await.unwrap();
        expect_eof(&mut tcp, PROMPTLY).await;
    }
    // A joined device that sends garbage loses its connection (and so its sessions) ...
    let mut other = relay.join().await;
    other.send_raw(&header(MAGIC, 42, 0)).await;
    other.expect_closed().await;
    // ... but the established session and its device never noticed.
    check_flow(&mut a, &mut b, b"unharmed").await;
    check_flow(&mut b, &mut a, b"both ways").await;
    permanent.send(&Message::Ping).await;
    assert_eq!(permanent.recv().await, Message::Pong);
}

#[tokio::test]
async fn connect_floods_from_one_ip_are_limited() {
    let relay = Relay::start(|config| {
        config.connect_rate = 1.0;
        config.connect_burst = 3.0;
    })
    .await;
    let target = relay.join().await;
    let requester = Identity::generate().unwrap();
    let mut invited = 0;
    let mut refused = 0;
    let started = Instant::now();
    for _ in 0..10 {
        match relay.connect_request(&requester, target.id).await {
            Message::SessionInvitation(_) => invited += 1,
            Message::Response(Response {
                code: Response::INTERNAL_ERROR,
                ..
            }) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    // The burst, plus one a second while the test ran.
    let refills = started.elapsed().as_secs() as usize + 1;
    assert!((3..=3 + refills).contains(&invited), "{invited} invited");
    assert!(refused >= 1, "nothing refused");
    assert_eq!(invited + refused, 10);
    // The target was not flooded either: it got as many invitations as were handed out.
    let mut target = target;
    for _ in 0..invited {
        target.invitation().await;
    }
    assert_eq!(relay.status().await["numPendingSessionKeys"], 2 * invited);
}

#[tokio::test]
async fn stalled_handshakes_are_cut_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(400);
    let relay = Relay::start(|config| config.handshake_timeout = timeout).await;
    // The first byte of a TLS record, then nothing.
    let mut tls = TcpStream::connect(relay.addr()).await.unwrap();
    tls.write_all(&[0x16]).await.unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(relay.addr()).await.unwrap();
    // Half a session join request.
    let mut partial = TcpStream::connect(relay.addr()).await.unwrap();
    partial
        .write_all(&Message::JoinSessionRequest { key: [1; 32] }.encode()[..20])
        .await
        .unwrap();
    let started = Instant::now();
    for socket in [&mut tls, &mut silent, &mut partial] {
        let mut buf = [0; 16];
        let read = tokio::time::timeout(PROMPTLY, socket.read(&mut buf))
            .await
            .expect("cut in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= timeout - Duration::from_millis(100) && waited < timeout * 5,
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_full_relay_says_so() {
    let relay = Relay::start(|config| config.max_clients = 1).await;
    let first = relay.join().await;
    let mut second = relay.connect().await;
    assert_eq!(second.recv().await, Message::RelayFull);
    second.expect_closed().await;
    // Room again once the first leaves.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.join().await;
}
