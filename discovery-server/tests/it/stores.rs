//! What only one store shows: SQLite keeps records across a restart; servers sharing one
//! Redis see each other's announces.

use std::time::Duration;

use http::StatusCode;
use peerfold_discovery::store::sqlite::stored_devices;
use peerfold_protocol::identity::Identity;

use crate::support::{Backend, Harness, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_records_across_a_restart() {
    let mut h = Harness::start(Backend::Sqlite).await;
    let identity = Identity::generate().unwrap();
    let reply = h
        .device(&identity)
        .announce(&["quic://192.0.2.1:22000", "tcp://192.0.2.1:22000"])
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let before = h.anonymous().lookup(identity.device_id()).await.lookup();

    h.restart().await;
    let after = h.anonymous().lookup(identity.device_id()).await.lookup();
    assert_eq!(after, before);

    // Expiry still follows the clock after the restart, and a swept record stays gone.
    h.advance(Duration::from_secs(2 * 3600 + 1));
    assert_eq!(
        h.anonymous().lookup(identity.device_id()).await.status,
        StatusCode::NOT_FOUND
    );
    h.advance(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(h.server().sweep().await.unwrap(), 1);
    h.restart().await;
    let database = h.dir.path().join("discovery.sqlite");
    assert_eq!(stored_devices(&database).unwrap(), 0);
    assert_eq!(
        crate::suite::metric(&h, "peerfold_discovery_devices").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_redis() {
    let redis = std::sync::Arc::new(RedisServer::start());
    let one = Harness::start_on(Some(redis.clone()), |_| {}).await;
    let two = Harness::start_on(Some(redis.clone()), |_| {}).await;
    assert_ne!(one.server().device_id(), two.server().device_id());
    let identity = Identity::generate().unwrap();
    let reply = one
        .device(&identity)
        .announce(&["quic://192.0.2.1:22000"])
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // Announced on one, found on the other; a second address via the other merges in.
    assert_eq!(
        two.anonymous()
            .lookup(identity.device_id())
            .await
            .lookup()
            .addresses,
        vec!["quic://192.0.2.1:22000".to_owned()]
    );
    let reply = two
        .device(&identity)
        .announce(&["quic://[2001:db8::1]:22000"])
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        one.anonymous()
            .lookup(identity.device_id())
            .await
            .lookup()
            .addresses,
        vec![
            "quic://192.0.2.1:22000".to_owned(),
            "quic://[2001:db8::1]:22000".to_owned()
        ]
    );
    assert_eq!(
        crate::suite::metric(&two, "peerfold_discovery_devices").await,
        1.0
    );
    // A server stopping takes nothing with it.
    one.server.unwrap().shutdown().await.unwrap();
    assert_eq!(
        two.anonymous().lookup(identity.device_id()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = peerfold_discovery::Config::testing(dir.path());
    config.store = peerfold_discovery::StoreConfig::Redis(format!("redis://127.0.0.1:{port}/"));
    let error = peerfold_discovery::Server::bind(config).await.unwrap_err();
    assert!(
        matches!(error, peerfold_discovery::Error::Store(_)),
        "{error}"
    );
}
