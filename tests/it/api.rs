//! The REST API over real HTTP against real daemons: auth, the Host check, Syncthing's
//! shapes and field names, bad input, long polls, and Syncthing's own `syncthing cli`.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Device, Running, knock_on, wait_until};
use crate::sync::connect_devices;

/// A client for one daemon's API.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) key: String,
    pub(crate) agent: ureq::Agent,
}

impl Api {
    pub(crate) fn of(device: &Device, running: &Running) -> Self {
        Self::at(device, &format!("http://127.0.0.1:{}", running.api_port))
    }

    /// The API of `device`'s daemon at `base` (`http://HOST:PORT`).
    pub(crate) fn at(device: &Device, base: &str) -> Self {
        Self::with_key(base, device.ok(["api-key"]).trim())
    }

    /// Any Syncthing-style API at `base` with `key` (Syncthing's own, too).
    pub(crate) fn with_key(base: &str, key: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: base.to_owned(),
            key: key.to_owned(),
            agent,
        }
    }

    /// Sends a request with the key (unless `key` says otherwise); returns status and body.
    pub(crate) fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = self
            .agent
            .run(request.body(()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, body)
    }

    /// Sends JSON with the key; returns status and the JSON answer.
    pub(crate) fn send_json(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("X-API-Key", &self.key)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .unwrap();
        let mut response = self
            .agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} ({status}): {e}: {text:?}"));
        (status, json)
    }

    /// A JSON request that must succeed.
    pub(crate) fn ok_json(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, json) = self.send_json(method, path, &body);
        assert_eq!(status, 200, "{method} {path} {body}: {json}");
        json
    }

    pub(crate) fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, body) = self.send(method, path, &[("X-API-Key", &self.key)]);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path} ({status}): {e}: {body:?}"));
        (status, json)
    }

    /// A GET that must succeed.
    pub(crate) fn get(&self, path: &str) -> Value {
        let (status, json) = self.call("GET", path);
        assert_eq!(status, 200, "GET {path}: {json}");
        json
    }

    /// Runs Debian's `syncthing cli ARGS` against this API, with `home` as its HOME.
    pub(crate) fn syncthing_cli(
        &self,
        home: &std::path::Path,
        args: &[&str],
    ) -> std::process::Output {
        fs::create_dir_all(home).unwrap();
        Command::new("syncthing")
            .arg("cli")
            .arg(format!(
                "--gui-address={}",
                self.base.trim_start_matches("http://")
            ))
            .arg(format!("--gui-apikey={}", self.key))
            .args(args)
            .env("HOME", home)
            .output()
            .expect("syncthing (apt-get install syncthing)")
    }

    /// [`Self::syncthing_cli`], which must succeed; what it printed.
    pub(crate) fn syncthing_cli_ok(&self, home: &std::path::Path, args: &[&str]) -> String {
        let output = self.syncthing_cli(home, args);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "syncthing cli {args:?}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }

    /// A request that must fail with `status` and name the problem.
    /// A JSON request that must be refused with 400 and an error that `mentions`.
    pub(crate) fn refused_json(&self, method: &str, path: &str, body: Value, mentions: &str) {
        let (status, json) = self.send_json(method, path, &body);
        assert_eq!(status, 400, "{method} {path} {body}: {json}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(mentions), "{method} {path}: {error:?}");
    }

    pub(crate) fn refused(&self, method: &str, path: &str, status: u16, mentions: &str) {
        let (got, json) = self.call(method, path);
        assert_eq!(got, status, "{method} {path}: {json}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(mentions), "{method} {path}: {error:?}");
    }
}

#[test]
fn the_key_and_the_host_header_guard_every_endpoint_but_health() {
    let device = Device::init();
    device.add_folder("docs", "docs");
    let running = device.serve();
    let api = Api::of(&device, &running);

    let (status, body) = api.send("GET", "/rest/noauth/health", &[]);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"OK"}"#));
    for (headers, expected) in [
        (vec![], 401),
        (vec![("X-API-Key", "wrong")], 401),
        (vec![("Authorization", "Bearer wrong")], 401),
        (vec![("X-API-Key", api.key.as_str())], 200),
        (
            vec![("Authorization", &*format!("Bearer {}", api.key))],
            200,
        ),
    ] {
        let (status, body) = api.send("GET", "/rest/system/status", &headers);
        assert_eq!(status, expected, "{headers:?}: {body}");
        if status == 401 {
            assert!(body.contains("API key"), "{body}");
        }
    }
    // DNS rebinding: a page on evil.example that resolves to 127.0.0.1 is refused.
    for host in ["evil.example", "evil.example:8385", "127.0.0.2.nip.io"] {
        let (status, body) = api.send(
            "GET",
            "/rest/system/ping",
            &[("X-API-Key", &api.key), ("Host", host)],
        );
        assert_eq!(status, 403, "{host}: {body}");
    }
    for host in ["localhost", "127.0.0.1:1", "[::1]:8385"] {
        let (status, _) = api.send(
            "GET",
            "/rest/system/ping",
            &[("X-API-Key", &api.key), ("Host", host)],
        );
        assert_eq!(status, 200, "{host}");
    }
    let (status, body) = api.send("GET", "/rest/no/such", &[("X-API-Key", &api.key)]);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn syncthing_shapes_with_two_synced_devices() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    fs::create_dir(root_a.join("sub")).unwrap();
    fs::write(root_a.join("sub/hello.txt"), b"hello").unwrap();
    let [running_a, running_b] = connect_devices(&a, &b);
    let (api_a, api_b) = (Api::of(&a, &running_a), Api::of(&b, &running_b));
    let (id_a, id_b) = (a.id(), b.id());
    wait_until("b has the file", 30, || {
        root_b.join("sub/hello.txt").exists()
    });

    let status = api_a.get("/rest/system/status");
    assert_eq!(status["myID"], id_a.as_str());
    assert!(status["uptime"].as_i64().is_some());
    assert!(status["startTime"].as_str().unwrap().contains('T'));
    assert!(
        status["connectionServiceStatus"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("quic://127.0.0.1:"))
    );
    let version = api_a.get("/rest/system/version");
    assert!(version["version"].as_str().unwrap().starts_with('v'));
    assert_eq!(version["os"], "linux");
    assert_eq!(api_a.get("/rest/system/ping")["ping"], "pong");
    assert_eq!(api_a.call("POST", "/rest/system/ping").1["ping"], "pong");

    let connections = api_a.get("/rest/system/connections");
    let to_b = &connections["connections"][&id_b];
    assert_eq!(to_b["connected"], true, "{connections}");
    assert!(
        ["quic-client", "quic-server"].contains(&to_b["type"].as_str().unwrap()),
        "{to_b}"
    );
    assert!(to_b["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(to_b["inBytesTotal"].as_u64().unwrap() > 0);
    assert!(connections["total"]["outBytesTotal"].as_u64().unwrap() > 0);

    // Configuration in Syncthing's shape; the device lists itself too.
    let config = api_a.get("/rest/config");
    assert_eq!(config, api_a.get("/rest/system/config"));
    assert!(config["version"].as_u64().unwrap() >= 35);
    assert_eq!(config["folders"][0]["id"], "docs");
    assert_eq!(config["folders"][0]["type"], "sendreceive");
    let device_ids: Vec<&str> = config["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceID"].as_str().unwrap())
        .collect();
    assert!(device_ids.contains(&id_a.as_str()) && device_ids.contains(&id_b.as_str()));
    assert_eq!(config["gui"]["apiKey"], api_a.key.as_str());
    assert!(config["options"]["listenAddresses"].is_array());
    assert_eq!(api_a.get("/rest/config/folders/docs")["id"], "docs");
    assert_eq!(
        api_a.get(&format!("/rest/config/devices/{id_b}"))["deviceID"],
        id_b.as_str()
    );
    assert_eq!(
        api_a.get("/rest/config/folders").as_array().unwrap().len(),
        1
    );
    assert!(api_a.get("/rest/config/options")["globalAnnounceServers"].is_array());
    assert_eq!(
        api_a.get("/rest/config/restart-required")["requiresRestart"],
        false
    );
    api_a.refused("GET", "/rest/config/folders/nope", 404, "nope");
    api_a.refused("GET", "/rest/config/devices/NOT-AN-ID", 400, "NOT-AN-ID");

    // Folder state and completion, from both sides.
    wait_until("both sides in sync", 30, || {
        api_b.get("/rest/db/status?folder=docs")["needTotalItems"] == 0
            && api_a.get(&format!("/rest/db/completion?folder=docs&device={id_b}"))["completion"]
                == 100.0
    });
    let db = api_b.get("/rest/db/status?folder=docs");
    assert_eq!(db["globalFiles"], 1, "{db}");
    assert_eq!(db["globalDirectories"], 1, "{db}");
    assert_eq!(db["localBytes"], 5, "{db}");
    assert_eq!(db["state"], "idle");
    let completion = api_a.get(&format!("/rest/db/completion?folder=docs&device={id_b}"));
    assert_eq!(completion["remoteState"], "valid");
    assert_eq!(completion["globalItems"], 2);
    api_a.refused("GET", "/rest/db/status", 400, "folder");
    api_a.refused("GET", "/rest/db/status?folder=nope", 404, "nope");
    api_a.refused(
        "GET",
        "/rest/db/completion?folder=docs&device=xyz",
        400,
        "xyz",
    );

    let file = api_b.get("/rest/db/file?folder=docs&file=sub/hello.txt");
    assert_eq!(file["local"]["size"], 5);
    assert_eq!(file["global"]["name"], "sub/hello.txt");
    assert_eq!(file["availability"][0]["id"], id_a.as_str());
    api_b.refused(
        "GET",
        "/rest/db/file?folder=docs&file=missing",
        404,
        "missing",
    );
    api_b.refused("GET", "/rest/db/file?folder=docs", 400, "file");

    // A scan that finds a change; the change shows up as b's need, in pages.
    let (_, since) = {
        let events = api_b.get("/rest/events?since=0&timeout=0");
        (
            events.clone(),
            events.as_array().unwrap().last().unwrap()["id"]
                .as_u64()
                .unwrap(),
        )
    };
    for i in 0..3 {
        fs::write(root_a.join(format!("new{i}.txt")), b"new").unwrap();
    }
    let scanned = api_a.call("POST", "/rest/db/scan?folder=docs");
    assert_eq!(scanned.0, 200, "{}", scanned.1);
    api_a.refused("POST", "/rest/db/scan?folder=nope", 404, "nope");
    api_a.refused("GET", "/rest/db/need?folder=docs&page=x", 400, "page");
    let page = api_a.get("/rest/db/need?folder=docs&page=1&perpage=2");
    assert_eq!(page["perpage"], 2);
    assert!(page["rest"].is_array());

    // Long poll: waits for b's index update, returns only the asked-for kind.
    let started = Instant::now();
    let events = api_b.get(&format!(
        "/rest/events?since={since}&timeout=20&events=RemoteIndexUpdated"
    ));
    assert!(started.elapsed() < Duration::from_secs(20));
    let events = events.as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["type"] == "RemoteIndexUpdated"
        && e["id"].as_u64().unwrap() > since
        && e["data"]["device"] == id_a.as_str()));
    // Nothing new: the poll times out empty, after the timeout.
    let last = api_b.get("/rest/events?since=0&timeout=0");
    let last_id = last.as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let empty = api_b.get(&format!(
        "/rest/events?since={}&timeout=1&events=NoSuchEvent",
        last_id
    ));
    assert_eq!(empty, Value::Array(vec![]));
    assert!(started.elapsed() >= Duration::from_millis(900));
    api_b.refused("GET", "/rest/events?since=abc", 400, "since");
    let limited = api_b.get("/rest/events?since=0&limit=2&timeout=0");
    assert_eq!(limited.as_array().unwrap().len(), 2);
    // The newest two.
    let ids: Vec<u64> = limited
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert!(ids[1] >= last_id && ids[0] + 1 == ids[1], "{ids:?}");

    assert!(api_a.get("/rest/folder/errors?folder=docs")["errors"].is_array());

    // Device IDs: normalised, or an error naming the problem.
    let lower = id_b.to_lowercase().replace('-', "");
    assert_eq!(
        api_a.get(&format!("/rest/svc/deviceid?id={lower}"))["id"],
        id_b.as_str()
    );
    assert!(api_a.get("/rest/svc/deviceid?id=ABC")["error"].is_string());
    api_a.refused("GET", "/rest/svc/deviceid", 400, "id");

    // Prometheus text.
    let (status, metrics) = api_a.send("GET", "/metrics", &[("X-API-Key", &api_a.key)]);
    assert_eq!(status, 200);
    assert!(metrics.contains("peerfold_connections 1"), "{metrics}");
    assert!(metrics.contains("peerfold_folder_files{folder=\"docs\",scope=\"global\"}"));
    // Scan and pull durations: a scanned, b pulled.
    let count = |text: &str, metric: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{metric}{{folder=\"docs\"}} ")))
            .unwrap_or_else(|| panic!("no {metric}: {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(count(&metrics, "peerfold_folder_scan_seconds_count") >= 1);
    assert!(metrics.contains("# TYPE peerfold_folder_scan_seconds summary"));
    let (_, metrics_b) = api_b.send("GET", "/metrics", &[("X-API-Key", &api_b.key)]);
    assert!(
        count(&metrics_b, "peerfold_folder_pull_seconds_count") >= 1,
        "{metrics_b}"
    );
}

#[test]
fn pending_devices_and_folders_and_the_qr_code() {
    let (a, c) = (Device::init(), Device::init());
    a.add_folder("docs", "docs");
    let running_a = a.serve();
    let api = Api::of(&a, &running_a);
    assert_eq!(
        api.get("/rest/cluster/pending/devices"),
        serde_json::json!({})
    );
    // c knows a; a does not know c.
    c.add_folder("docs", "docs");
    let running_c = knock_on(&c, &a, running_a.port);
    let c_id = c.id();
    wait_until("c is pending on a", 30, || {
        api.get("/rest/cluster/pending/devices")
            .get(&c_id)
            .is_some()
    });
    let pending = api.get("/rest/cluster/pending/devices");
    assert!(
        pending[&c_id]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(pending[&c_id]["time"].as_str().unwrap().contains('T'));
    let events = api.get("/rest/events?since=0&timeout=0&events=PendingDevicesChanged");
    assert_eq!(events[0]["data"]["added"][0]["deviceID"], c_id.as_str());
    api.refused("DELETE", "/rest/cluster/pending/devices", 400, "device");
    // c stops knocking first: a knock after the DELETE would list it again (as Syncthing
    // does), and c redials on its own schedule.
    running_c.stop();
    let (status, _) = api.call(
        "DELETE",
        &format!("/rest/cluster/pending/devices?device={c_id}"),
    );
    assert_eq!(status, 200);
    assert!(
        api.get("/rest/cluster/pending/devices")
            .get(&c_id)
            .is_none()
    );
    assert_eq!(
        api.get("/rest/cluster/pending/folders"),
        serde_json::json!({})
    );

    // The QR code is a PNG an independent decoder reads back.
    let url = format!("{}/qr/?text={}", api.base, a.id());
    let mut response = api
        .agent
        .get(&url)
        .header("X-API-Key", &api.key)
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "image/png"
    );
    let png = response.body_mut().read_to_vec().unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1);
    assert_eq!(grids[0].decode().unwrap().1, a.id());
    api.refused("GET", "/qr/", 400, "text");
}

