//! `/rest/system/*`, `/rest/events` and `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, Params, number};
use crate::daemon::Shared;
use crate::live_config;
use crate::summary;
use peerfold_protocol::DeviceId;

pub(super) async fn status(State(shared): State<Arc<Shared>>) -> ApiResult {
    let listening = shared.listening();
    let services: Map<String, Value> = listening
        .iter()
        .map(|addr| {
            let url = format!("quic://{addr}");
            (
                url.clone(),
                json!({ "error": null, "lanAddresses": [url.clone()], "wanAddresses": [url] }),
            )
        })
        .collect();
    let uptime = jiff::Timestamp::now().as_second() - shared.started.as_second();
    Ok(axum::Json(json!({
        "myID": shared.me.to_string(),
        "startTime": shared.started.to_string(),
        "uptime": uptime,
        "alloc": 0,
        "sys": resident_bytes(),
        "goroutines": 0,
        "cpuPercent": 0,
        "pathSeparator": "/",
        "tilde": dirs::home_dir().unwrap_or_default(),
        "discoveryEnabled": false,
        "discoveryStatus": {},
        "discoveryErrors": {},
        "discoveryMethods": 0,
        "connectionServiceStatus": services,
        "lastDialStatus": {},
        "guiAddressOverridden": false,
        "guiAddressUsed": shared.api_address().map(|a| a.to_string()).unwrap_or_default(),
        "urVersionMax": 3,
    })))
}

pub(super) async fn version() -> ApiResult {
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    Ok(axum::Json(json!({
        "version": version,
        "longVersion": format!("peerfold {version} ({} {arch})", std::env::consts::OS),
        "os": std::env::consts::OS,
        "arch": arch,
        "codename": "",
        "isBeta": false,
        "isCandidate": false,
        "isRelease": true,
        "date": "",
        "tags": [],
        "stamp": "",
        "user": "",
    })))
}

pub(super) async fn ping() -> ApiResult {
    Ok(axum::Json(json!({ "ping": "pong" })))
}

pub(super) async fn discovery() -> ApiResult {
    // No discovery yet: an empty cache.
    Ok(axum::Json(json!({})))
}

pub(super) async fn errors() -> ApiResult {
    Ok(axum::Json(json!({ "errors": null })))
}

pub(super) async fn connections(State(shared): State<Arc<Shared>>) -> ApiResult {
    let now = jiff::Timestamp::now().to_string();
    let (mut total_in, mut total_out) = (0u64, 0u64);
    let mut connections = Map::new();
    for device in &shared.config().devices {
        let connection = shared.connection(device.id);
        let info = shared.peer_info(device.id);
        let stats = connection.as_ref().map(quinn::Connection::stats);
        let (in_bytes, out_bytes) = stats
            .as_ref()
            .map_or((0, 0), |s| (s.udp_rx.bytes, s.udp_tx.bytes));
        total_in += in_bytes;
        total_out += out_bytes;
        let address = connection
            .as_ref()
            .map(|c| c.remote_address().to_string())
            .unwrap_or_default();
        let kind = match (&connection, &info) {
            (Some(_), Some(info)) if info.dialed => "quic-client",
            (Some(_), _) => "quic-server",
            (None, _) => "",
        };
        let is_local = connection
            .as_ref()
            .is_some_and(|c| is_lan(c.remote_address().ip()));
        let started = info
            .as_ref()
            .map(|i| i.started_at.to_string())
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
        let client_version = info.map(|i| i.client_version).unwrap_or_default();
        let entry = json!({
            "at": now,
            "connected": connection.is_some(),
            "paused": device.paused,
            "clientVersion": client_version,
            "address": address,
            "type": kind,
            "isLocal": is_local,
            "crypto": if connection.is_some() { "TLS1.3-QUIC" } else { "" },
            "startedAt": started,
            "inBytesTotal": in_bytes,
            "outBytesTotal": out_bytes,
        });
        let mut full = entry.clone();
        full["primary"] = entry;
        full["secondary"] = json!([]);
        connections.insert(device.id.to_string(), full);
    }
    Ok(axum::Json(json!({
        "connections": connections,
        "total": { "at": now, "inBytesTotal": total_in, "outBytesTotal": total_out },
    })))
}

