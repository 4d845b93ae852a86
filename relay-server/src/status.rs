//! `GET /status` on its own plain-HTTP listener: strelaysrv's JSON, so tools made for
//! Syncthing relays (the pool server's stats, dashboards) read ours. Everything else is 404.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::server::Relay;

/// Status connections served at once; the rest are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// A status client must send its request head within this, and is cut after idling this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/status` until the relay shuts down.
pub(crate) async fn serve(relay: Arc<Relay>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = relay.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, addr)) = accepted else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let relay2 = relay.clone();
        relay.tasks.spawn(async move {
            let service = service_fn(|request| {
                let reply = respond(&relay2, &request);
                async move { Ok::<_, Infallible>(reply) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let result = tokio::select! {
                () = relay2.cancel.cancelled() => Ok(()),
                result = tokio::time::timeout(READ_TIMEOUT, connection) => {
                    result.unwrap_or(Ok(()))
                }
            };
            if let Err(error) = result {
                tracing::debug!(%addr, %error, "status connection failed");
            }
            drop(permit);
        });
    }
}

fn respond(relay: &Relay, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/status" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"404 page not found\n")))
            .expect("a valid response");
    }
    let body = serde_json::to_vec_pretty(&status_json(relay)).expect("JSON values serialise");
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// strelaysrv's fields, with ours where Go's runtime fields have no meaning (`goMaxProcs` is
/// the worker threads' upper bound, the CPUs).
pub(crate) fn status_json(relay: &Relay) -> serde_json::Value {
    let stats = &relay.stats;
    let config = &relay.config;
    let now = Instant::now();
    json!({
        "version": concat!("v", env!("CARGO_PKG_VERSION")),
        "buildHost": "",
        "buildUser": "",
        "buildDate": "",
        "implementation": "peerfold-relay",
        "startTime": stats.started_at.to_string(),
        "uptimeSeconds": now.saturating_duration_since(stats.started).as_secs(),
        "numPendingSessionKeys": relay.sessions.pending_keys(),
        "numActiveSessions": stats.active_sessions.get(),
        "numConnections": stats.connections.get(),
        "numProxies": stats.proxies.get(),
        "bytesProxied": stats.bytes_proxied(),
        "goVersion": "",
        "goOS": std::env::consts::OS,
        "goArch": std::env::consts::ARCH,
        "goMaxProcs": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "goNumRoutine": relay.tasks.len(),
        "kbps10s1m5m15m30m60m": stats.kbps(now),
        "options": {
            "network-timeout": config.network_timeout.as_secs(),
            "ping-interval": config.ping_interval.as_secs(),
            "message-timeout": config.message_timeout.as_secs(),
            "per-session-rate": config.per_session_rate,
            "global-rate": config.global_rate,
            "pools": config.pools,
            "provided-by": config.provided_by,
        },
    })
}
