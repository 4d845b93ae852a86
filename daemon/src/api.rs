//! The REST API, on Syncthing's paths and JSON field names, so scripts and GUIs written for
//! Syncthing (and `syncthing cli`) drive peerfold unchanged.
//!
//! Every request must name a local host in its `Host` header (against DNS rebinding) and,
//! except under `/rest/noauth/`, carry the API key as `X-API-Key: KEY` or
//! `Authorization: Bearer KEY`, or come from the web GUI with its session and CSRF token
//! (`auth`). Errors are JSON `{"error": "..."}` with a 4xx status. Paths outside `/rest/`
//! are the web GUI's files (`gui`).

mod auth;
mod cluster;
mod config_edit;
mod config_json;
mod db;
mod db_tree;
mod debug;
pub(crate) mod events;
mod folder_edit;
mod folder_files;
mod gui;
mod logs;
mod report;
mod svc;
mod syncthing_settings;
mod system;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use peerfold_engine::folder::FolderHandle;
use peerfold_engine::{ConfigChangeError, Engine, FolderLookupError};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub(crate) use auth::BrowserTokens;

/// What every handler gets: the engine, where the API listens, and the signal that it
/// stops (long polls give up then).
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) engine: Engine,
    pub(crate) address: SocketAddr,
    /// Cancelled when the API stops, and as soon as a client asks the daemon to stop or
    /// restart: long polls end then, as failures (Syncthing's GUI takes any answer to its
    /// poll for "back after the restart").
    pub(crate) stop: CancellationToken,
    /// Errors clients posted (`/rest/system/error`).
    pub(crate) errors: system::PostedErrors,
    /// The web GUI's sessions and CSRF tokens.
    pub(crate) guard: auth::Guard,
}

/// The handlers' state.
pub(crate) type AppState = State<Arc<Api>>;

/// A request that cannot be answered, as JSON.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The client sees why; the log too (a GUI may show it nowhere).
        debug!(status = self.status.as_u16(), error = %self.message, "request refused");
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// What handlers return.
pub(crate) type ApiResult = Result<axum::Json<Value>, ApiError>;

/// The query string as a map; handlers name what they miss.
pub(crate) type Params = axum::extract::Query<HashMap<String, String>>;

/// A required query parameter.
pub(crate) fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing query parameter {name:?}")))
}

/// An optional numeric query parameter.
pub(crate) fn number(params: &Params, name: &str, default: u64) -> Result<u64, ApiError> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter {name:?} must be a number, not {v:?}"
            ))
        }),
    }
}

impl From<FolderLookupError> for ApiError {
    fn from(e: FolderLookupError) -> Self {
        ApiError::not_found(e.to_string())
    }
}