fn is_lan(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
    }
}

pub(super) async fn shutdown(State(shared): State<Arc<Shared>>) -> ApiResult {
    // Answer first; the daemon then stops the way SIGTERM stops it.
    let cancel = shared.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    Ok(axum::Json(json!({ "ok": "shutting down" })))
}

pub(super) async fn restart(State(shared): State<Arc<Shared>>) -> ApiResult {
    // Answer first; `serve` then starts the daemon again with the saved configuration.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        shared.request_restart();
    });
    Ok(axum::Json(json!({ "ok": "restarting" })))
}

pub(super) async fn pause(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    set_paused(&shared, &params, true).await
}

pub(super) async fn resume(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    set_paused(&shared, &params, false).await
}

/// Pauses or resumes `device=` (every device without it), as a saved configuration change.
async fn set_paused(shared: &Arc<Shared>, params: &Params, paused: bool) -> ApiResult {
    let wanted: Option<DeviceId> = match params.get("device").filter(|d| !d.is_empty()) {
        None => None,
        Some(text) => {
            let id: DeviceId = text
                .parse()
                .map_err(|e| ApiError::bad_request(format!("device ID {text:?}: {e}")))?;
            if !shared.is_known(id) {
                return Err(ApiError::not_found(format!("no device {id}")));
            }
            Some(id)
        }
    };
    live_config::change(shared, |config| {
        for device in &mut config.devices {
            if wanted.is_none_or(|w| w == device.id) {
                device.paused = paused;
            }
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

/// Syncthing's "never": the zero time its GUI shows as such.
const NEVER: &str = "1970-01-01T00:00:00Z";

/// `/rest/stats/device`: when each device was last connected and for how long (kept
/// since this run started).
pub(super) async fn device_stats(State(shared): State<Arc<Shared>>) -> ApiResult {
    let stats: Map<String, Value> = shared
        .config()
        .devices
        .iter()
        .map(|device| {
            let (seen, seconds) = shared
                .last_seen(device.id)
                .map_or((NEVER.to_owned(), 0.0), |(t, s)| (t.to_string(), s));
            (
                device.id.to_string(),
                json!({ "lastSeen": seen, "lastConnectionDurationS": seconds }),
            )
        })
        .collect();
    Ok(axum::Json(Value::Object(stats)))
}

/// `/rest/stats/folder`: each running folder's last scan and last synced file.
pub(super) async fn folder_stats(State(shared): State<Arc<Shared>>) -> ApiResult {
    let stats: Map<String, Value> = shared
        .folders()
        .iter()
        .map(|folder| {
            let s = folder.stats();
            let last_file = s.last_file.map_or_else(
                || json!({ "at": NEVER, "filename": "", "deleted": false }),
                |(at, name, deleted)| {
                    json!({ "at": at.to_string(), "filename": name, "deleted": deleted })
                },
            );
            let last_scan = s
                .last_scan
                .map_or_else(|| NEVER.to_owned(), |t| t.to_string());
            (
                folder.id.clone(),
                json!({ "lastFile": last_file, "lastScan": last_scan }),
            )
        })
        .collect();
    Ok(axum::Json(Value::Object(stats)))
}

/// The longest a poll may wait.
const MAX_EVENT_TIMEOUT_S: u64 = 3600;

pub(super) async fn events(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let since = number(&params, "since", 0)?;
    let limit = number(&params, "limit", 0)?;
    let timeout = number(&params, "timeout", 60)?;
    if timeout > MAX_EVENT_TIMEOUT_S {
        return Err(ApiError::bad_request(format!(
            "timeout must be at most {MAX_EVENT_TIMEOUT_S} seconds"
        )));
    }
    let kinds: Vec<String> = params
        .get("events")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let events = shared
        .events
        .wait(
            since,
            &kinds,
            usize::try_from(limit).unwrap_or(usize::MAX),
            Duration::from_secs(timeout),
        )
        .await;
    Ok(axum::Json(Value::Array(
        events.iter().map(crate::events::Event::to_json).collect(),
    )))
}

/// Prometheus text: traffic, connections, and per folder its files and bytes.
pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let shared2 = shared.clone();
    let summaries = tokio::task::spawn_blocking(move || {
        shared2
            .folders()
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    f.state().name(),
                    summary::folder_summary(&shared2, f),
                    f.stats(),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut out = String::new();
    let (mut connected, mut rx, mut tx) = (0u64, 0u64, 0u64);
    for device in &shared.config().devices {
        if let Some(c) = shared.connection(device.id) {
            connected += 1;
            let stats = c.stats();
            rx += stats.udp_rx.bytes;
            tx += stats.udp_tx.bytes;
        }
    }
    let _ = writeln!(
        out,
        "# HELP peerfold_connections Connected devices.\n# TYPE peerfold_connections gauge\npeerfold_connections {connected}"
    );
    let _ = writeln!(
        out,
        "# HELP peerfold_received_bytes_total Bytes received from connected devices.\n# TYPE peerfold_received_bytes_total counter\npeerfold_received_bytes_total {rx}"
    );
    let _ = writeln!(
        out,
        "# HELP peerfold_sent_bytes_total Bytes sent to connected devices.\n# TYPE peerfold_sent_bytes_total counter\npeerfold_sent_bytes_total {tx}"
    );
    let _ = writeln!(
        out,
        "# HELP peerfold_folder_files Items per folder and scope.\n# TYPE peerfold_folder_files gauge"
    );
    let mut bytes = String::from(
        "# HELP peerfold_folder_bytes Bytes per folder and scope.\n# TYPE peerfold_folder_bytes gauge\n",
    );
    let mut states = String::from(
        "# HELP peerfold_folder_state 1 for the state the folder is in.\n# TYPE peerfold_folder_state gauge\n",
    );
    let mut scans = String::from(
        "# HELP peerfold_folder_scan_seconds Time spent scanning, and scans done.\n# TYPE peerfold_folder_scan_seconds summary\n",
    );
    let mut pulls = String::from(
        "# HELP peerfold_folder_pull_seconds Time spent in pull rounds that had work, and those rounds.\n# TYPE peerfold_folder_pull_seconds summary\n",
    );
    for (id, state, summary, stats) in summaries {
        let id = id.replace('\\', "\\\\").replace('"', "\\\"");
        for (out, name, seconds, count) in [
            (&mut scans, "scan", stats.scan_seconds, stats.scans),
            (&mut pulls, "pull", stats.pull_seconds, stats.pulls),
        ] {
            let _ = writeln!(
                out,
                "peerfold_folder_{name}_seconds_sum{{folder=\"{id}\"}} {seconds:.3}\npeerfold_folder_{name}_seconds_count{{folder=\"{id}\"}} {count}"
            );
        }
        let _ = writeln!(
            states,
            "peerfold_folder_state{{folder=\"{id}\",state=\"{state}\"}} 1"
        );
        let Ok(s) = summary else { continue };
        for (scope, counts) in [("local", s.local), ("global", s.global), ("need", s.need)] {
            let _ = writeln!(
                out,
                "peerfold_folder_files{{folder=\"{id}\",scope=\"{scope}\"}} {}",
                counts.files
            );
            let _ = writeln!(
                bytes,
                "peerfold_folder_bytes{{folder=\"{id}\",scope=\"{scope}\"}} {}",
                counts.bytes
            );
        }
    }
    out.push_str(&bytes);
    out.push_str(&states);
    out.push_str(&scans);
    out.push_str(&pulls);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// The process's resident memory, from /proc.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
