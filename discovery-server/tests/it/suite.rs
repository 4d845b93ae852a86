//! The v3 behaviour every store must show, run against SQLite and against Redis.

use std::time::Duration;

use http::{Method, StatusCode, Version};
use peerfold_protocol::discovery::{REANNOUNCE_AFTER, RETRY_AFTER};
use peerfold_protocol::identity::Identity;

use crate::support::{Backend, Harness};

/// One `#[tokio::test]` per store for each behaviour.
macro_rules! per_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Redis).await;
                }
            )*
        }
    };
}

per_store!(
    announce_then_lookup_drops_loopback_and_multicast,
    announce_without_a_certificate_is_forbidden,
    many_addresses_come_back_sorted,
    nothing_usable_is_a_bad_request,
    malformed_bodies_and_ids_are_bad_requests,
    unknown_devices_are_not_found_with_a_retry_after,
    addresses_expire_after_two_hours_and_announces_merge,
    records_unseen_for_seven_days_are_dropped,
    ping_methods_and_http2,
    metrics_count_what_happened,
);

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn announce_then_lookup_drops_loopback_and_multicast(backend: Backend) {
    let h = Harness::start(backend).await;
    let device = Identity::generate().unwrap();
    let reply = h
        .device(&device)
        .announce(&[
            "quic://192.0.2.1:22000",
            "tcp://192.0.2.1:22000",
            "quic://127.0.0.1:22000",
            "quic://[::1]:22000",
            "quic://224.0.0.1:22000",
            "relay://203.0.113.5:22067/?id=RELAY",
            "quic://192.0.2.1:22000",
        ])
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!((3300..3600).contains(&reply.seconds(REANNOUNCE_AFTER)));

    let reply = h.anonymous().lookup(device.device_id()).await;
    assert_eq!(reply.headers["content-type"], "application/json");
    let found = reply.lookup();
    assert_eq!(
        found.addresses,
        strings(&[
            "quic://192.0.2.1:22000",
            "relay://203.0.113.5:22067/?id=RELAY",
            "tcp://192.0.2.1:22000",
        ])
    );
    // RFC 3339, whole seconds, within a second of the server's clock.
    let seen: jiff::Timestamp = found.seen.parse().unwrap();
    assert_eq!(seen.subsec_nanosecond(), 0, "{}", found.seen);
    let now = h.clock.now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(now.as_secs().abs_diff(seen.as_second() as u64) < 2);
    // A device with a certificate may look up too.
    assert_eq!(
        h.device(&device).lookup(device.device_id()).await.status,
        StatusCode::OK
    );
}

