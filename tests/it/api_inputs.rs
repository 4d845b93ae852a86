//! Bad input to every REST endpoint: each request is refused with a 4xx status and a JSON
//! `{"error": ...}` that names the problem, the daemon keeps answering, and its
//! configuration is exactly what it was (nothing lost, nothing half-applied).
//!
//! The endpoints come from the router's source (`daemon/src/api.rs`), so a new endpoint
//! without rows here fails the test.

use peerfold_protocol::DeviceId;
use serde_json::{Value, json};

use crate::api::Api;
use crate::support::Device;

/// The router, read for the list of endpoints.
const ROUTER_SOURCE: &str = include_str!("../../daemon/src/api.rs");

/// Endpoints and methods that take no input at all (no query parameters, no body, no path
/// parameters): their rows send the wrong method instead. `POST /rest/system/shutdown` and
/// `restart` are here too: any request they accept stops the daemon under test.
const NO_INPUT: &[(&str, &str)] = &[
    ("GET", "/rest/noauth/health"),
    // Ends this browser's session, if it has one; nothing else to say.
    ("POST", "/rest/noauth/auth/logout"),
    ("GET", "/rest/system/status"),
    ("GET", "/rest/system/version"),
    ("GET", "/rest/system/ping"),
    ("POST", "/rest/system/ping"),
    ("GET", "/rest/system/connections"),
    ("GET", "/rest/system/discovery"),
    ("GET", "/rest/system/error"),
    ("GET", "/rest/system/debug"),
    // Any path is a fine prefix: one that matches nothing completes to nothing.
    ("GET", "/rest/system/browse"),
    ("GET", "/rest/svc/report"),
    ("POST", "/rest/system/error/clear"),
    ("GET", "/rest/system/upgrade"),
    ("POST", "/rest/system/upgrade"),
    ("GET", "/rest/system/config/insync"),
    ("GET", "/rest/config/insync"),
    ("GET", "/rest/svc/lang"),
    ("POST", "/rest/system/shutdown"),
    ("POST", "/rest/system/restart"),
    ("GET", "/rest/system/config"),
    ("GET", "/rest/config"),
    ("GET", "/rest/config/devices"),
    ("GET", "/rest/config/folders"),
    ("GET", "/rest/config/options"),
    ("GET", "/rest/config/gui"),
    ("GET", "/rest/config/defaults/folder"),
    ("GET", "/rest/config/defaults/device"),
    ("GET", "/rest/config/defaults/ignores"),
    ("GET", "/rest/config/restart-required"),
    ("GET", "/rest/cluster/pending/devices"),
    ("GET", "/rest/stats/device"),
    ("GET", "/rest/stats/folder"),
    ("GET", "/metrics"),
    ("GET", "/rest/debug/peerCompletion"),
    ("GET", "/rest/debug/support"),
    ("GET", "/rest/debug/cpuprof"),
    ("GET", "/rest/debug/heapprof"),
    ("GET", "/rest/debug/httpmetrics"),
];

/// One bad request and the refusal it must get.
struct Row {
    /// The route as the router names it (`{id}` for a path parameter).
    route: &'static str,
    method: &'static str,
    /// The path and query sent.
    path: String,
    /// The body, sent as `application/json` (even when it is not JSON).
    body: Option<Vec<u8>>,
    status: u16,
    /// What the error message must contain.
    mentions: String,
}

/// A request without a body to a route without path parameters; `query` includes the `?`.
fn q(route: &'static str, method: &'static str, query: &str, status: u16, mentions: &str) -> Row {
    Row {
        route,
        method,
        path: format!("{route}{query}"),
        body: None,
        status,
        mentions: mentions.to_owned(),
    }
}

/// A request with a body to `path` (which the route template `route` matches).
fn b(
    route: &'static str,
    method: &'static str,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    mentions: &str,
) -> Row {
    Row {
        route,
        method,
        path: path.to_owned(),
        body: Some(body.into()),
        status,
        mentions: mentions.to_owned(),
    }
}

/// A request without a body to `path` (which the route template `route` matches).
fn at(route: &'static str, method: &'static str, path: &str, status: u16, mentions: &str) -> Row {
    Row {
        route,
        method,
        path: path.to_owned(),
        body: None,
        status,
        mentions: mentions.to_owned(),
    }
}

