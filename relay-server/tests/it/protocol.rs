//! Protocol mode: joining, pings, tokens, and what a connect request gets.

use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{Message, Response};
use tokio::time::Instant;

use crate::support::Relay;

#[tokio::test]
async fn a_joined_device_is_pinged_and_answered() {
    let relay = Relay::start(|config| {
        config.ping_interval = Duration::from_millis(200);
        config.network_timeout = Duration::from_millis(700);
    })
    .await;
    let mut device = relay.join().await;
    device.send(&Message::Ping).await;
    assert_eq!(device.recv().await, Message::Pong);
    // The relay pings on its own; answering keeps the device joined past the network
    // timeout.
    let until = Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while Instant::now() < until {
        assert_eq!(device.recv().await, Message::Ping);
        device.send(&Message::Pong).await;
        pings += 1;
    }
    assert!(pings >= 4, "{pings} pings in 1.2 s at 200 ms");
    // Joining again on the same connection: "already connected", and it stays open.
    let reply = device
        .request(Message::JoinRelayRequest {
            token: String::new(),
        })
        .await;
    assert_eq!(reply.code, Response::ALREADY_CONNECTED);
    device.send(&Message::Ping).await;
    loop {
        match device.recv().await {
            Message::Ping => {}
            reply => break assert_eq!(reply, Message::Pong),
        }
    }
}

#[tokio::test]
async fn silent_devices_are_dropped() {
    let relay = Relay::start(|config| {
        config.ping_interval = Duration::from_millis(300);
        config.network_timeout = Duration::from_millis(600);
    })
    .await;
    // Joined, never answering: gone after the network timeout.
    let mut silent = relay.join().await;
    let joined = Instant::now();
    silent.expect_closed().await;
    let lasted = joined.elapsed();
    assert!(lasted >= Duration::from_millis(550), "{lasted:?}");
    // Its ID is free again.
    let other = relay.join().await;
    drop(other);
    // Connected, never joining: gone after one ping interval.
    let mut idle = relay.connect().await;
    let connected = Instant::now();
    idle.expect_closed().await;
    let lasted = connected.elapsed();
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(2000)).contains(&lasted),
        "{lasted:?}"
    );
}

#[tokio::test]
async fn a_second_join_of_the_same_device_is_already_connected() {
    let relay = Relay::start(|_| {}).await;
    let identity = Identity::generate().unwrap();
    let join = Message::JoinRelayRequest {
        token: String::new(),
    };
    let mut first =
        crate::support::Client::connect(relay.addr(), relay.server.device_id(), &identity).await;
    assert_eq!(first.request(join.clone()).await.code, Response::SUCCESS);
    let mut second =
        crate::support::Client::connect(relay.addr(), relay.server.device_id(), &identity).await;
    assert_eq!(
        second.request(join.clone()).await.code,
        Response::ALREADY_CONNECTED
    );
    second.expect_closed().await;
    // The first connection is untouched.
    first.send(&Message::Ping).await;
    assert_eq!(first.recv().await, Message::Pong);
}

#[tokio::test]
async fn private_relays_check_the_token() {
    let relay = Relay::start(|config| config.token = "sesame".into()).await;
    assert!(
        relay.server.url().contains("token=sesame"),
        "{}",
        relay.server.url()
    );
    let mut wrong = relay.connect().await;
    let reply = wrong
        .request(Message::JoinRelayRequest {
            token: "open".into(),
        })
        .await;
    assert_eq!(reply, Response::new(Response::WRONG_TOKEN));
    wrong.expect_closed().await;
    let mut empty = relay.connect().await;
    let reply = empty
        .request(Message::JoinRelayRequest {
            token: String::new(),
        })
        .await;
    assert_eq!(reply.code, Response::WRONG_TOKEN);
    let mut right = relay.connect().await;
    let reply = right
        .request(Message::JoinRelayRequest {
            token: "sesame".into(),
        })
        .await;
    assert_eq!(reply, Response::new(Response::SUCCESS));
}

#[tokio::test]
async fn connect_requests_for_devices_not_joined_are_not_found() {
    let relay = Relay::start(|_| {}).await;
    let requester = Identity::generate().unwrap();
    let reply = relay
        .connect_request(&requester, DeviceId::from_bytes([9; 32]))
        .await;
    assert_eq!(reply, Message::Response(Response::new(Response::NOT_FOUND)));
    // A device that joined and left is not found either.
    let joined = relay.join().await;
    let id = joined.id;
    drop(joined);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = relay.connect_request(&requester, id).await;
    assert_eq!(reply, Message::Response(Response::new(Response::NOT_FOUND)));
}

#[tokio::test]
async fn other_first_messages_are_unexpected() {
    let relay = Relay::start(|_| {}).await;
    for first in [
        Message::Ping,
        Message::JoinSessionRequest { key: [1; 32] },
        Message::RelayFull,
    ] {
        let mut client = relay.connect().await;
        let reply = client.request(first).await;
        assert_eq!(reply, Response::new(Response::UNEXPECTED_MESSAGE));
        client.expect_closed().await;
    }
}