impl From<ConfigChangeError> for ApiError {
    fn from(e: ConfigChangeError) -> Self {
        match e {
            ConfigChangeError::Invalid(e) => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<peerfold_engine::store::StoreError> for ApiError {
    fn from(e: peerfold_engine::store::StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// The folder a `folder=` parameter names (a paused folder is not running: 404 that says so).
pub(crate) fn folder(api: &Api, params: &Params) -> Result<FolderHandle, ApiError> {
    Ok(api.engine.folder(required(params, "folder")?)?)
}

/// Serves the API until `stop`.
/// `tokens` are the browsers' sessions and CSRF tokens, which outlive a restart.
pub(crate) async fn serve(
    engine: Engine,
    listener: TcpListener,
    stop: CancellationToken,
    tokens: BrowserTokens,
) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    // Syncthing names its CSRF cookie and header after the first 5 characters of the
    // device ID, and its GUI computes them so: the same names serve that GUI too.
    let csrf_suffix: String = engine.device_id().to_string().chars().take(5).collect();
    let api = Arc::new(Api {
        engine,
        address,
        // A child: a handler cancels it on a restart request without stopping the server.
        stop: stop.child_token(),
        errors: system::PostedErrors::default(),
        guard: auth::Guard::new(csrf_suffix, address.ip().is_loopback(), tokens),
    });
    let app = router(api).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        debug!(error = %e, "REST API stopped");
    }
}

fn router(api: Arc<Api>) -> Router {
    let local = Some(api.address);
    let routes = Router::new()
        .route("/rest/system/status", get(system::status))
        .route("/rest/system/version", get(system::version))
        .route("/rest/system/ping", get(system::ping).post(system::ping))
        .route("/rest/system/connections", get(system::connections))
        .route("/rest/system/discovery", get(system::discovery))
        .route(
            "/rest/system/error",
            get(system::errors).post(system::post_error),
        )
        .route("/rest/system/error/clear", post(system::clear_errors))
        .route("/rest/system/log", get(logs::log))
        .route("/rest/system/browse", get(report::browse))
        .route("/rest/svc/report", get(report::report))
        .route("/rest/system/log.txt", get(logs::log_text))
        .route("/rest/system/debug", get(logs::debug).post(logs::set_debug))
        .route("/rest/system/upgrade", get(svc::upgrade).post(svc::upgrade))
        .route("/rest/system/config/insync", get(svc::insync))
        .route("/rest/config/insync", get(svc::insync))
        .route("/rest/svc/random/string", get(svc::random))
        .route("/rest/svc/lang", get(svc::lang))
        .route("/rest/system/shutdown", post(system::shutdown))
        .route("/rest/system/restart", post(system::restart))
        .route("/rest/system/reset", post(system::reset))
        .route("/rest/system/pause", post(system::pause))
        .route("/rest/system/resume", post(system::resume))
        .route(
            "/rest/system/config",
            get(config_json::whole).post(config_edit::put_whole),
        )
        .route(
            "/rest/config",
            get(config_json::whole).put(config_edit::put_whole),
        )
        .route(
            "/rest/config/devices",
            get(config_json::devices)
                .post(config_edit::post_device)
                .put(config_edit::put_devices),
        )
        .route(
            "/rest/config/devices/{id}",
            get(config_json::device)
                .put(config_edit::put_device)
                .patch(config_edit::patch_device)
                .delete(config_edit::delete_device),
        )
        .route(
            "/rest/config/folders",
            get(config_json::folders)
                .post(config_edit::post_folder)
                .put(config_edit::put_folders),
        )
        .route(
            "/rest/config/folders/{id}",
            get(config_json::folder)
                .put(config_edit::put_folder)
                .patch(config_edit::patch_folder)
                .delete(config_edit::delete_folder),
        )
        .route(
            "/rest/config/options",
            get(config_json::options)
                .put(config_edit::put_options)
                .patch(config_edit::put_options),
        )
        .route(
            "/rest/config/gui",
            get(config_json::gui)
                .put(config_edit::put_gui)
                .patch(config_edit::put_gui),
        )
        .route(
            "/rest/config/defaults/folder",
            get(config_json::default_folder)
                .put(config_edit::put_default_folder)
                .patch(config_edit::put_default_folder),
        )
        .route(
            "/rest/config/defaults/device",
            get(config_json::default_device)
                .put(config_edit::put_default_device)
                .patch(config_edit::put_default_device),
        )
        .route(
            "/rest/config/defaults/ignores",
            get(config_json::default_ignores).put(config_edit::put_default_ignores),
        )
        .route(
            "/rest/config/restart-required",
            get(config_json::restart_required),
        )
        .route("/rest/db/status", get(db::status))
        .route("/rest/db/completion", get(db::completion))
        .route("/rest/db/scan", post(db::scan))
        .route("/rest/db/override", post(db::override_changes))
        .route("/rest/db/revert", post(db::revert_changes))
        .route("/rest/db/file", get(db::file))
        .route("/rest/db/need", get(db::need))
        .route("/rest/db/remoteneed", get(db_tree::remote_need))
        .route("/rest/db/browse", get(db_tree::browse))
        .route("/rest/db/prio", post(db_tree::prio))
        .route("/rest/folder/errors", get(db::errors))
        .route(
            "/rest/folder/versions",
            get(folder_files::versions).post(folder_files::restore_versions),
        )
        .route(
            "/rest/db/ignores",
            get(folder_files::get_ignores).post(folder_files::set_ignores),
        )
        .route("/rest/db/conflicts", get(folder_files::conflicts))
        .route(
            "/rest/db/conflicts/resolve",
            post(folder_files::resolve_conflict),
        )
        .route("/rest/db/transfers", get(folder_files::transfers))
        .route("/rest/events", get(system::events))
        .route("/rest/events/disk", get(system::disk_events))
        .route("/rest/stats/device", get(system::device_stats))
        .route("/rest/stats/folder", get(system::folder_stats))
        .route(
            "/rest/cluster/pending/devices",
            get(cluster::pending_devices).delete(cluster::forget_pending_device),
        )
        .route(
            "/rest/cluster/pending/folders",
            get(cluster::pending_folders).delete(cluster::forget_pending_folder),
        )
        .route("/rest/svc/deviceid", get(cluster::device_id))
        .route("/qr/", get(cluster::qr))
        .route("/metrics", get(system::metrics))
        .merge(debug_routes(&api))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route(
            "/rest/noauth/health",
            get(|| async { axum::Json(json!({ "status": "OK" })) }),
        )
        .route("/rest/noauth/auth/password", post(auth::login))
        .route("/rest/noauth/auth/logout", post(auth::logout))
        .merge(routes)
        .fallback(gui::serve)
        .layer(axum::middleware::map_response_with_state(
            api.clone(),
            with_details,
        ))
        .layer(axum::middleware::from_fn_with_state(local, check_host))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(api)
}

/// Syncthing's `/rest/debug/*`, answered only while the GUI setting `debugging` is on.
fn debug_routes(api: &Arc<Api>) -> Router<Arc<Api>> {
    Router::new()
        .route("/rest/debug/peerCompletion", get(debug::peer_completion))
        .route("/rest/debug/file", get(debug::file))
        .route("/rest/debug/support", get(debug::support))
        .route("/rest/debug/cpuprof", get(debug::go_profile))
        .route("/rest/debug/heapprof", get(debug::go_profile))
        .route("/rest/debug/httpmetrics", get(debug::no_http_metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            debug::only_when_debugging,
        ))
}

/// Syncthing's response headers naming the device and version: its GUI learns its CSRF
/// names from `X-Syncthing-Id`.
async fn with_details(State(api): AppState, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(id) = header::HeaderValue::from_str(&api.engine.device_id().to_string()) {
        headers.insert("x-syncthing-id", id);
    }
    headers.insert(
        "x-syncthing-version",
        header::HeaderValue::from_static(concat!("v", env!("CARGO_PKG_VERSION"))),
    );
    response
}

/// Puts axum's own refusals (a wrong method, a path parameter that is not UTF-8, a body
/// over the size limit), which come as plain text or nothing, in the API's JSON shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let allow = parts.headers.get(header::ALLOW).cloned();
    let challenge = parts.headers.get(header::WWW_AUTHENTICATE).cloned();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = allow
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .unwrap_or_default();
        format!("method {method} is not allowed on {path} (allowed: {allowed})")
    } else if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.trim().to_owned()
    };
    let mut out = ApiError { status, message }.into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    if let Some(challenge) = challenge {
        out.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    out
}

/// Refuses requests whose `Host` is not this machine (DNS rebinding).
async fn check_host(
    State(local): State<Option<SocketAddr>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if is_local_host(host, local) {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            axum::Json(json!({ "error": format!("host {host:?} is not allowed: use localhost or the API address") })),
        )
            .into_response()
    }
}

/// `localhost`, a loopback address or the listen address, with any port.
fn is_local_host(host: &str, local: Option<SocketAddr>) -> bool {
    // A bare IPv6 address (`::1`) has colons but no port.
    let name = match host.rsplit_once(':') {
        _ if host.parse::<std::net::Ipv6Addr>().is_ok() => host,
        // `[::1]:8385`, `127.0.0.1:8385`, `localhost:8385`; a bare `::1` has colons too.
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.is_empty() => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || local.is_some_and(|l| l.ip() == ip),
        Err(_) => false,
    }
}

/// Compares without leaking where the first difference is (BLAKE3 digests compare in
/// constant time).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    blake3::hash(a) == blake3::hash(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts() {
        let local: SocketAddr = "192.0.2.7:8385".parse().unwrap();
        for host in [
            "localhost",
            "LOCALHOST:8385",
            "127.0.0.1:8385",
            "127.0.0.1",
            "[::1]:8385",
            "::1",
            "192.0.2.7:8385",
        ] {
            assert!(is_local_host(host, Some(local)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8385",
            "192.0.2.8:8385",
            "",
            "localhost.evil",
        ] {
            assert!(!is_local_host(host, Some(local)), "{host}");
        }
    }
}
