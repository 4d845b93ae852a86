//! One request in, one response out: the v3 announce and lookup, `/ping` and `/metrics`,
//! with the status codes and headers of the spec (see `shared/specs/global-discovery-v3.md`).
//!
//! Every error reply carries `Retry-After`. The connection-level limits (timeouts, the
//! connection cap) live in `server.rs`; this module enforces the per-request ones: header
//! and body size, body read time and the per-IP rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use peerfold_protocol::DeviceId;
use peerfold_protocol::discovery::{
    Announcement, LookupReply, REANNOUNCE_AFTER, RETRY_AFTER, fix_up,
};
use percent_encoding::percent_decode_str;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::limits::{self, NotFoundTracker, RateLimiter};
use crate::metrics::{self, AnnounceResult, LookupResult, Metrics, RequestKind};
use crate::proxy;
use crate::store::Store;

/// Most header bytes (names and values) a request may carry; more gets 431. hyper's HTTP/1
/// read buffer (8 KiB, its minimum) bounds it before this check; stdiscosrv allows 1 KiB
/// plus Go's 4 KiB slack. Proxy mode needs room for a PEM certificate header (~1–2 KiB).
pub(crate) const MAX_HEADER_BYTES: usize = 8 * 1024;

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Clock,
    pub(crate) limiter: RateLimiter,
    pub(crate) unseen: NotFoundTracker,
    pub(crate) seen_before: NotFoundTracker,
    pub(crate) metrics: Metrics,
    /// Client address and certificate come from proxy headers.
    pub(crate) behind_proxy: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) read_timeout: Duration,
}

/// What the connection knows about the client.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    /// The socket's remote address.
    pub(crate) addr: SocketAddr,
    /// From the client certificate in the TLS session, if any.
    pub(crate) device: Option<DeviceId>,
    /// This listener serves only `/metrics` and `/ping` (`--metrics-listen`).
    pub(crate) metrics_only: bool,
}

type Reply = Response<Full<Bytes>>;

impl App {
    /// Answers one request.
    pub(crate) async fn handle(&self, peer: Peer, request: Request<Incoming>) -> Reply {
        let started = Instant::now();
        let (kind, reply) = self.route(peer, request).await;
        self.metrics.latency(kind, started.elapsed());
        reply
    }

