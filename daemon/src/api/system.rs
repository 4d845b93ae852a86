//! `/rest/system/*`, `/rest/events` and `/metrics`.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use peerfold_engine::IndexReset;
use peerfold_engine::config::ConfigEdit;
use peerfold_engine::events::{ConnectionKind, Event};
use peerfold_protocol::DeviceId;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, AppState, Params, events, number};

pub(super) async fn status(State(api): AppState) -> ApiResult {
    let engine = &api.engine;
    let listening = engine.listening();
    // The first listener's socket also learns its public address (STUN): it is one of its
    // WAN addresses, with what the mappings say about the NAT (`natType`, peerfold's own).
    let public = engine.public_address();
    let mut services: Map<String, Value> = listening
        .iter()
        .enumerate()
        .map(|(index, addr)| {
            let url = format!("quic://{addr}");
            let mut wan = vec![url.clone()];
            let mut service = json!({ "error": null, "lanAddresses": [url.clone()] });
            if index == 0 {
                let mapped = public.address.map(|a| format!("quic://{a}"));
                wan.extend(mapped.filter(|m| *m != url));
                service["natType"] = json!(public.nat_type.as_str());
            }
            service["wanAddresses"] = json!(wan);
            (url, service)
        })
        .collect();
    // A relay is a listener in Syncthing's terms: its address is the relay's while a slot
    // is held there.
    for slot in engine.relay_slots() {
        let addresses: Vec<&str> = match slot.error {
            None => vec![&slot.url],
            Some(_) => Vec::new(),
        };
        services.insert(
            slot.url.clone(),
            json!({ "error": slot.error, "lanAddresses": addresses, "wanAddresses": addresses }),
        );
    }
    let uptime = jiff::Timestamp::now().as_second() - engine.started().as_second();
    let methods = engine.discovery_status();
    let discovery_status: Map<String, Value> = methods
        .iter()
        .map(|m| (m.name.clone(), json!({ "error": m.error })))
        .collect();
    let discovery_errors: Map<String, Value> = methods
        .iter()
        .filter_map(|m| Some((m.name.clone(), json!(m.error.as_ref()?))))
        .collect();
    Ok(axum::Json(json!({
        "myID": engine.device_id().to_string(),
        "startTime": engine.started().to_string(),
        "uptime": uptime,
        "alloc": 0,
        "sys": resident_bytes(),
        "goroutines": 0,
        "cpuPercent": 0,
        "pathSeparator": "/",
        "tilde": dirs::home_dir().unwrap_or_default(),
        "discoveryEnabled": !methods.is_empty(),
        "discoveryStatus": discovery_status,
        "discoveryErrors": discovery_errors,
        "discoveryMethods": methods.len(),
        "connectionServiceStatus": services,
        "lastDialStatus": {},
        "guiAddressOverridden": false,
        "guiAddressUsed": api.address.to_string(),
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

/// What discovery knows (LAN and global lookups), configured devices or not, as
/// Syncthing's `{"DEVICE-ID": {"addresses": [...]}}`.
pub(super) async fn discovery(State(api): AppState) -> ApiResult {
    let known: Map<String, Value> = api
        .engine
        .discovered()
        .into_iter()
        .map(|(device, addresses)| {
            let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            (device.to_string(), json!({ "addresses": addresses }))
        })
        .collect();
    Ok(axum::Json(Value::Object(known)))
}

/// Errors posted through `POST /rest/system/error` (Syncthing's GUI and `syncthing cli
/// errors push` add them; the GUI shows them until cleared), oldest first.
#[derive(Debug, Default)]
pub(crate) struct PostedErrors(
    std::sync::Mutex<std::collections::VecDeque<(jiff::Timestamp, String)>>,
);

/// Posted errors kept (the oldest go first) and the bytes kept of each.
const MAX_POSTED_ERRORS: usize = 100;
const MAX_POSTED_ERROR_BYTES: usize = 1024;

impl PostedErrors {
    fn list(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(jiff::Timestamp, String)>> {
        // A list of strings: whole between statements.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `GET /rest/system/error`: `{"errors": null}` or the posted errors, as Syncthing's log
/// lines (`when`, `message`, `level` 3 = warning).
pub(super) async fn errors(State(api): AppState) -> ApiResult {
    let list = api.errors.list();
    if list.is_empty() {
        return Ok(axum::Json(json!({ "errors": null })));
    }
    let errors: Vec<Value> = list
        .iter()
        .map(|(when, message)| json!({ "when": when.to_string(), "message": message, "level": 3 }))
        .collect();
    Ok(axum::Json(json!({ "errors": errors })))
}

/// `POST /rest/system/error`: the body (text) is added to the errors.
pub(super) async fn post_error(State(api): AppState, body: String) -> ApiResult {
    let mut message = body.trim().to_owned();
    if message.is_empty() {
        return Err(ApiError::bad_request("the body must be the error's text"));
    }
    let mut end = message.len().min(MAX_POSTED_ERROR_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    let mut list = api.errors.list();
    if list.len() >= MAX_POSTED_ERRORS {
        list.pop_front();
    }
    list.push_back((jiff::Timestamp::now(), message));
    Ok(axum::Json(json!({})))
}

/// `POST /rest/system/error/clear`: forgets the posted errors.
pub(super) async fn clear_errors(State(api): AppState) -> ApiResult {
    api.errors.list().clear();
    Ok(axum::Json(json!({})))
}

pub(super) async fn connections(State(api): AppState) -> ApiResult {
    let now = jiff::Timestamp::now().to_string();
    let (mut total_in, mut total_out) = (0u64, 0u64);
    let mut connections = Map::new();
    for device in &api.engine.config().devices {
        let peer = api.engine.peer(device.id);
        let (in_bytes, out_bytes) = peer
            .as_ref()
            .map_or((0, 0), |p| (p.stats.rx_bytes, p.stats.tx_bytes));
        total_in += in_bytes;
        total_out += out_bytes;
        let kind = match &peer {
            Some(p) => events::connection_type(ConnectionKind::of(p.path, p.dialed)),
            None => "",
        };
        let is_local = peer.as_ref().is_some_and(|p| {
            p.address
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| peerfold_engine::is_lan(a.ip()))
        });
        let entry = json!({
            "at": now,
            "connected": peer.is_some(),
            "paused": device.paused,
            "clientVersion": peer.as_ref().map(|p| p.client_version.clone()).unwrap_or_default(),
            "address": peer.as_ref().map(|p| p.address.clone()).unwrap_or_default(),
            "type": kind,
            // peerfold's own: a direct path hole punching opened.
            "holePunched": peer.as_ref().is_some_and(|p| p.punched),
            "isLocal": is_local,
            "crypto": if peer.is_some() { "TLS1.3-QUIC" } else { "" },
            "startedAt": peer
                .as_ref()
                .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |p| p.connected_since.to_string()),
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

pub(super) async fn shutdown(State(api): AppState) -> ApiResult {
    // Answered first; the engine then stops the way SIGTERM stops it.
    api.stop.cancel();
    api.engine.request_stop();
    Ok(axum::Json(json!({ "ok": "shutting down" })))
}

pub(super) async fn restart(State(api): AppState) -> ApiResult {
    // Answered first; `serve` then starts the engine again with the saved configuration.
    api.stop.cancel();
    api.engine.request_restart();
    Ok(axum::Json(json!({ "ok": "restarting" })))
}

/// Erases the index (of `folder=` only, if given) and restarts; the index is rebuilt from
/// disk and from peers (Syncthing's reset).
pub(super) async fn reset(State(api): AppState, params: Params) -> ApiResult {
    let reset = match params.get("folder").filter(|f| !f.is_empty()) {
        None => IndexReset::All,
        Some(id) if api.engine.config().folder(id).is_some() => IndexReset::Folder(id.clone()),
        Some(id) => return Err(ApiError::not_found(format!("no folder {id:?}"))),
    };
    let message = match &reset {
        IndexReset::All => "resetting database".to_owned(),
        IndexReset::Folder(id) => format!("resetting folder {id}"),
    };
    api.stop.cancel();
    api.engine.request_reset(reset);
    Ok(axum::Json(json!({ "ok": message })))
}

pub(super) async fn pause(State(api): AppState, params: Params) -> ApiResult {
    set_paused(&api, &params, true).await
}

pub(super) async fn resume(State(api): AppState, params: Params) -> ApiResult {
    set_paused(&api, &params, false).await
}

/// Pauses or resumes `device=` (every device without it), as a saved configuration change.
async fn set_paused(api: &super::Api, params: &Params, paused: bool) -> ApiResult {
    let device: Option<DeviceId> = match params.get("device").filter(|d| !d.is_empty()) {
        None => None,
        Some(text) => {
            let id: DeviceId = text
                .parse()
                .map_err(|e| ApiError::bad_request(format!("device ID {text:?}: {e}")))?;
            if !api.engine.config().devices.iter().any(|d| d.id == id) {
                return Err(ApiError::not_found(format!("no device {id}")));
            }
            Some(id)
        }
    };
    api.engine
        .change_config(ConfigEdit::PauseDevices { device, paused })
        .await?;
    Ok(axum::Json(json!({})))
}

/// Syncthing's "never": the zero time its GUI shows as such.
const NEVER: &str = "1970-01-01T00:00:00Z";

/// `/rest/stats/device`: when each device was last connected and for how long (kept
/// since this run started).
pub(super) async fn device_stats(State(api): AppState) -> ApiResult {
    let stats: Map<String, Value> = api
        .engine
        .config()
        .devices
        .iter()
        .map(|device| {
            let (seen, seconds) = api
                .engine
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
pub(super) async fn folder_stats(State(api): AppState) -> ApiResult {
    let stats: Map<String, Value> = api
        .engine
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
                folder.id().to_owned(),
                json!({ "lastFile": last_file, "lastScan": last_scan }),
            )
        })
        .collect();
    Ok(axum::Json(Value::Object(stats)))
}

/// The longest a poll may wait.
const MAX_EVENT_TIMEOUT_S: u64 = 3600;

/// `GET /rest/events`: every event but the disk ones.
pub(super) async fn events(State(api): AppState, params: Params) -> ApiResult {
    poll_events(&api, &params, false).await
}

/// `GET /rest/events/disk`: `LocalChangeDetected` and `RemoteChangeDetected`, numbered on
/// their own (Syncthing keeps them apart too).
pub(super) async fn disk_events(State(api): AppState, params: Params) -> ApiResult {
    poll_events(&api, &params, true).await
}

async fn poll_events(api: &super::Api, params: &Params, disk: bool) -> ApiResult {
    let since = number(params, "since", 0)?;
    let limit = number(params, "limit", 0)?;
    let timeout = number(params, "timeout", 60)?;
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
    let wanted =
        |event: &Event| kinds.is_empty() || kinds.iter().any(|k| k == events::type_name(event));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // A poll fails when the daemon is about to stop or restart, so it never holds up a
    // shutdown and never passes the events of one for "back online".
    let stopping = || ApiError::unavailable("the daemon is stopping");
    if api.stop.is_cancelled() {
        return Err(stopping());
    }
    let log = api.engine.events();
    let timeout = Duration::from_secs(timeout);
    let found = tokio::select! {
        biased;
        () = api.stop.cancelled() => return Err(stopping()),
        found = log.wait_disk(since, &wanted, limit, timeout), if disk => found,
        found = log.wait(since, &wanted, limit, timeout), if !disk => found,
    };
    let config = found
        .iter()
        .any(|logged| matches!(*logged.event, Event::ConfigSaved))
        .then(|| super::config_json::config_json(&api.engine.config(), api.engine.device_id()));
    Ok(axum::Json(Value::Array(
        found
            .iter()
            .map(|logged| events::to_syncthing(logged, config.as_ref()))
            .collect(),
    )))
}

/// Prometheus text: traffic, connections, and per folder its files and bytes.
pub(super) async fn metrics(State(api): AppState) -> impl IntoResponse {
    let mut summaries = Vec::new();
    for folder in api.engine.folders() {
        let summary = folder.summary().await;
        summaries.push((
            folder.id().to_owned(),
            folder.state().name().as_str(),
            summary,
            folder.stats(),
        ));
    }
    let mut out = String::new();
    let (mut connected, mut rx, mut tx) = (0u64, 0u64, 0u64);
    for device in &api.engine.config().devices {
        if let Some(peer) = api.engine.peer(device.id) {
            connected += 1;
            rx += peer.stats.rx_bytes;
            tx += peer.stats.tx_bytes;
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
pub(super) fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