async fn announce_without_a_certificate_is_forbidden(backend: Backend) {
    let h = Harness::start(backend).await;
    let reply = h.anonymous().announce(&["quic://192.0.2.1:22000"]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!((1500..1800).contains(&reply.seconds(RETRY_AFTER)));
}

async fn many_addresses_come_back_sorted(backend: Backend) {
    let h = Harness::start(backend).await;
    let device = Identity::generate().unwrap();
    let addresses: Vec<String> = (0..120)
        .map(|i| format!("quic://192.0.2.{}:{}", i % 250 + 1, 20000 + i))
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let reply = h.device(&device).announce(&refs).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let mut expected = addresses.clone();
    expected.sort();
    assert_eq!(
        h.anonymous()
            .lookup(device.device_id())
            .await
            .lookup()
            .addresses,
        expected
    );
}

async fn nothing_usable_is_a_bad_request(backend: Backend) {
    let h = Harness::start(backend).await;
    let device = Identity::generate().unwrap();
    // From 127.0.0.1 the unspecified host cannot be filled in; the rest is loopback,
    // multicast or not a URL.
    let reply = h
        .device(&device)
        .announce(&[
            "quic://:22000",
            "quic://0.0.0.0:22000",
            "quic://127.0.0.1:22000",
            "quic://[ff02::1]:22000",
            "nonsense",
        ])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!((1500..1800).contains(&reply.seconds(RETRY_AFTER)));
    let reply = h.device(&device).announce(&[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.anonymous().lookup(device.device_id()).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn malformed_bodies_and_ids_are_bad_requests(backend: Backend) {
    let h = Harness::start(backend).await;
    let device = h.device(&Identity::generate().unwrap());
    for body in [&b"{"[..], b"", b"{\"addresses\":5}", b"[]", b"\xff\xfe"] {
        let reply = device.request(Method::POST, "/", &[], body.to_vec()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!((1500..1800).contains(&reply.seconds(RETRY_AFTER)));
    }
    let anonymous = h.anonymous();
    for target in [
        "/v2/",
        "/v2/?device=",
        "/v2/?device=NOT-A-DEVICE",
        // A typo: the check characters catch it.
        "/v2/?device=P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ3",
        "/?id=X",
    ] {
        let reply = anonymous.get(target).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{target}");
        assert!((1500..1800).contains(&reply.seconds(RETRY_AFTER)));
    }
}

async fn unknown_devices_are_not_found_with_a_retry_after(backend: Backend) {
    let h = Harness::start(backend).await;
    let unknown = Identity::generate().unwrap().device_id();
    let reply = h.anonymous().lookup(unknown).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let retry = reply.seconds(RETRY_AFTER);
    assert!((60..=3600).contains(&retry), "{retry}");
    // Any path works, as in stdiscosrv; the ID's undashed form too.
    let undashed = unknown.to_string().replace('-', "");
    let reply = h.anonymous().get(&format!("/?device={undashed}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

async fn addresses_expire_after_two_hours_and_announces_merge(backend: Backend) {
    let h = Harness::start(backend).await;
    let identity = Identity::generate().unwrap();
    let id = identity.device_id();
    let device = h.device(&identity);
    assert_eq!(
        device.announce(&["quic://192.0.2.1:1"]).await.status,
        StatusCode::NO_CONTENT
    );
    h.advance(Duration::from_secs(3600));
    // An hour later another address: both are handed out.
    assert_eq!(
        device.announce(&["quic://192.0.2.2:2"]).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.anonymous().lookup(id).await.lookup().addresses,
        strings(&["quic://192.0.2.1:1", "quic://192.0.2.2:2"])
    );
    // Two hours and a minute after the first: only the second is left.
    h.advance(Duration::from_secs(3660));
    let reply = h.anonymous().lookup(id).await.lookup();
    assert_eq!(reply.addresses, strings(&["quic://192.0.2.2:2"]));
    // Re-announcing the first brings it back; the second still expires on its own time.
    assert_eq!(
        device.announce(&["quic://192.0.2.1:1"]).await.status,
        StatusCode::NO_CONTENT
    );
    h.advance(Duration::from_secs(3600));
    assert_eq!(
        h.anonymous().lookup(id).await.lookup().addresses,
        strings(&["quic://192.0.2.1:1"])
    );
    // Past every expiry: not found, the "seen before" kind of 404.
    h.advance(Duration::from_secs(3601));
    let reply = h.anonymous().lookup(id).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.headers.contains_key(RETRY_AFTER));
}

async fn records_unseen_for_seven_days_are_dropped(backend: Backend) {
    let h = Harness::start(backend).await;
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    h.device(&a).announce(&["quic://192.0.2.1:1"]).await;
    h.advance(Duration::from_secs(6 * 24 * 3600));
    h.device(&b).announce(&["quic://192.0.2.2:1"]).await;
    assert_eq!(h.server().sweep().await.unwrap(), 0);
    assert!(metric(&h, "peerfold_discovery_devices").await == 2.0);
    h.advance(Duration::from_secs(24 * 3600));
    // Seven days after a's announce: a goes, b (one day old) stays.
    assert_eq!(h.server().sweep().await.unwrap(), 1);
    assert!(metric(&h, "peerfold_discovery_devices").await == 1.0);
    assert_eq!(
        h.anonymous().lookup(a.device_id()).await.status,
        StatusCode::NOT_FOUND
    );
    // b's addresses expired long ago, but its record is kept until day seven.
    assert_eq!(
        h.anonymous().lookup(b.device_id()).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(h.server().sweep().await.unwrap(), 0);
}

async fn ping_methods_and_http2(backend: Backend) {
    let h = Harness::start(backend).await;
    let anonymous = h.anonymous();
    let reply = anonymous.get("/ping").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        let reply = anonymous
            .request(method.clone(), "/v2/", &[], Vec::new())
            .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert!(reply.headers.contains_key(RETRY_AFTER));
    }
    // The same over HTTP/2 (ALPN h2), announce and lookup.
    let identity = Identity::generate().unwrap();
    let device = h.device(&identity).http2();
    let reply = device.announce(&["quic://192.0.2.9:22000"]).await;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = h.anonymous().http2().lookup(identity.device_id()).await;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(
        reply.lookup().addresses,
        strings(&["quic://192.0.2.9:22000"])
    );
    let reply = h.anonymous().get("/ping").await;
    assert_eq!(reply.version, Version::HTTP_11);
}

async fn metrics_count_what_happened(backend: Backend) {
    let h = Harness::start(backend).await;
    let identity = Identity::generate().unwrap();
    h.device(&identity).announce(&["quic://192.0.2.1:1"]).await;
    h.anonymous().announce(&["quic://192.0.2.1:1"]).await;
    h.anonymous().lookup(identity.device_id()).await;
    h.anonymous()
        .lookup(Identity::generate().unwrap().device_id())
        .await;
    h.anonymous().get("/?device=bad").await;
    let reply = h.anonymous().get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    for line in [
        "peerfold_discovery_announces_total{result=\"ok\"} 1",
        "peerfold_discovery_announces_total{result=\"no_certificate\"} 1",
        "peerfold_discovery_lookups_total{result=\"hit\"} 1",
        "peerfold_discovery_lookups_total{result=\"miss\"} 1",
        "peerfold_discovery_lookups_total{result=\"bad\"} 1",
        "peerfold_discovery_devices 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
    assert!(
        text.contains("peerfold_discovery_request_duration_seconds_count{kind=\"lookup\"} 3"),
        "{text}"
    );
}

/// One unlabelled metric's value from `/metrics`.
pub(crate) async fn metric(h: &Harness, name: &str) -> f64 {
    let text = h.anonymous().get("/metrics").await.body;
    let text = String::from_utf8(text.to_vec()).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}