/// Sends one request with the API key; returns the status and the body as text, or why
/// there was no answer (a handler that panics drops the connection).
fn send(api: &Api, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String), String> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", api.base))
        .header("X-API-Key", &api.key)
        // A fresh connection each time: some refusals (an oversized body) end the
        // connection, and a pooled one that the server closed would look like a panic.
        .header("Connection", "close");
    let result = match body {
        Some(body) => api.agent.run(
            request
                .header("Content-Type", "application/json")
                .body(body.to_vec())
                .unwrap(),
        ),
        None => api.agent.run(request.body(()).unwrap()),
    };
    let mut response = result.map_err(|e| format!("no answer ({e}); did the handler panic?"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .unwrap_or_default();
    Ok((status, text))
}

/// The router's endpoints: (method, route) for every method a route registers.
fn registered() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = ROUTER_SOURCE;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let end = [".route(", ".route_layer(", ".merge(", ".fallback("]
            .iter()
            .filter_map(|m| rest.find(m))
            .min()
            .unwrap_or(rest.len());
        let segment = &rest[..end];
        let start = segment.find('"').expect("a route names its path") + 1;
        let len = segment[start..].find('"').unwrap();
        let route = &segment[start..start + len];
        for method in ["get", "post", "put", "patch", "delete"] {
            let token = format!("{method}(");
            let found = segment.match_indices(&token).any(|(i, _)| {
                i == 0
                    || !segment[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if found {
                out.push((method.to_uppercase(), route.to_owned()));
            }
        }
    }
    assert!(out.len() > 40, "too few routes found in api.rs: {out:?}");
    out
}

/// Rows: every endpoint, every parameter, every way it can be wrong.
fn rows(device: &Device, me: &str) -> Vec<Row> {
    let known = DeviceId::try_from(&[9u8; 32][..]).unwrap().to_string();
    let unknown = DeviceId::try_from(&[7u8; 32][..]).unwrap().to_string();
    // A valid ID with its first character changed: the check characters no longer match.
    let bad_check = format!(
        "{}{}",
        if unknown.starts_with('A') { 'B' } else { 'A' },
        &unknown[1..]
    );
    let fresh = device.path("fresh");
    let fresh = fresh.to_str().unwrap();
    let dotdot = format!("{}/x/../escaped", device.path("").to_str().unwrap());
    let with_nul = format!("{}/nul\u{0}name", device.path("").to_str().unwrap());
    let long_text = "x".repeat(4000);

    let mut rows = Vec::new();

    // /rest/noauth and /rest/system: no parameters but the ones listed; wrong methods.
    for (route, method) in [
        ("/rest/debug/peerCompletion", "POST"),
        ("/rest/debug/support", "POST"),
        ("/rest/debug/cpuprof", "POST"),
        ("/rest/debug/heapprof", "POST"),
        ("/rest/debug/httpmetrics", "DELETE"),
        ("/rest/debug/file", "POST"),
        ("/rest/noauth/health", "POST"),
        ("/rest/system/status", "DELETE"),
        ("/rest/system/version", "DELETE"),
        ("/rest/system/ping", "DELETE"),
        ("/rest/system/connections", "POST"),
        ("/rest/system/discovery", "DELETE"),
        ("/rest/system/error", "DELETE"),
        ("/rest/system/log", "POST"),
        ("/rest/system/log.txt", "POST"),
        ("/rest/system/debug", "DELETE"),
        ("/rest/system/browse", "POST"),
        ("/rest/svc/report", "POST"),
        ("/rest/db/remoteneed", "POST"),
        ("/rest/db/browse", "POST"),
        ("/rest/db/prio", "GET"),
        ("/rest/system/shutdown", "GET"),
        ("/rest/system/restart", "GET"),
        ("/rest/system/reset", "GET"),
        ("/rest/system/pause", "GET"),
        ("/rest/system/resume", "GET"),
        ("/rest/system/config", "DELETE"),
        ("/rest/config", "POST"),
        ("/rest/config/devices", "DELETE"),
        ("/rest/config/folders", "DELETE"),
        ("/rest/config/options", "DELETE"),
        ("/rest/config/gui", "DELETE"),
        ("/rest/config/defaults/folder", "DELETE"),
        ("/rest/config/defaults/device", "DELETE"),
        ("/rest/config/defaults/ignores", "DELETE"),
        ("/rest/config/restart-required", "POST"),
        ("/rest/stats/device", "POST"),
        ("/rest/stats/folder", "DELETE"),
        ("/rest/db/status", "POST"),
        ("/rest/db/completion", "POST"),
        ("/rest/db/scan", "GET"),
        ("/rest/db/override", "GET"),
        ("/rest/db/revert", "GET"),
        ("/rest/db/file", "POST"),
        ("/rest/db/need", "POST"),
        ("/rest/folder/errors", "POST"),
        ("/rest/folder/versions", "DELETE"),
        ("/rest/db/ignores", "DELETE"),
        ("/rest/db/conflicts", "POST"),
        ("/rest/db/transfers", "POST"),
        ("/rest/events", "POST"),
        ("/rest/events/disk", "POST"),
        ("/rest/cluster/pending/devices", "POST"),
        ("/rest/cluster/pending/folders", "POST"),
        ("/rest/svc/deviceid", "POST"),
        ("/qr/", "POST"),
        ("/metrics", "POST"),
        ("/rest/system/error/clear", "GET"),
        ("/rest/system/upgrade", "DELETE"),
        ("/rest/system/config/insync", "POST"),
        ("/rest/config/insync", "POST"),
        ("/rest/svc/random/string", "POST"),
        ("/rest/svc/lang", "POST"),
    ] {
        rows.push(q(route, method, "", 405, "not allowed"));
    }
    rows.push(at(
        "/rest/config/devices/{id}",
        "POST",
        &format!("/rest/config/devices/{known}"),
        405,
        "not allowed",
    ));
    rows.push(at(
        "/rest/config/folders/{id}",
        "POST",
        "/rest/config/folders/docs",
        405,
        "not allowed",
    ));

    // Pausing and resuming name one device, or all without `device=`.
    for route in ["/rest/system/pause", "/rest/system/resume"] {
        rows.extend([
            q(route, "POST", "?device=NOT-AN-ID", 400, "NOT-AN-ID"),
            q(
                route,
                "POST",
                &format!("?device={bad_check}"),
                400,
                &bad_check,
            ),
            q(route, "POST", "?device=%00", 400, "device ID"),
            q(route, "POST", &format!("?device={unknown}"), 404, &unknown),
        ]);
    }

    // The whole configuration, on both paths.
    for (route, method) in [("/rest/config", "PUT"), ("/rest/system/config", "POST")] {
        let whole =
            |body: &str, status, mentions: &str| b(route, method, route, body, status, mentions);
        rows.extend([
            whole("", 400, "invalid JSON"),
            whole("{", 400, "invalid JSON"),
            whole("{\"folders\": [}", 400, "invalid JSON"),
            whole("[]", 400, "object"),
            whole("\"config\"", 400, "object"),
            whole("42", 400, "object"),
            whole("null", 400, "object"),
            whole(r#"{"devices": {}}"#, 400, "devices"),
            whole(r#"{"devices": "all"}"#, 400, "devices"),
            whole(
                r#"{"devices": [{"deviceID": "NOT-AN-ID"}]}"#,
                400,
                "NOT-AN-ID",
            ),
            whole(r#"{"devices": [{"deviceID": 5}]}"#, 400, "deviceID"),
            whole(r#"{"folders": "docs"}"#, 400, "folders"),
            whole(r#"{"folders": {"id": "docs"}}"#, 400, "folders"),
            whole(
                r#"{"folders": [{"id": "docs", "path": "relative/dir"}]}"#,
                400,
                "absolute",
            ),
            whole(r#"{"folders": [42]}"#, 400, "object"),
            whole(r#"{"options": []}"#, 400, "options"),
            whole(
                r#"{"options": {"listenAddresses": "quic://a:1"}}"#,
                400,
                "listenAddresses",
            ),
            whole(r#"{"defaults": []}"#, 400, "defaults"),
            whole(r#"{"defaults": {"folder": "x"}}"#, 400, "defaults.folder"),
            whole(
                r#"{"defaults": {"folder": {"path": "relative"}}}"#,
                400,
                "absolute",
            ),
            whole(r#"{"gui": []}"#, 400, "gui"),
            whole(r#"{"gui": {"address": 8384}}"#, 400, "address"),
            whole(r#"{"gui": {"apiKey": ["k"]}}"#, 400, "apiKey"),
        ]);
        rows.push(b(
            route,
            method,
            route,
            vec![0xff, 0xfe, b'{'],
            400,
            "invalid JSON",
        ));
    }
    // Larger than any request body the API reads.
    rows.push(b(
        "/rest/config",
        "PUT",
        "/rest/config",
        format!("{{\"x\": \"{}\"}}", "x".repeat(3 << 20)),
        413,
        "limit",
    ));

    // Devices: add (one or many), replace all, and one by ID.
    let devices = |body: String, status, mentions: &str| {
        b(
            "/rest/config/devices",
            "POST",
            "/rest/config/devices",
            body,
            status,
            mentions,
        )
    };
    rows.extend([
        devices("{".into(), 400, "invalid JSON"),
        devices("\"NOT-AN-ID\"".into(), 400, "deviceID"),
        devices("{}".into(), 400, "deviceID"),
        devices(r#"{"deviceID": 5}"#.into(), 400, "deviceID"),
        devices(r#"{"deviceID": ""}"#.into(), 400, "deviceID"),
        devices(r#"{"deviceID": "NOT-AN-ID"}"#.into(), 400, "NOT-AN-ID"),
        devices(format!(r#"{{"deviceID": "{bad_check}"}}"#), 400, &bad_check),
        devices(format!(r#"{{"deviceID": "{me}"}}"#), 400, "own ID"),
        devices(
            format!(r#"{{"deviceID": "{unknown}", "addresses": "dynamic"}}"#),
            400,
            "addresses",
        ),
        devices(
            format!(r#"{{"deviceID": "{unknown}", "addresses": [5]}}"#),
            400,
            "addresses",
        ),
        devices(
            format!(r#"{{"deviceID": "{unknown}", "addresses": ["udp://192.0.2.1:22000"]}}"#),
            400,
            "quic://",
        ),
        devices(
            format!(r#"{{"deviceID": "{unknown}", "name": 5}}"#),
            400,
            "name",
        ),
        // The first is fine, the second is not: neither is added.
        devices(
            format!(r#"[{{"deviceID": "{unknown}"}}, {{"deviceID": "NOT-AN-ID"}}]"#),
            400,
            "NOT-AN-ID",
        ),
    ]);
    let all_devices = |body: String, status, mentions: &str| {
        b(
            "/rest/config/devices",
            "PUT",
            "/rest/config/devices",
            body,
            status,
            mentions,
        )
    };
    rows.extend([
        all_devices("{".into(), 400, "invalid JSON"),
        all_devices("{}".into(), 400, "devices"),
        all_devices("\"all\"".into(), 400, "devices"),
        all_devices("[5]".into(), 400, "deviceID"),
        all_devices(r#"[{"deviceID": "NOT-AN-ID"}]"#.into(), 400, "NOT-AN-ID"),
        all_devices(
            format!(r#"[{{"deviceID": "{known}"}}, {{"deviceID": "{known}"}}]"#),
            400,
            "twice",
        ),
    ]);
    let one = "/rest/config/devices/{id}";
    let known_path = format!("/rest/config/devices/{known}");
    let unknown_path = format!("/rest/config/devices/{unknown}");
    rows.extend([
        at(
            one,
            "GET",
            "/rest/config/devices/NOT-AN-ID",
            400,
            "NOT-AN-ID",
        ),
        at(
            one,
            "GET",
            &format!("/rest/config/devices/{bad_check}"),
            400,
            &bad_check,
        ),
        at(one, "GET", "/rest/config/devices/%00", 400, "device ID"),
        at(one, "GET", "/rest/config/devices/%FF", 400, "id"),
        at(one, "GET", &unknown_path, 404, &unknown),
        b(
            one,
            "PUT",
            "/rest/config/devices/NOT-AN-ID",
            "{}",
            400,
            "NOT-AN-ID",
        ),
        b(one, "PUT", &unknown_path, "{", 400, "invalid JSON"),
        b(one, "PUT", &unknown_path, "[]", 400, "object"),
        b(one, "PUT", &unknown_path, "\"name\"", 400, "object"),
        b(one, "PUT", &unknown_path, "5", 400, "object"),
        // This device's own entry: only its name, which must be text.
        b(
            one,
            "PUT",
            &format!("/rest/config/devices/{me}"),
            r#"{"name": 5}"#,
            400,
            "name",
        ),
        b(
            one,
            "PATCH",
            &format!("/rest/config/devices/{me}"),
            "[]",
            400,
            "object",
        ),
        b(
            one,
            "PUT",
            &known_path,
            r#"{"addresses": "dynamic"}"#,
            400,
            "addresses",
        ),
        b(one, "PUT", &known_path, r#"{"name": ["x"]}"#, 400, "name"),
        b(
            one,
            "PATCH",
            "/rest/config/devices/NOT-AN-ID",
            "{}",
            400,
            "NOT-AN-ID",
        ),
        b(one, "PATCH", &unknown_path, "{}", 404, &unknown),
        b(one, "PATCH", &known_path, "{", 400, "invalid JSON"),
        b(one, "PATCH", &known_path, "[]", 400, "object"),
        b(one, "PATCH", &known_path, r#"{"name": 5}"#, 400, "name"),
        b(one, "PATCH", &known_path, r#"{"paused": 1}"#, 400, "paused"),
        b(
            one,
            "PATCH",
            &known_path,
            r#"{"autoAcceptFolders": "yes"}"#,
            400,
            "autoAcceptFolders",
        ),
        b(
            one,
            "PATCH",
            &known_path,
            r#"{"addresses": ["nope"]}"#,
            400,
            "nope",
        ),
        b(
            one,
            "PATCH",
            &known_path,
            r#"{"addresses": [null]}"#,
            400,
            "addresses",
        ),
        at(
            one,
            "DELETE",
            "/rest/config/devices/NOT-AN-ID",
            400,
            "NOT-AN-ID",
        ),
        at(
            one,
            "DELETE",
            &format!("/rest/config/devices/{bad_check}"),
            400,
            &bad_check,
        ),
        at(one, "DELETE", &unknown_path, 404, &unknown),
    ]);

    // Folders: add (one or many), replace all, and one by ID.
    let folders = |body: String, status, mentions: &str| {
        b(
            "/rest/config/folders",
            "POST",
            "/rest/config/folders",
            body,
            status,
            mentions,
        )
    };
    rows.extend([
        folders("{".into(), 400, "invalid JSON"),
        folders("\"docs\"".into(), 400, "object"),
        folders("{}".into(), 400, "id"),
        folders(r#"{"id": 5}"#.into(), 400, "id"),
        folders(r#"{"id": ""}"#.into(), 400, "folder ID"),
        folders(format!(r#"{{"id": " padded", "path": "{fresh}"}}"#), 400, "spaces"),
        folders(format!(r#"{{"id": "ctl\u0007", "path": "{fresh}"}}"#), 400, "control"),
        folders(format!(r#"{{"id": "{}", "path": "{fresh}"}}"#, "i".repeat(300)), 400, "256"),
        folders(r#"{"id": "new"}"#.into(), 400, "path"),
        folders(r#"{"id": "new", "path": 5}"#.into(), 400, "path"),
        folders(r#"{"id": "new", "path": ["/tmp"]}"#.into(), 400, "path"),
        folders(r#"{"id": "new", "path": ""}"#.into(), 400, "absolute"),
        folders(r#"{"id": "new", "path": "relative/dir"}"#.into(), 400, "absolute"),
        folders(r#"{"id": "new", "path": "../up"}"#.into(), 400, "absolute"),
        folders(format!(r#"{{"id": "new", "path": "{dotdot}"}}"#), 400, ".."),
        folders(
            json!({ "id": "new", "path": with_nul }).to_string(),
            400,
            "new",
        ),
        folders(format!(r#"{{"id": "new", "path": "{fresh}", "type": "bogus"}}"#), 400, "bogus"),
        folders(format!(r#"{{"id": "new", "path": "{fresh}", "type": 5}}"#), 400, "type"),
        folders(format!(r#"{{"id": "new", "path": "{fresh}", "label": 5}}"#), 400, "label"),
        folders(format!(r#"{{"id": "new", "path": "{fresh}", "devices": "all"}}"#), 400, "devices"),
        folders(
            format!(r#"{{"id": "new", "path": "{fresh}", "devices": [{{"deviceID": "NOT-AN-ID"}}]}}"#),
            400,
            "NOT-AN-ID",
        ),
        folders(
            format!(r#"{{"id": "new", "path": "{fresh}", "devices": [{{"deviceID": "{unknown}"}}]}}"#),
            400,
            "not a configured device",
        ),
        folders(
            format!(r#"{{"id": "new", "path": "{fresh}", "rescanIntervalS": -1}}"#),
            400,
            "rescanIntervalS",
        ),
        folders(
            format!(r#"{{"id": "new", "path": "{fresh}", "rescanIntervalS": "60"}}"#),
            400,
            "rescanIntervalS",
        ),
        folders(
            format!(r#"{{"id": "new", "path": "{fresh}", "versioning": {{"type": "external"}}}}"#),
            400,
            "external",
        ),
        folders(
            format!(
                r#"{{"id": "new", "path": "{fresh}", "versioning": {{"type": "simple", "params": {{"keep": "-1"}}}}}}"#
            ),
            400,
            "keep",
        ),
        folders(
            format!(
                r#"{{"id": "new", "path": "{fresh}", "versioning": {{"type": "staggered", "params": {{"versionsPath": "/elsewhere"}}}}}}"#
            ),
            400,
            "versions path",
        ),
        folders(
            format!(r#"{{"id": "new", "path": "{fresh}", "versioning": "trashcan"}}"#),
            400,
            "versioning",
        ),
        folders(
            format!(
                r#"{{"id": "new", "path": "{fresh}", "versioning": {{"type": "trashcan", "params": {{"cleanoutDays": "x"}}}}}}"#
            ),
            400,
            "cleanoutDays",
        ),
        // The first is fine, the second is not: neither is added, no root is made.
        folders(
            format!(r#"[{{"id": "fresh", "path": "{fresh}"}}, {{"id": "bad", "path": "relative"}}]"#),
            400,
            "absolute",
        ),
    ]);
    let all_folders = |body: String, status, mentions: &str| {
        b(
            "/rest/config/folders",
            "PUT",
            "/rest/config/folders",
            body,
            status,
            mentions,
        )
    };
    rows.extend([
        all_folders("{".into(), 400, "invalid JSON"),
        all_folders("{}".into(), 400, "folders"),
        all_folders("\"docs\"".into(), 400, "folders"),
        all_folders("[5]".into(), 400, "object"),
        all_folders(
            r#"[{"id": "docs", "path": "relative"}]"#.into(),
            400,
            "absolute",
        ),
        all_folders(r#"[{"id": "docs"}, {"id": "docs"}]"#.into(), 400, "twice"),
    ]);
    let one = "/rest/config/folders/{id}";
    let docs = "/rest/config/folders/docs";
    rows.extend([
        at(one, "GET", "/rest/config/folders/nope", 404, "nope"),
        at(one, "GET", "/rest/config/folders/nope%00", 404, "nope"),
        at(
            one,
            "GET",
            "/rest/config/folders/..%2F..%2Fetc",
            404,
            "../../etc",
        ),
        at(one, "GET", "/rest/config/folders/%FF", 400, "id"),
        b(one, "PUT", docs, "{", 400, "invalid JSON"),
        b(one, "PUT", docs, "[]", 400, "object"),
        b(one, "PUT", docs, "null", 400, "object"),
        b(one, "PUT", docs, r#"{"type": 5}"#, 400, "type"),
        b(one, "PUT", docs, r#"{"path": "relative"}"#, 400, "absolute"),
        b(one, "PUT", "/rest/config/folders/new", "{}", 400, "path"),
        b(
            one,
            "PUT",
            "/rest/config/folders/new",
            r#"{"path": "relative"}"#,
            400,
            "absolute",
        ),
        b(
            one,
            "PUT",
            "/rest/config/folders/new",
            format!(r#"{{"path": "{dotdot}"}}"#),
            400,
            "..",
        ),
        b(
            one,
            "PUT",
            "/rest/config/folders/%20padded",
            format!(r#"{{"path": "{fresh}"}}"#),
            400,
            "spaces",
        ),
        b(one, "PUT", "/rest/config/folders/%FF", "{}", 400, "id"),
        b(
            one,
            "PATCH",
            "/rest/config/folders/nope",
            r#"{"label": "x"}"#,
            404,
            "nope",
        ),
        b(one, "PATCH", docs, "{", 400, "invalid JSON"),
        b(one, "PATCH", docs, "[]", 400, "object"),
        b(one, "PATCH", docs, "\"docs\"", 400, "object"),
        b(
            one,
            "PATCH",
            docs,
            r#"{"path": "relative"}"#,
            400,
            "absolute",
        ),
        b(
            one,
            "PATCH",
            docs,
            format!(r#"{{"path": "{dotdot}"}}"#),
            400,
            "..",
        ),
        b(
            one,
            "PATCH",
            docs,
            r#"{"rescanIntervalS": "x"}"#,
            400,
            "rescanIntervalS",
        ),
        b(one, "PATCH", docs, r#"{"devices": {}}"#, 400, "devices"),
        b(
            one,
            "PATCH",
            docs,
            format!(r#"{{"devices": [{{"deviceID": "{unknown}"}}]}}"#),
            400,
            "not a configured device",
        ),
        b(
            one,
            "PATCH",
            docs,
            r#"{"versioning": []}"#,
            400,
            "versioning",
        ),
        b(one, "PATCH", docs, r#"{"paused": "yes"}"#, 400, "paused"),
        at(one, "DELETE", "/rest/config/folders/nope", 404, "nope"),
    ]);

    // The default folder (PUT and PATCH alike).
    for method in ["PUT", "PATCH"] {
        let route = "/rest/config/defaults/folder";
        rows.extend([
            b(route, method, route, "{", 400, "invalid JSON"),
            b(route, method, route, "[]", 400, "object"),
            b(route, method, route, "\"/tmp\"", 400, "object"),
            b(route, method, route, r#"{"path": 5}"#, 400, "path"),
            b(
                route,
                method,
                route,
                r#"{"maxConflicts": "x"}"#,
                400,
                "maxConflicts",
            ),
            b(
                route,
                method,
                route,
                r#"{"order": "sideways"}"#,
                400,
                "sideways",
            ),
        ]);
    }

    // The default device and the GUI settings (PUT and PATCH alike): wrong types, and
    // settings peerfold does not act on, are refused, not dropped.
    for method in ["PUT", "PATCH"] {
        let route = "/rest/config/defaults/device";
        rows.extend([
            b(route, method, route, "{", 400, "invalid JSON"),
            b(route, method, route, "[]", 400, "object"),
            b(
                route,
                method,
                route,
                r#"{"introducer": 1}"#,
                400,
                "introducer",
            ),
            b(
                route,
                method,
                route,
                r#"{"untrusted": true}"#,
                400,
                "untrusted",
            ),
        ]);
        let route = "/rest/config/gui";
        rows.extend([
            b(route, method, route, "{", 400, "invalid JSON"),
            b(route, method, route, "[]", 400, "object"),
            b(route, method, route, r#"{"address": 5}"#, 400, "address"),
            b(route, method, route, r#"{"useTLS": true}"#, 400, "useTLS"),
            // A bcrypt hash from a Syncthing configuration cannot be checked by peerfold.
            b(
                route,
                method,
                route,
                r#"{"password": "$2a$10$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQ"}"#,
                400,
                "bcrypt",
            ),
        ]);
    }
    let route = "/rest/config/defaults/ignores";
    rows.extend([
        b(route, "PUT", route, "{", 400, "invalid JSON"),
        b(
            route,
            "PUT",
            route,
            r#"{"lines": [5]}"#,
            400,
            "ignore pattern",
        ),
        b(
            route,
            "PUT",
            route,
            r#"{"lines": ["a\nb"]}"#,
            400,
            "one line",
        ),
        b(route, "PUT", route, r#"{"patterns": []}"#, 400, "lines"),
    ]);

    // Options (PUT and PATCH alike).
    for method in ["PUT", "PATCH"] {
        let options = |body: &str, status, mentions: &str| {
            b(
                "/rest/config/options",
                method,
                "/rest/config/options",
                body,
                status,
                mentions,
            )
        };
        rows.extend([
            options("{", 400, "invalid JSON"),
            options("[]", 400, "options"),
            options("\"x\"", 400, "options"),
            options(
                r#"{"listenAddresses": "quic://0.0.0.0:22000"}"#,
                400,
                "listenAddresses",
            ),
            options(r#"{"listenAddresses": [5]}"#, 400, "listenAddresses"),
            options(
                r#"{"listenAddresses": ["tcp://0.0.0.0:22000"]}"#,
                400,
                "quic://",
            ),
            options(
                r#"{"reconnectionIntervalS": 86401}"#,
                400,
                "reconnectionIntervalS",
            ),
            options(
                r#"{"reconnectionIntervalS": -1}"#,
                400,
                "reconnectionIntervalS",
            ),
            options(
                r#"{"reconnectionIntervalS": "60"}"#,
                400,
                "reconnectionIntervalS",
            ),
            options(
                r#"{"globalAnnounceEnabled": "yes"}"#,
                400,
                "globalAnnounceEnabled",
            ),
            options(r#"{"maxSendKbps": "fast"}"#, 400, "maxSendKbps"),
            options(r#"{"natEnabled": true}"#, 400, "natEnabled"),
        ]);
    }

    // Folder state and actions: `folder=` missing, empty, unknown.
    for (route, method) in [
        ("/rest/db/status", "GET"),
        ("/rest/db/completion", "GET"),
        ("/rest/db/scan", "POST"),
        ("/rest/db/override", "POST"),
        ("/rest/db/revert", "POST"),
        ("/rest/db/file", "GET"),
        ("/rest/debug/file", "GET"),
        ("/rest/db/need", "GET"),
        ("/rest/db/remoteneed", "GET"),
        ("/rest/db/browse", "GET"),
        ("/rest/db/prio", "POST"),
        ("/rest/folder/errors", "GET"),
        ("/rest/folder/versions", "GET"),
        ("/rest/db/ignores", "GET"),
        ("/rest/db/conflicts", "GET"),
        ("/rest/folder/versions", "POST"),
        ("/rest/db/conflicts/resolve", "POST"),
        ("/rest/db/transfers", "GET"),
    ] {
        let file = if route.ends_with("/file") {
            "&file=a"
        } else {
            ""
        };
        // Without `folder`, a scan covers every folder (Syncthing's rule), and the
        // transfers list all folders': no refusal.
        if route != "/rest/db/scan" && route != "/rest/db/transfers" {
            rows.push(q(route, method, &format!("?x=1{file}"), 400, "\"folder\""));
        }
        rows.extend([
            q(route, method, &format!("?folder={file}"), 400, "\"folder\""),
            q(route, method, &format!("?folder=nope{file}"), 404, "nope"),
            q(
                route,
                method,
                &format!("?folder=nope%00{file}"),
                404,
                "nope",
            ),
        ]);
    }
    // Restoring versions and resolving conflicts: bodies that say nothing usable, names
    // that are no conflict copy, that are missing, or that leave the folder.
    let versions = "/rest/folder/versions?folder=docs";
    let resolve = "/rest/db/conflicts/resolve?folder=docs";
    let copy = "a.sync-conflict-20261206-101500-ABCDEFG.txt";
    rows.extend([
        b(
            "/rest/folder/versions",
            "POST",
            versions,
            "{",
            400,
            "invalid JSON",
        ),
        b(
            "/rest/folder/versions",
            "POST",
            versions,
            "[1]",
            400,
            "VERSION_TIME",
        ),
        b(
            "/rest/db/conflicts/resolve",
            "POST",
            resolve,
            "{",
            400,
            "invalid JSON",
        ),
        b(
            "/rest/db/conflicts/resolve",
            "POST",
            resolve,
            "{}",
            400,
            "keep",
        ),
        b(
            "/rest/db/conflicts/resolve",
            "POST",
            resolve,
            format!(r#"{{"conflict": "{copy}", "keep": "mine"}}"#),
            400,
            "keep",
        ),
        b(
            "/rest/db/conflicts/resolve",
            "POST",
            resolve,
            r#"{"conflict": "a.txt", "keep": "both"}"#,
            400,
            "not a conflict copy",
        ),
        b(
            "/rest/db/conflicts/resolve",
            "POST",
            resolve,
            format!(r#"{{"conflict": "{copy}", "keep": "original"}}"#),
            400,
            "not in the folder",
        ),
        b(
            "/rest/db/conflicts/resolve",
            "POST",
            resolve,
            format!(r#"{{"conflict": "../{copy}", "keep": "conflict"}}"#),
            400,
            "..",
        ),
        q(
            "/rest/db/conflicts/resolve",
            "GET",
            "?folder=docs",
            405,
            "not allowed",
        ),
        // The GUI's login: wrong methods, bodies that are no login, and no user configured.
        q("/rest/noauth/auth/password", "GET", "", 405, "not allowed"),
        q("/rest/noauth/auth/logout", "GET", "", 405, "not allowed"),
        b(
            "/rest/noauth/auth/password",
            "POST",
            "/rest/noauth/auth/password",
            "{",
            400,
            "invalid JSON",
        ),
        b(
            "/rest/noauth/auth/password",
            "POST",
            "/rest/noauth/auth/password",
            r#"{"username": "admin"}"#,
            400,
            "password",
        ),
        b(
            "/rest/noauth/auth/password",
            "POST",
            "/rest/noauth/auth/password",
            r#"{"username": "admin", "password": "x"}"#,
            400,
            "no GUI user is configured",
        ),
    ]);
    rows.extend([
        q(
            "/rest/db/completion",
            "GET",
            "?folder=docs&device=NOT-AN-ID",
            400,
            "NOT-AN-ID",
        ),
        q(
            "/rest/db/completion",
            "GET",
            &format!("?folder=docs&device={bad_check}"),
            400,
            &bad_check,
        ),
        q(
            "/rest/db/completion",
            "GET",
            "?folder=docs&device=%00",
            400,
            "device ID",
        ),
        q(
            "/rest/db/scan",
            "POST",
            "?folder=docs&sub=../../etc/passwd",
            400,
            "../../etc/passwd",
        ),
        q(
            "/rest/db/scan",
            "POST",
            "?folder=docs&sub=/etc",
            400,
            "/etc",
        ),
        q(
            "/rest/db/scan",
            "POST",
            "?folder=docs&sub=a%00b",
            400,
            "sub",
        ),
        q(
            "/rest/db/scan",
            "POST",
            "?folder=docs&sub=a/../../b",
            400,
            "a/../../b",
        ),
        q("/rest/db/file", "GET", "?folder=docs", 400, "\"file\""),
        q("/rest/debug/file", "GET", "?folder=docs", 400, "\"file\""),
        q(
            "/rest/debug/file",
            "GET",
            "?folder=docs&file=../../etc/passwd",
            404,
            "../../etc/passwd",
        ),
        q(
            "/rest/db/file",
            "GET",
            "?folder=docs&file=",
            400,
            "\"file\"",
        ),
        q(
            "/rest/db/file",
            "GET",
            "?folder=docs&file=../../etc/passwd",
            404,
            "../../etc/passwd",
        ),
        q(
            "/rest/db/file",
            "GET",
            "?folder=docs&file=/etc/passwd",
            404,
            "/etc/passwd",
        ),
        q(
            "/rest/db/file",
            "GET",
            "?folder=docs&file=a%00b",
            404,
            "a\\0b",
        ),
    ]);
    for route in ["/rest/db/need", "/rest/folder/errors"] {
        rows.extend([
            q(route, "GET", "?folder=docs&page=x", 400, "\"page\""),
            q(route, "GET", "?folder=docs&page=-1", 400, "\"page\""),
            q(route, "GET", "?folder=docs&page=1.5", 400, "\"page\""),
            q(route, "GET", "?folder=docs&perpage=x", 400, "\"perpage\""),
            q(route, "GET", "?folder=docs&perpage=-1", 400, "\"perpage\""),
            q(
                route,
                "GET",
                "?folder=docs&page=99999999999999999999",
                400,
                "\"page\"",
            ),
            // page × perpage past the largest number.
            q(
                route,
                "GET",
                "?folder=docs&page=3&perpage=18446744073709551615",
                400,
                "page",
            ),
        ]);
    }

    // Ignore patterns: the folder, then the body.
    let ignores = |query: &str, body: Vec<u8>, status, mentions: &str| {
        b(
            "/rest/db/ignores",
            "POST",
            &format!("/rest/db/ignores{query}"),
            body,
            status,
            mentions,
        )
    };
    let patterns = br#"{"ignore": ["*.tmp"]}"#.to_vec();
    rows.extend([
        ignores("", patterns.clone(), 400, "\"folder\""),
        ignores("?folder=", patterns.clone(), 400, "\"folder\""),
        ignores("?folder=nope", patterns, 404, "nope"),
        ignores("?folder=docs", b"{".to_vec(), 400, "invalid JSON"),
        ignores("?folder=docs", b"".to_vec(), 400, "invalid JSON"),
        ignores("?folder=docs", b"[]".to_vec(), 400, "ignore"),
        ignores("?folder=docs", b"{}".to_vec(), 400, "ignore"),
        ignores(
            "?folder=docs",
            br#"{"ignore": "*.tmp"}"#.to_vec(),
            400,
            "ignore",
        ),
        ignores(
            "?folder=docs",
            br#"{"ignore": [5]}"#.to_vec(),
            400,
            "strings",
        ),
        ignores(
            "?folder=docs",
            br#"{"ignore": ["a\nb"]}"#.to_vec(),
            400,
            "one line",
        ),
        ignores(
            "?folder=docs",
            br#"{"ignore": ["a\u0000b"]}"#.to_vec(),
            400,
            "one line",
        ),
        ignores(
            "?folder=docs",
            format!(r#"{{"ignore": ["{}"]}}"#, "x".repeat(3 << 19)).into_bytes(),
            400,
            "1 MiB",
        ),
    ]);

    // Events: numbers, and the longest wait.
    for (query, mentions) in [
        ("?since=abc", "\"since\""),
        ("?since=-1", "\"since\""),
        ("?since=1e3", "\"since\""),
        ("?limit=x", "\"limit\""),
        ("?limit=-1", "\"limit\""),
        ("?timeout=abc", "\"timeout\""),
        ("?timeout=-1", "\"timeout\""),
        ("?timeout=3601", "timeout"),
        ("?timeout=99999999999999999999", "\"timeout\""),
    ] {
        for route in ["/rest/events", "/rest/events/disk"] {
            rows.push(q(route, "GET", query, 400, mentions));
        }
    }

    // Pending devices and folders, device IDs, QR codes.
    rows.extend([
        q(
            "/rest/cluster/pending/devices",
            "DELETE",
            "",
            400,
            "\"device\"",
        ),
        q(
            "/rest/cluster/pending/devices",
            "DELETE",
            "?device=",
            400,
            "\"device\"",
        ),
        q(
            "/rest/cluster/pending/devices",
            "DELETE",
            "?device=NOT-AN-ID",
            400,
            "NOT-AN-ID",
        ),
        q(
            "/rest/cluster/pending/devices",
            "DELETE",
            &format!("?device={bad_check}"),
            400,
            &bad_check,
        ),
        q(
            "/rest/cluster/pending/folders",
            "GET",
            "?device=NOT-AN-ID",
            400,
            "NOT-AN-ID",
        ),
        q(
            "/rest/cluster/pending/folders",
            "GET",
            "?device=%00",
            400,
            "device ID",
        ),
        q(
            "/rest/cluster/pending/folders",
            "DELETE",
            "",
            400,
            "\"folder\"",
        ),
        q(
            "/rest/cluster/pending/folders",
            "DELETE",
            "?folder=",
            400,
            "\"folder\"",
        ),
        q(
            "/rest/cluster/pending/folders",
            "DELETE",
            "?folder=x&device=NOT-AN-ID",
            400,
            "NOT-AN-ID",
        ),
        q("/rest/svc/random/string", "GET", "?length=0", 400, "length"),
        q(
            "/rest/svc/random/string",
            "GET",
            "?length=1025",
            400,
            "length",
        ),
        q(
            "/rest/svc/random/string",
            "GET",
            "?length=ten",
            400,
            "length",
        ),
        b(
            "/rest/system/error",
            "POST",
            "/rest/system/error",
            "",
            400,
            "body",
        ),
        q("/rest/system/log", "GET", "?since=yesterday", 400, "since"),
        q("/rest/system/reset", "POST", "?folder=nope", 404, "nope"),
        q(
            "/rest/db/remoteneed",
            "GET",
            "?folder=docs",
            400,
            "\"device\"",
        ),
        q(
            "/rest/db/remoteneed",
            "GET",
            "?folder=docs&device=nope",
            400,
            "nope",
        ),
        q(
            "/rest/db/remoteneed",
            "GET",
            &format!("?folder=docs&device={unknown}"),
            404,
            "not shared",
        ),
        q(
            "/rest/db/browse",
            "GET",
            "?folder=docs&levels=deep",
            400,
            "levels",
        ),
        q("/rest/db/prio", "POST", "?folder=docs", 400, "\"file\""),
        q(
            "/rest/system/log.txt",
            "GET",
            "?since=2024-13-45",
            400,
            "since",
        ),
        q("/rest/system/debug", "POST", "?enable=nope", 400, "nope"),
        q(
            "/rest/system/debug",
            "POST",
            "?disable=model,nope",
            400,
            "nope",
        ),
        q("/rest/svc/deviceid", "GET", "", 400, "\"id\""),
        q("/rest/svc/deviceid", "GET", "?id=", 400, "\"id\""),
        q("/qr/", "GET", "", 400, "\"text\""),
        q("/qr/", "GET", "?text=", 400, "\"text\""),
        q("/qr/", "GET", &format!("?text={long_text}"), 400, "QR code"),
    ]);
    rows
}

#[test]
fn bad_input_to_every_endpoint_is_refused_and_changes_nothing() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    let running = device.serve();
    let api = Api::of(&device, &running);
    let me = device.id();
    // A configured device, for the rows that edit one.
    let known = DeviceId::try_from(&[9u8; 32][..]).unwrap().to_string();
    api.ok_json(
        "POST",
        "/rest/config/devices",
        json!({ "deviceID": known, "name": "known", "addresses": ["dynamic"] }),
    );
    // The debug endpoints answer only with `debugging` on: their own checks are tested here.
    api.ok_json("PATCH", "/rest/config/gui", json!({ "debugging": true }));
    let before = api.get("/rest/config");

    let rows = rows(&device, &me);

    // Every endpoint has rows, and every method that takes input has its own.
    let registered = registered();
    for (method, route) in &registered {
        assert!(
            rows.iter().any(|r| r.route == route),
            "no bad-input row for {route}"
        );
        let takes_input = !NO_INPUT.contains(&(method.as_str(), route.as_str()));
        assert!(
            !takes_input || rows.iter().any(|r| r.route == route && r.method == method),
            "no bad-input row for {method} {route} (or list it in NO_INPUT)"
        );
    }
    for (method, route) in NO_INPUT {
        assert!(
            registered.iter().any(|(m, r)| m == method && r == route),
            "NO_INPUT lists {method} {route}, which the router does not have"
        );
    }
    for row in &rows {
        assert!(
            registered.iter().any(|(_, r)| r == row.route),
            "a row names {}, which the router does not have",
            row.route
        );
    }

    let mut failures = Vec::new();
    for row in &rows {
        let answer = send(&api, row.method, &row.path, row.body.as_deref());
        let shown = format!(
            "{} {}{}",
            row.method,
            row.path.chars().take(120).collect::<String>(),
            row.body
                .as_deref()
                .map(|b| format!(" {}", String::from_utf8_lossy(&b[..b.len().min(120)])))
                .unwrap_or_default()
        );
        let (status, text) = match answer {
            Ok(answer) => answer,
            // A body over the limit is refused while the client may still be sending it:
            // the connection then ends under the client (a broken pipe or a reset) before
            // it reads the 413. That is the refusal too; a handler that panicked instead
            // would show in the log, checked below.
            Err(e) if row.status == 413 && (e.contains("Broken pipe") || e.contains("reset")) => {
                continue;
            }
            Err(e) => {
                failures.push(format!("{shown}\n    {e}"));
                continue;
            }
        };
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_object()?.get("error")?.as_str().map(str::to_owned));
        let problem = match error {
            _ if status != row.status => Some(format!("status {status}, not {}", row.status)),
            None => Some("the body is not {\"error\": \"...\"}".to_owned()),
            Some(e) if e.is_empty() || !e.contains(&row.mentions) => {
                Some(format!("the error does not mention {:?}", row.mentions))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            let text: String = text.chars().take(300).collect();
            failures.push(format!("{shown}\n    {problem}: {text}"));
        }
    }
    // Syncthing's ID check answers a malformed ID with 200 and {"error": ...}: the endpoint
    // exists to check IDs, and Syncthing's GUI reads the answer that way.
    let (status, text) = send(&api, "GET", "/rest/svc/deviceid?id=NOT-AN-ID", None).unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{text}"
    );

    // Still serving, and nothing changed: the configuration, the disk, the log.
    let mut after = Vec::new();
    assert_eq!(api.get("/rest/system/ping")["ping"], "pong");
    let now = api.get("/rest/config");
    if now != before {
        after.push(format!(
            "the configuration changed:\n  before {before}\n  after  {now}"
        ));
    }
    if api.get("/rest/config/restart-required")["requiresRestart"] != false {
        after.push("a restart is now required".to_owned());
    }
    for made in [
        device.path("fresh"),
        device.path("escaped"),
        device.path("x"),
    ] {
        if made.exists() {
            after.push(format!("{} was created", made.display()));
        }
    }
    if root.join(".peerfoldignore").exists() {
        after.push("ignore patterns were written".to_owned());
    }
    let log = device.log();
    if log.contains("panicked") {
        after.push(format!("the daemon panicked:\n{log}"));
    }
    assert!(
        failures.is_empty() && after.is_empty(),
        "{} of {} rows failed:\n{}\nafterwards:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n"),
        after.join("\n")
    );
    eprintln!(
        "{} bad requests to {} endpoints ({} route and method pairs), all refused",
        rows.len(),
        registered
            .iter()
            .map(|(_, r)| r)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        registered.len()
    );
}

/// Every endpoint the router registers (read from api.rs), with every method: no key or a
/// wrong key gets 401, a foreign `Host` gets 403, and neither reaches the handler (the
/// daemon still runs and its configuration is unchanged, though the list includes
/// shutdown, restart and deletions).
#[test]
fn every_endpoint_but_health_needs_the_key_and_a_local_host() {
    let device = Device::init();
    device.add_folder("docs", "docs");
    let running = device.serve();
    let api = Api::of(&device, &running);
    let before = api.get("/rest/config");
    let me = device.id();
    let mut checked = 0;
    for (method, route) in registered() {
        let path = route.replace(
            "{id}",
            if route.contains("devices") {
                &me
            } else {
                "docs"
            },
        );
        // A fresh connection each time (see `send`).
        let close = ("Connection", "close");
        let cases: [(&[(&str, &str)], u16); 4] = [
            (&[close], 401),
            (&[close, ("X-API-Key", "wrong")], 401),
            (&[close, ("Authorization", "Bearer wrong")], 401),
            (
                &[
                    close,
                    ("X-API-Key", api.key.as_str()),
                    ("Host", "evil.example"),
                ],
                403,
            ),
        ];
        for (headers, expected) in cases {
            let (status, body) = api.send(&method, &path, headers);
            // `/rest/noauth/` needs no key (health answers, login and logout judge the
            // body and cookies themselves: tests/it/gui_auth.rs); the Host check stays.
            if route.starts_with("/rest/noauth/auth/") && expected == 401 {
                continue;
            }
            let expected = if route == "/rest/noauth/health" && expected == 401 {
                200
            } else {
                expected
            };
            assert_eq!(status, expected, "{method} {path} {headers:?}: {body}");
            if status != 200 {
                let error: Value = serde_json::from_str(&body).unwrap();
                assert!(error["error"].is_string(), "{method} {path}: {body}");
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} requests");
    assert_eq!(api.get("/rest/system/ping")["ping"], "pong");
    assert_eq!(api.get("/rest/config"), before);
}
