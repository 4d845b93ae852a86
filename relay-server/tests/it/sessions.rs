//! Sessions: mirrored invitations, single-use keys, splicing, and the ways a session ends.

use std::time::Duration;

use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{Message, Response};
use tokio::io::AsyncWriteExt;

use crate::support::{Relay, check_flow, expect_eof, join_session, pattern, session};

#[tokio::test]
async fn invitations_are_mirrored_and_bytes_flow_both_ways_verbatim() {
    let relay = Relay::start(|_| {}).await;
    let mut target = relay.join().await;
    let requester = Identity::generate().unwrap();
    let Message::SessionInvitation(mine) = relay.connect_request(&requester, target.id).await
    else {
        panic!("no invitation for the requester");
    };
    let theirs = target.invitation().await;
    assert_eq!(mine.from, target.id);
    assert_eq!(theirs.from, requester.device_id());
    assert!(!mine.server_socket);
    assert!(theirs.server_socket);
    assert_eq!(mine.port, relay.addr().port());
    assert_eq!(theirs.port, mine.port);
    // No --ext-address: "the IP you reached me at".
    assert_eq!(mine.address, None);
    assert_ne!(mine.key, theirs.key);

    // The requester joins first and writes before the target arrives: the bytes wait.
    let (reply, mut a) = join_session(relay.addr(), mine.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    let early = pattern(1000, 7);
    a.write_all(&early).await.unwrap();
    let (reply, mut b) = join_session(relay.addr(), theirs.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    let mut received = vec![0; early.len()];
    tokio::io::AsyncReadExt::read_exact(&mut b, &mut received)
        .await
        .unwrap();
    assert_eq!(received, early);

    // Megabytes both ways at once.
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    let up = pattern(3 << 20, 1);
    let down = pattern(2 << 20, 2);
    tokio::join!(
        check_flow(&mut a_write, &mut b_read, &up),
        check_flow(&mut b_write, &mut a_read, &down),
    );
}

#[tokio::test]
async fn keys_work_once_and_unknown_keys_are_not_found() {
    let relay = Relay::start(|_| {}).await;
    let mut target = relay.join().await;
    let requester = Identity::generate().unwrap();
    let Message::SessionInvitation(mine) = relay.connect_request(&requester, target.id).await
    else {
        panic!("no invitation");
    };
    let theirs = target.invitation().await;
    let (reply, mut a) = join_session(relay.addr(), mine.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    // The same key again, by anyone: not found.
    let (reply, _) = join_session(relay.addr(), mine.key).await;
    assert_eq!(reply, Response::new(Response::NOT_FOUND));
    let (reply, mut b) = join_session(relay.addr(), theirs.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    // Someone else's key, already used: not found, and the session is unharmed.
    let (reply, _) = join_session(relay.addr(), theirs.key).await;
    assert_eq!(reply.code, Response::NOT_FOUND);
    let (reply, _) = join_session(relay.addr(), [0xAB; 32]).await;
    assert_eq!(reply.code, Response::NOT_FOUND);
    check_flow(&mut a, &mut b, b"still ours").await;
    check_flow(&mut b, &mut a, b"and back").await;
}

#[tokio::test]
async fn a_devices_sessions_die_with_its_permanent_connection() {
    let relay = Relay::start(|_| {}).await;
    let (permanent, mut a, mut b) = session(&relay).await;
    check_flow(&mut a, &mut b, &pattern(100_000, 3)).await;
    drop(permanent);
    expect_eof(&mut a, Duration::from_secs(3)).await;
    expect_eof(&mut b, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn sessions_not_joined_in_time_are_discarded() {
    let relay = Relay::start(|config| config.message_timeout = Duration::from_millis(300)).await;
    let mut target = relay.join().await;
    let requester = Identity::generate().unwrap();
    let Message::SessionInvitation(mine) = relay.connect_request(&requester, target.id).await
    else {
        panic!("no invitation");
    };
    let theirs = target.invitation().await;
    assert_eq!(relay.status().await["numPendingSessionKeys"], 2);
    // One side joins, the other never does: the joined socket is closed after the timeout,
    // and the other key no longer works.
    let (reply, mut a) = join_session(relay.addr(), mine.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    expect_eof(&mut a, Duration::from_secs(2)).await;
    let (reply, _) = join_session(relay.addr(), theirs.key).await;
    assert_eq!(reply.code, Response::NOT_FOUND);
    let status = relay.status().await;
    assert_eq!(status["numPendingSessionKeys"], 0);
    assert_eq!(status["numActiveSessions"], 0);
}

#[tokio::test]
async fn idle_sessions_end_and_shutdown_ends_live_ones() {
    let relay = Relay::start(|config| {
        config.ping_interval = Duration::from_millis(100);
        config.network_timeout = Duration::from_millis(400);
    })
    .await;
    let (permanent, mut a, mut b) = session(&relay).await;
    // The joined device stays joined (it answers pings); only the session idles.
    let pinged = permanent.answer_pings();
    check_flow(&mut a, &mut b, b"hello").await;
    let started = tokio::time::Instant::now();
    expect_eof(&mut a, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert!(
        !pinged.is_finished(),
        "the permanent connection was dropped"
    );

    let relay = Relay::start(|_| {}).await;
    let (_permanent, mut a, mut b) = session(&relay).await;
    check_flow(&mut a, &mut b, b"hello").await;
    relay.server.shutdown().await;
    expect_eof(&mut a, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn invitations_carry_the_external_address() {
    let relay = Relay::start(|config| {
        config.ext_ip = Some("192.0.2.1".parse().unwrap());
        config.ext_port = Some(4000);
    })
    .await;
    let url = relay.server.relay_url();
    assert_eq!((url.host.as_str(), url.port), ("192.0.2.1", 4000));
    assert_eq!(url.id, Some(relay.server.device_id()));
    let mut target = relay.join().await;
    let requester = Identity::generate().unwrap();
    let Message::SessionInvitation(mine) = relay.connect_request(&requester, target.id).await
    else {
        panic!("no invitation");
    };
    let theirs = target.invitation().await;
    for invitation in [mine, theirs] {
        assert_eq!(invitation.address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(invitation.port, 4000);
    }
}

#[tokio::test]
async fn rate_limits_slow_sessions_down() {
    // 1 MB/s with a 2 MB burst: 3 MB take about a second, per session or for all of them.
    for (per_session, global) in [(1_000_000, 0), (0, 1_000_000)] {
        let relay = Relay::start(|config| {
            config.per_session_rate = per_session;
            config.global_rate = global;
        })
        .await;
        let (_permanent, mut a, mut b) = session(&relay).await;
        let started = tokio::time::Instant::now();
        check_flow(&mut a, &mut b, &pattern(3_000_000, 4)).await;
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(4)).contains(&took),
            "{per_session} {global}: {took:?}"
        );
    }
}