    async fn route(&self, peer: Peer, request: Request<Incoming>) -> (RequestKind, Reply) {
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return (
                RequestKind::Other,
                error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            );
        }
        let path = request.uri().path();
        let method = request.method().clone();
        if path == "/ping" && (method == Method::GET || method == Method::HEAD) {
            return (RequestKind::Other, empty(StatusCode::NO_CONTENT));
        }
        if path == "/metrics" && method == Method::GET {
            return (RequestKind::Other, self.metrics_reply().await);
        }
        if peer.metrics_only {
            return (RequestKind::Other, error(StatusCode::NOT_FOUND));
        }
        let (source, device) = if self.behind_proxy {
            (
                proxy::source(request.headers(), peer.addr),
                proxy::client_device(request.headers()),
            )
        } else {
            (peer.addr, peer.device)
        };
        match method {
            Method::POST => (
                RequestKind::Announce,
                self.announce(source, device, request).await,
            ),
            Method::GET => (
                RequestKind::Lookup,
                self.lookup(source, request.uri().query()).await,
            ),
            _ => {
                let mut reply = error(StatusCode::METHOD_NOT_ALLOWED);
                reply
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, POST"));
                (RequestKind::Other, reply)
            }
        }
    }

    async fn announce(
        &self,
        source: SocketAddr,
        device: Option<DeviceId>,
        request: Request<Incoming>,
    ) -> Reply {
        let (result, reply) = self.announce_inner(source, device, request).await;
        self.metrics.announce(result);
        reply
    }

    async fn announce_inner(
        &self,
        source: SocketAddr,
        device: Option<DeviceId>,
        request: Request<Incoming>,
    ) -> (AnnounceResult, Reply) {
        if let Err(wait) = self.limiter.check(source.ip(), Instant::now()) {
            return (AnnounceResult::RateLimited, too_many(wait));
        }
        let Some(device) = device else {
            return (AnnounceResult::NoCertificate, error(StatusCode::FORBIDDEN));
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.max_body_bytes as u64) {
            return (
                AnnounceResult::TooLarge,
                error(StatusCode::PAYLOAD_TOO_LARGE),
            );
        }
        let body = Limited::new(request.into_body(), self.max_body_bytes).collect();
        let body = match tokio::time::timeout(self.read_timeout, body).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(failure)) if failure.is::<LengthLimitError>() => {
                return (
                    AnnounceResult::TooLarge,
                    error(StatusCode::PAYLOAD_TOO_LARGE),
                );
            }
            Ok(Err(_)) => return (AnnounceResult::BadRequest, error(StatusCode::BAD_REQUEST)),
            Err(_) => return (AnnounceResult::TooLarge, error(StatusCode::REQUEST_TIMEOUT)),
        };
        let Ok(announcement) = Announcement::decode(&body) else {
            return (AnnounceResult::BadRequest, error(StatusCode::BAD_REQUEST));
        };
        let mut addresses = fix_up(&announcement.addresses, source);
        if source.port() == 0 {
            // Behind a proxy that did not say the client's port: an address still on port 0
            // cannot be dialled.
            addresses.retain(|address| !has_zero_port(address));
        }
        if addresses.is_empty() {
            return (AnnounceResult::BadRequest, error(StatusCode::BAD_REQUEST));
        }
        let now = self.clock.now();
        if let Err(failure) = self.store.announce(device, &addresses, now).await {
            tracing::warn!(error = %failure, device = %device, "storing an announce failed");
            return (
                AnnounceResult::Error,
                error(StatusCode::INTERNAL_SERVER_ERROR),
            );
        }
        tracing::debug!(device = %device, ?addresses, "announce");
        let mut reply = empty(StatusCode::NO_CONTENT);
        reply.headers_mut().insert(
            REANNOUNCE_AFTER,
            HeaderValue::from(limits::reannounce_after()),
        );
        (AnnounceResult::Ok, reply)
    }

    async fn lookup(&self, source: SocketAddr, query: Option<&str>) -> Reply {
        let (result, reply) = self.lookup_inner(source, query).await;
        self.metrics.lookup(result);
        reply
    }

    async fn lookup_inner(&self, source: SocketAddr, query: Option<&str>) -> (LookupResult, Reply) {
        if let Err(wait) = self.limiter.check(source.ip(), Instant::now()) {
            return (LookupResult::RateLimited, too_many(wait));
        }
        let Some(device) = query.and_then(device_param) else {
            return (LookupResult::Bad, error(StatusCode::BAD_REQUEST));
        };
        let now = self.clock.now();
        let record = match self.store.lookup(device, now).await {
            Ok(record) => record,
            Err(failure) => {
                tracing::warn!(error = %failure, device = %device, "lookup failed");
                return (
                    LookupResult::Error,
                    error(StatusCode::INTERNAL_SERVER_ERROR),
                );
            }
        };
        match record {
            Some(record) if !record.addresses.is_empty() => {
                let seen = jiff::Timestamp::from_second((record.seen / 1000) as i64)
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let body = LookupReply {
                    seen: seen.to_string(),
                    addresses: record.urls(),
                }
                .encode();
                let mut reply = Response::new(Full::new(Bytes::from(body)));
                reply
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                (LookupResult::Hit, reply)
            }
            record => {
                let tracker = if record.is_some() {
                    &self.seen_before
                } else {
                    &self.unseen
                };
                let mut reply = empty(StatusCode::NOT_FOUND);
                reply.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from(tracker.retry_after(Instant::now())),
                );
                (LookupResult::Miss, reply)
            }
        }
    }

    async fn metrics_reply(&self) -> Reply {
        let devices = match self.store.devices().await {
            Ok(devices) => Some(devices),
            Err(error) => {
                tracing::warn!(%error, "counting devices failed");
                None
            }
        };
        let mut reply = Response::new(Full::new(Bytes::from(self.metrics.render(devices))));
        reply.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        reply
    }
}

/// The `device` query parameter as a device ID.
fn device_param(query: &str) -> Option<DeviceId> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("device="))?;
    percent_decode_str(value)
        .decode_utf8()
        .ok()?
        .replace('+', " ")
        .parse()
        .ok()
}

/// Whether `SCHEME://HOST:0[/...]` names port 0.
fn has_zero_port(address: &str) -> bool {
    let Some((_, after)) = address.split_once("://") else {
        return false;
    };
    let authority = &after[..after.find(['/', '?']).unwrap_or(after.len())];
    authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port == "0")
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

/// An error reply with stdiscosrv's 25–30 minute `Retry-After`.
fn error(status: StatusCode) -> Reply {
    let mut reply = empty(status);
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(limits::error_retry_after()));
    reply
}

fn too_many(wait: Duration) -> Reply {
    let mut reply = empty(StatusCode::TOO_MANY_REQUESTS);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_read_from_the_query() {
        let id: DeviceId = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2"
            .parse()
            .unwrap();
        assert_eq!(device_param(&format!("device={id}")), Some(id));
        assert_eq!(device_param(&format!("x=1&device={id}&y")), Some(id));
        assert_eq!(device_param("device=NOPE"), None);
        assert_eq!(device_param("id=1"), None);
    }

    #[test]
    fn zero_ports_are_seen() {
        assert!(has_zero_port("quic://192.0.2.1:0"));
        assert!(has_zero_port("relay://192.0.2.1:0/?id=X"));
        assert!(!has_zero_port("quic://192.0.2.1:22000"));
        assert!(!has_zero_port("quic://[2001:db8::]:10"));
    }
}
