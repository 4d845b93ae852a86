//! The abuse limits: rate (429), body size (413), slow and silent clients, connection cap.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use peerfold_protocol::discovery::RETRY_AFTER;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{https_client_config, server_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{Backend, Client, Harness};

#[tokio::test]
async fn a_flood_gets_429_with_retry_after() {
    let h = Harness::start_with(Backend::Sqlite, |config| {
        // One token per 20 s: a slow machine cannot refill the bucket during the test.
        config.rate_limit = 0.05;
        config.rate_burst = 5;
    })
    .await;
    let anonymous = h.anonymous();
    let unknown = Identity::generate().unwrap().device_id();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let reply = anonymous.lookup(unknown).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            let retry = reply.seconds(RETRY_AFTER);
            assert!((1..=20).contains(&retry), "{retry}");
        }
        statuses.push(reply.status);
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(statuses[..5], [StatusCode::NOT_FOUND; 5], "{statuses:?}");
    assert_eq!(limited, 7, "{statuses:?}");
    // Announces draw from the same bucket.
    let identity = Identity::generate().unwrap();
    let reply = h.device(&identity).announce(&["quic://192.0.2.1:1"]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // /ping and /metrics are not limited.
    assert_eq!(anonymous.get("/ping").await.status, StatusCode::NO_CONTENT);
    let metrics = String::from_utf8(anonymous.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("peerfold_discovery_announces_total{result=\"rate_limited\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_rate_limit_is_per_client_ip_behind_a_proxy() {
    let h = Harness::start_with(Backend::Sqlite, |config| {
        config.http = true;
        config.rate_limit = 0.1;
        config.rate_burst = 2;
    })
    .await;
    let client = Client::plain(h.addr());
    let unknown = format!("/?device={}", Identity::generate().unwrap().device_id());
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..2 {
        let reply = client
            .request(Method::GET, &unknown, &from("198.51.100.1"), Vec::new())
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let reply = client
        .request(Method::GET, &unknown, &from("198.51.100.1"), Vec::new())
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let reply = client
        .request(Method::GET, &unknown, &from("198.51.100.2"), Vec::new())
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_huge_headers_are_refused() {
    let h = Harness::start(Backend::Sqlite).await;
    let identity = Identity::generate().unwrap();
    let device = h.device(&identity);
    let addresses: Vec<String> = (0..1000)
        .map(|i| format!("quic://192.0.2.1:{}", 10000 + i))
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let reply = device.announce(&refs).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.headers.contains_key(RETRY_AFTER));
    let reply = device.http2().announce(&refs).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Headers past the limit: refused (431 over HTTP/1.1, where hyper's buffer may also just
    // close the connection; either way nothing is served).
    let big = "x".repeat(9000);
    let target = format!("/?device={}", identity.device_id());
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let mut tls = tls_connect(tcp, &identity).await;
    tls.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );
}

async fn tls_connect(
    tcp: TcpStream,
    identity: &Identity,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = https_client_config(identity, None).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(std::sync::Arc::new(config))
        .connect(server_name(), tcp)
        .await
        .unwrap()
}

/// Waits for the server to close `stream`; returns how long that took.
async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let mut buf = [0; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept a slow client for more than {limit:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_silent_client_is_cut_off() {
    let h = Harness::start(Backend::Sqlite).await;
    // TCP, then nothing: the TLS handshake times out.
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    let took = closed_within(&mut tcp, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_secs(4), "{took:?}");
    // TLS, then nothing: the idle timeout.
    let identity = Identity::generate().unwrap();
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let mut tls = tls_connect(tcp, &identity).await;
    closed_within(&mut tls, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_client_trickling_headers_is_cut_off() {
    let h = Harness::start(Backend::Sqlite).await;
    let identity = Identity::generate().unwrap();
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let tls = tls_connect(tcp, &identity).await;
    let (mut read, mut write) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        for byte in
            b"GET /ping HTTP/1.1\r\nHost: example\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let took = closed_within(&mut read, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_secs(4), "{took:?}");
    trickle.abort();
}

#[tokio::test]
async fn a_silent_client_is_cut_off_behind_a_proxy_too() {
    let h = Harness::start_with(Backend::Sqlite, |config| config.http = true).await;
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    let took = closed_within(&mut tcp, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_secs(4), "{took:?}");
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    tcp.write_all(b"GET /ping HTTP/1.1\r\nHo").await.unwrap();
    closed_within(&mut tcp, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let h = Harness::start_with(Backend::Sqlite, |config| config.max_connections = 2).await;
    let first = TcpStream::connect(h.addr()).await.unwrap();
    let second = TcpStream::connect(h.addr()).await.unwrap();
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(h.addr()).await.unwrap();
    let took = closed_within(&mut third, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(2));
    drop((first, second));
    // Once they are gone the server takes new ones again (as soon as it has noticed; a
    // refused attempt panics inside its task).
    let client = h.anonymous();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attempt = client.clone();
        match tokio::spawn(async move { attempt.get("/ping").await.status }).await {
            Ok(status) => {
                assert_eq!(status, StatusCode::NO_CONTENT);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the server never took connections again: {error}"),
        }
    }
}