#[test]
fn syncthing_cli_reads_through_our_api() {
    let syncthing = "/usr/bin/syncthing";
    assert!(
        std::path::Path::new(syncthing).exists(),
        "this test runs Debian's syncthing package (`apt-get install syncthing`; CI does)"
    );
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    b.add_folder("docs", "docs");
    fs::write(root_a.join("x.txt"), b"x").unwrap();
    let [running_a, _running_b] = connect_devices(&a, &b);
    let api = Api::of(&a, &running_a);
    let b_id = b.id();
    wait_until("a is connected to b", 30, || {
        api.get("/rest/system/connections")["connections"][&b_id]["connected"] == true
    });
    let cli_home = a.path("syncthing-cli-home");
    let cli = |args: &[&str]| api.syncthing_cli_ok(&cli_home, args);
    let system: Value = serde_json::from_str(&cli(&["show", "system"])).unwrap();
    assert_eq!(system["myID"], a.id().as_str());
    let connections: Value = serde_json::from_str(&cli(&["show", "connections"])).unwrap();
    assert_eq!(connections["connections"][&b_id]["connected"], true);
    let version: Value = serde_json::from_str(&cli(&["show", "version"])).unwrap();
    assert_eq!(version["os"], "linux");
    let pending: Value = serde_json::from_str(&cli(&["show", "pending", "devices"])).unwrap();
    assert_eq!(pending, serde_json::json!({}));
    let devices = cli(&["config", "devices", "list"]);
    assert!(
        devices.contains(&a.id()) && devices.contains(&b_id),
        "{devices}"
    );
    assert_eq!(cli(&["config", "folders", "list"]).trim(), "docs");
    assert_eq!(
        cli(&["config", "folders", "docs", "path", "get"]).trim(),
        root_a.to_str().unwrap()
    );
    assert_eq!(
        cli(&["config", "folders", "docs", "type", "get"]).trim(),
        "sendreceive"
    );
    let errors: Value = serde_json::from_str(&cli(&["errors", "show"])).unwrap();
    assert_eq!(errors["errors"], Value::Null);
    // Writes: it POSTs the whole configuration back, and peerfold applies it live.
    cli(&[
        "config",
        "folders",
        "docs",
        "label",
        "set",
        "From syncthing cli",
    ]);
    assert_eq!(
        api.get("/rest/config/folders/docs")["label"],
        "From syncthing cli"
    );
    let c = Device::init().id();
    cli(&[
        "config",
        "devices",
        "add",
        "--device-id",
        &c,
        "--name",
        "cee",
    ]);
    assert_eq!(api.get(&format!("/rest/config/devices/{c}"))["name"], "cee");
    let saved = fs::read_to_string(a.home().join("config.toml")).unwrap();
    assert!(
        saved.contains("From syncthing cli") && saved.contains(&c),
        "{saved}"
    );
    // Options by their Syncthing names, pausing a device, and a restart.
    cli(&["config", "options", "relays-enabled", "set", "false"]);
    assert_eq!(api.get("/rest/config/options")["relaysEnabled"], false);
    assert_eq!(
        cli(&["config", "options", "reconnect-intervals", "get"]).trim(),
        "60"
    );
    cli(&["config", "devices", &b_id, "paused", "set", "true"]);
    wait_until("b is paused and disconnected", 30, || {
        let c = &api.get("/rest/system/connections")["connections"][&b_id];
        c["paused"] == true && c["connected"] == false
    });
    cli(&["config", "devices", &b_id, "paused", "set", "false"]);
    wait_until("b is connected again", 30, || {
        api.get("/rest/system/connections")["connections"][&b_id]["connected"] == true
    });
    let started = api.get("/rest/system/status")["startTime"].clone();
    cli(&["operations", "restart"]);
    // `serve --api 127.0.0.1:0` picks a new port after the restart: follow it.
    let mut new_port = 0;
    wait_until("a is back with a new start time", 60, || {
        a.running_status().is_some_and(|(status, port)| {
            new_port = port;
            status["startTime"] != started
        })
    });
    let key = api.key.clone();
    let cli = |args: &[&str]| -> String {
        let output = Command::new(syncthing)
            .arg("cli")
            .arg(format!("--gui-address=127.0.0.1:{new_port}"))
            .arg(format!("--gui-apikey={key}"))
            .args(args)
            .env("HOME", &cli_home)
            .output()
            .unwrap();
        assert!(output.status.success(), "syncthing cli {args:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let system: Value = serde_json::from_str(&cli(&["show", "system"])).unwrap();
    assert_eq!(system["myID"], a.id().as_str());
    // Shutdown stops the daemon.
    let api = Api {
        base: format!("http://127.0.0.1:{new_port}"),
        ..api
    };
    cli(&["operations", "shutdown"]);
    wait_until("a stopped", 15, || {
        api.agent
            .get(&format!("{}/rest/noauth/health", api.base))
            .call()
            .is_err()
    });
}

/// Pairing and sharing the way a GUI does it: two fresh daemons, driven only over HTTP.
#[test]
fn pairing_and_sharing_through_the_api_alone() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    fs::write(root_a.join("paired.txt"), b"hello b").unwrap();
    let (running_a, running_b) = (a.serve(), b.serve());
    let (api_a, api_b) = (Api::of(&a, &running_a), Api::of(&b, &running_b));
    let id_a = api_a.get("/rest/system/status")["myID"]
        .as_str()
        .unwrap()
        .to_owned();
    let id_b = api_b.get("/rest/system/status")["myID"]
        .as_str()
        .unwrap()
        .to_owned();

    // a adds b by ID; b has not accepted a, so a's connection lands in b's pending list.
    api_a.ok_json(
        "POST",
        "/rest/config/devices",
        serde_json::json!({
            "deviceID": id_b,
            "name": "b",
            "addresses": [format!("quic://127.0.0.1:{}", running_b.port)],
        }),
    );
    wait_until("b sees a as pending", 30, || {
        api_b
            .get("/rest/cluster/pending/devices")
            .get(&id_a)
            .is_some()
    });
    // b accepts.
    api_b.ok_json(
        "POST",
        "/rest/config/devices",
        serde_json::json!({
            "deviceID": id_a,
            "addresses": [format!("quic://127.0.0.1:{}", running_a.port)],
        }),
    );
    assert!(
        api_b
            .get("/rest/cluster/pending/devices")
            .get(&id_a)
            .is_none()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while api_a.get("/rest/system/connections")["connections"][&id_b]["connected"] != true {
        assert!(
            Instant::now() < deadline,
            "a and b do not connect\n--- a:\n{}\n--- b:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // a shares docs with b; b sees the offer.
    api_a.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        serde_json::json!({ "devices": [{ "deviceID": id_a }, { "deviceID": id_b }] }),
    );
    wait_until("b sees docs offered", 30, || {
        api_b.get("/rest/cluster/pending/folders")["docs"]["offeredBy"]
            .get(&id_a)
            .is_some()
    });
    // b accepts with a path of its own.
    let root_b = b.path("docs-from-a");
    api_b.ok_json(
        "POST",
        "/rest/config/folders",
        serde_json::json!({
            "id": "docs",
            "path": root_b.to_str().unwrap(),
            "devices": [{ "deviceID": id_a }],
        }),
    );
    wait_until("the file arrives", 30, || {
        fs::read(root_b.join("paired.txt")).is_ok_and(|d| d == b"hello b")
    });
    assert_eq!(
        api_b.get("/rest/cluster/pending/folders"),
        serde_json::json!({})
    );
    // Both saved their configuration.
    let config_b = fs::read_to_string(b.home().join("config.toml")).unwrap();
    assert!(
        config_b.contains(&id_a) && config_b.contains("docs-from-a"),
        "{config_b}"
    );
    let saved = api_b.get("/rest/events?since=0&timeout=0&events=ConfigSaved");
    assert!(saved.as_array().unwrap().len() >= 2);
    // Each carries the whole configuration, as Syncthing's (its GUI takes it as the new one).
    let data = &saved[0]["data"];
    assert_eq!(data, &api_b.get("/rest/config"), "ConfigSaved's data");

    // Bad input is refused with the reason, and changes nothing.
    let (status, json) = api_b.send_json(
        "POST",
        "/rest/config/devices",
        &serde_json::json!({ "deviceID": "nope" }),
    );
    assert_eq!(status, 400, "{json}");
    assert!(json["error"].as_str().unwrap().contains("nope"));
    let (status, json) = api_b.send_json(
        "POST",
        "/rest/config/devices",
        &serde_json::json!({ "deviceID": id_a, "addresses": ["udp://1.2.3.4:22000"] }),
    );
    assert_eq!(status, 400, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("quic://"),
        "{json}"
    );
    let (status, json) = api_b.send_json(
        "PATCH",
        "/rest/config/folders/docs",
        &serde_json::json!({ "type": "receiveencrypted" }),
    );
    assert_eq!(status, 400, "{json}");
    let (status, body) = api_b.send(
        "PUT",
        "/rest/config/folders/docs",
        &[
            ("X-API-Key", &api_b.key),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, _) = api_b.send_json(
        "PATCH",
        "/rest/config/folders/nope",
        &serde_json::json!({ "label": "x" }),
    );
    assert_eq!(status, 404);
    assert_eq!(
        api_b.get("/rest/config/folders/docs")["type"],
        "sendreceive"
    );

    // Unsharing stops the flow to b; removing the folder leaves its files alone.
    api_a.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        serde_json::json!({ "devices": [] }),
    );
    std::thread::sleep(Duration::from_secs(1));
    fs::write(root_a.join("after-unshare.txt"), b"not for b").unwrap();
    api_a.ok_json("POST", "/rest/db/scan?folder=docs", Value::Null);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!root_b.join("after-unshare.txt").exists());
    let (status, _) = api_b.call("DELETE", "/rest/config/folders/docs");
    assert_eq!(status, 200);
    assert!(root_b.join("paired.txt").exists(), "files stay");
    api_b.refused("GET", "/rest/db/status?folder=docs", 404, "docs");
}

/// Many changes at once: none is lost, in the daemon or in config.toml.
#[test]
fn concurrent_config_changes_all_land() {
    let device = Device::init();
    device.add_folder("docs", "docs");
    let running = device.serve();
    let api = std::sync::Arc::new(Api::of(&device, &running));
    let ids: Vec<String> = (0..12).map(|_| Device::init().id()).collect();
    let threads: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let api = api.clone();
            std::thread::spawn(move || {
                api.ok_json(
                    "POST",
                    "/rest/config/devices",
                    serde_json::json!({ "deviceID": id, "addresses": ["dynamic"] }),
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let listed: Vec<String> = api
        .get("/rest/config/devices")
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceID"].as_str().unwrap().to_owned())
        .collect();
    let saved = fs::read_to_string(device.home().join("config.toml")).unwrap();
    for id in &ids {
        assert!(listed.contains(id), "{id} missing from {listed:?}");
        assert!(saved.contains(id.as_str()), "{id} missing from config.toml");
    }
}

/// The CLI goes through the running daemon's API, so its changes apply at once and are not
/// lost to the daemon's own saves; `serve --listen` stays an override for that run.
#[test]
fn the_cli_changes_a_running_daemon_through_its_api() {
    let (a, b) = (Device::init(), Device::init());
    a.add_folder("docs", "docs");
    let running = a.serve();
    let api = Api::of(&a, &running);
    let id_b = b.id();
    let said = a.ok(["device", "add", &id_b, "--name", "bee"]);
    assert!(said.contains("applied by the running daemon"), "{said}");
    let said = a.ok(["folder", "share", "docs", &id_b]);
    assert!(said.contains("applied by the running daemon"), "{said}");
    assert_eq!(
        api.get(&format!("/rest/config/devices/{id_b}"))["name"],
        "bee"
    );
    let shared_with: Vec<String> = api.get("/rest/config/folders/docs")["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceID"].as_str().unwrap().to_owned())
        .collect();
    assert!(shared_with.contains(&id_b), "{shared_with:?}");
    let said = a.ok(["scan", "docs"]);
    assert!(said.contains("scanned by the running daemon"), "{said}");

    a.ok([
        "config",
        "set",
        "listenAddresses=quic://0.0.0.0:22999,quic://[::]:22999",
    ]);
    assert_eq!(
        a.ok(["config", "get", "listenAddresses"]).trim(),
        "quic://0.0.0.0:22999,quic://[::]:22999"
    );
    assert_eq!(
        api.get("/rest/config/restart-required")["requiresRestart"],
        true
    );
    let refused = a.fails(1, ["config", "set", "noSuchOption=1"]);
    assert!(refused.contains("listenAddresses"), "{refused}");
    let saved = fs::read_to_string(a.home().join("config.toml")).unwrap();
    assert!(saved.contains("22999") && saved.contains(&id_b), "{saved}");
    assert!(
        !saved.contains("127.0.0.1:0"),
        "the --listen override was saved: {saved}"
    );

    // Stopped: the same commands edit config.toml and say so.
    running.stop();
    let said = a.ok(["config", "set", "listenAddresses=default"]);
    assert!(said.contains("not running"), "{said}");
    assert_eq!(
        a.ok(["config", "get", "listenAddresses"]).trim(),
        "quic://0.0.0.0:22100,quic://[::]:22100"
    );
    assert!(a.ok(["pending"]).contains("Nothing is pending"));
}

/// Ignore patterns, kept versions, conflict copies, and the per-item events.
#[test]
fn ignores_versions_conflicts_and_item_events() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    fs::write(root_a.join("note.txt"), b"first").unwrap();
    fs::write(
        root_a.join("note.sync-conflict-20261130-101010-ABCDEFG.txt"),
        b"the other side's",
    )
    .unwrap();
    let [running_a, running_b] = connect_devices(&a, &b);
    let (api_a, api_b) = (Api::of(&a, &running_a), Api::of(&b, &running_b));
    wait_until("b has note.txt", 30, || root_b.join("note.txt").exists());

    // Ignores: set on a, read back, and obeyed.
    assert_eq!(
        api_a.get("/rest/db/ignores?folder=docs")["ignore"],
        serde_json::json!([])
    );
    api_a.ok_json(
        "POST",
        "/rest/db/ignores?folder=docs",
        serde_json::json!({ "ignore": ["*.secret"] }),
    );
    assert_eq!(
        api_a.get("/rest/db/ignores?folder=docs")["ignore"],
        serde_json::json!(["*.secret"])
    );
    assert_eq!(
        fs::read_to_string(root_a.join(".peerfoldignore")).unwrap(),
        "*.secret\n"
    );
    let (status, json) = api_a.send_json(
        "POST",
        "/rest/db/ignores?folder=docs",
        &serde_json::json!({ "ignore": "x" }),
    );
    assert_eq!(status, 400, "{json}");

    // Versions: b keeps what a's edit replaced.
    fs::write(root_a.join("note.txt"), b"second").unwrap();
    fs::write(root_a.join("hidden.secret"), b"never leaves a").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read(root_b.join("note.txt")).is_ok_and(|d| d == b"second") {
        assert!(
            Instant::now() < deadline,
            "b has the edit\n--- a:\n{}\n--- b:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let versions = api_b.get("/rest/folder/versions?folder=docs");
    assert_eq!(versions["note.txt"][0]["size"], 5, "{versions}");
    assert!(!root_b.join("hidden.secret").exists());
    // a indexed it as ignored (invalid), so no peer ever gets it.
    let (status, file) = api_a.call("GET", "/rest/db/file?folder=docs&file=hidden.secret");
    assert!(
        status == 404 || file["local"]["ignored"] == true,
        "{status} {file}"
    );

    // Conflict copies, with the name they belong to.
    let conflicts = api_b.get("/rest/db/conflicts?folder=docs");
    assert_eq!(
        conflicts["conflicts"][0]["name"],
        "note.sync-conflict-20261130-101010-ABCDEFG.txt"
    );
    assert_eq!(conflicts["conflicts"][0]["original"], "note.txt");

    // What b's puller did, as events.
    let started = api_b.get("/rest/events?since=0&timeout=0&events=ItemStarted");
    assert!(
        started
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["item"] == "note.txt" && e["data"]["action"] == "update"),
        "{started}"
    );
    let finished = api_b.get("/rest/events?since=0&timeout=0&events=ItemFinished");
    assert!(
        finished
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["item"] == "note.txt" && e["data"]["error"].is_null())
    );
    // Counts are announced a moment after the round that changed them.
    wait_until("a FolderSummary for docs", 30, || {
        api_b
            .get("/rest/events?since=0&timeout=0&events=FolderSummary")
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["folder"] == "docs" && e["data"]["summary"]["globalFiles"].is_u64())
    });
    // With every field `/rest/db/status` has: syncthingctl parses `stateChanged` as a time
    // (an empty one made it fail, then spin).
    let summaries = api_b.get("/rest/events?since=0&timeout=0&events=FolderSummary");
    let summary = &summaries.as_array().unwrap().last().unwrap()["data"]["summary"];
    let status = api_b.get("/rest/db/status?folder=docs");
    for (key, _) in status.as_object().unwrap() {
        assert!(
            summary.get(key).is_some(),
            "FolderSummary lacks {key}: {summary}"
        );
    }
    for changed in [&summary["stateChanged"], &status["stateChanged"]] {
        let text = changed.as_str().unwrap_or_default();
        assert!(
            text.parse::<jiff::Timestamp>().is_ok(),
            "stateChanged {changed}"
        );
    }
}
