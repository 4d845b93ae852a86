//! `/status`: strelaysrv's JSON, counting what the relay does.

use crate::support::{Relay, check_flow, pattern, session};

#[tokio::test]
async fn status_counts_sessions_and_bytes() {
    let relay = Relay::start(|config| {
        config.provided_by = "tests".into();
        config.per_session_rate = 0;
    })
    .await;
    let status = relay.status().await;
    assert_eq!(status["numActiveSessions"], 0);
    assert_eq!(status["bytesProxied"], 0);
    assert_eq!(status["options"]["network-timeout"], 120);
    assert_eq!(status["options"]["ping-interval"], 60);
    assert_eq!(status["options"]["message-timeout"], 60);
    assert_eq!(status["options"]["provided-by"], "tests");
    assert_eq!(status["kbps10s1m5m15m30m60m"].as_array().unwrap().len(), 6);
    assert!(status["goMaxProcs"].as_u64().unwrap() >= 1);
    assert!(status["uptimeSeconds"].is_u64());

    let (_permanent, mut a, mut b) = session(&relay).await;
    check_flow(&mut a, &mut b, &pattern(300_000, 5)).await;
    check_flow(&mut b, &mut a, &pattern(200_000, 6)).await;
    let status = relay.status().await;
    assert_eq!(status["numActiveSessions"], 1);
    assert_eq!(status["numProxies"], 2);
    assert_eq!(status["numPendingSessionKeys"], 0);
    // The permanent connection (the temporary one has closed).
    assert_eq!(status["numConnections"], 1);
    assert_eq!(status["bytesProxied"], 500_000);
}
