//! Driving a running daemon: options by their Syncthing names (REST and CLI), pausing and
//! resuming devices, restarting, auto-accepted folders, progress events, and configuration
//! changes while files sync.

use std::fs;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::Api;
use crate::support::{Device, wait_until};
use crate::sync::{connect_devices, status_of};

/// Whether `api`'s daemon reports `device` as connected.
fn connected(api: &Api, device: &str) -> bool {
    api.get("/rest/system/connections")["connections"][device]["connected"] == true
}

/// Events of `types` since the start, from a poll that does not wait.
fn events(api: &Api, types: &str) -> Vec<Value> {
    api.get(&format!("/rest/events?since=0&timeout=0&events={types}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn pause_resume_and_restart_through_the_api() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    let [running_a, running_b] = connect_devices(&a, &b);
    let api = Api::of(&a, &running_a);
    let id_b = b.id();
    wait_until("a connects to b", 30, || connected(&api, &id_b));

    api.refused(
        "POST",
        "/rest/system/pause?device=nonsense",
        400,
        "nonsense",
    );
    let stranger = Device::init().id();
    api.refused(
        "POST",
        &format!("/rest/system/pause?device={stranger}"),
        404,
        "no device",
    );

    // Paused: disconnected, refused when it dials, and saved.
    let (status, _) = api.call("POST", &format!("/rest/system/pause?device={id_b}"));
    assert_eq!(status, 200);
    wait_until("b is disconnected and shown paused", 30, || {
        let c = &api.get("/rest/system/connections")["connections"][&id_b];
        c["connected"] == false && c["paused"] == true
    });
    let seen = &api.get("/rest/stats/device")[&id_b];
    assert_ne!(seen["lastSeen"], "1970-01-01T00:00:00Z", "{seen}");
    assert!(
        seen["lastConnectionDurationS"].as_f64().unwrap() > 0.0,
        "{seen}"
    );
    let saved = fs::read_to_string(a.home().join("config.toml")).unwrap();
    assert!(saved.contains("paused = true"), "{saved}");
    let devices = api.get("/rest/config/devices");
    let entry = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceID"] == id_b.as_str())
        .unwrap();
    assert_eq!(entry["paused"], true);
    assert!(b.log().contains("closed by peer: paused"), "{}", b.log());
    fs::write(root_a.join("while-paused.txt"), b"later").unwrap();
    // Now b dials a too, and is turned away each time.
    let api_b = Api::of(&b, &running_b);
    api_b.ok_json(
        "PATCH",
        &format!("/rest/config/devices/{}", a.id()),
        json!({ "addresses": [format!("quic://127.0.0.1:{}", running_a.port)] }),
    );
    wait_until("b is told it is paused", 30, || {
        b.log().contains("this device is paused here")
    });
    assert!(!connected(&api, &id_b), "a paused device got in");
    assert!(!root_b.join("while-paused.txt").exists());

    // Resumed (every device): dialed at once, and the file arrives.
    let (status, _) = api.call("POST", "/rest/system/resume");
    assert_eq!(status, 200);
    crate::ns_daemon::wait_until("the file written while paused arrives", &[&a, &b], || {
        root_b.join("while-paused.txt").exists()
    });
    let saved = fs::read_to_string(a.home().join("config.toml")).unwrap();
    assert!(!saved.contains("paused = true"), "{saved}");
    let stats = &api_b.get("/rest/stats/folder")["docs"];
    assert_eq!(stats["lastFile"]["filename"], "while-paused.txt", "{stats}");
    assert_eq!(stats["lastFile"]["deleted"], false);
    assert_ne!(stats["lastScan"], "1970-01-01T00:00:00Z", "{stats}");

    // Restart: same process, new start time, configuration read again, sync goes on.
    let before = status_of(&a);
    let (status, answer) = api.call("POST", "/rest/system/restart");
    assert_eq!((status, answer["ok"].as_str()), (200, Some("restarting")));
    let mut port = 0;
    wait_until("the daemon is back with a new start time", 60, || {
        a.running_status().is_some_and(|(status, now)| {
            port = now;
            status["startTime"] != before["startTime"]
        })
    });
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        ..Api::of(&a, &running_a)
    };
    wait_until("a reconnects to b after the restart", 30, || {
        connected(&api, &id_b)
    });
    fs::write(root_a.join("after-restart.txt"), b"again").unwrap();
    wait_until("a file written after the restart arrives", 30, || {
        root_b.join("after-restart.txt").exists()
    });
}

#[test]
fn options_and_defaults_through_the_api_and_the_cli() {
    let device = Device::init();
    let running = device.serve();
    let api = Api::of(&device, &running);
    let config_path = device.home().join("config.toml");

    let answer = api.ok_json(
        "PATCH",
        "/rest/config/options",
        json!({
            "globalAnnounceServers": ["https://disco.example:8443/?id=ABC"],
            "reconnectionIntervalS": 5,
            "relaysEnabled": false,
        }),
    );
    assert_eq!(answer["relaysEnabled"], false);
    let options = api.get("/rest/config/options");
    assert_eq!(
        options["globalAnnounceServers"],
        json!(["https://disco.example:8443/?id=ABC"])
    );
    assert_eq!(options["reconnectionIntervalS"], 5);
    assert_eq!(options["globalAnnounceEnabled"], true);
    let saved = fs::read_to_string(&config_path).unwrap();
    assert!(saved.contains("relays_enabled = false"), "{saved}");
    assert!(saved.contains("reconnection_interval_s = 5"), "{saved}");

    // A Syncthing option peerfold does not keep: refused if changed, fine if repeated.
    let (status, error) = api.send_json(
        "PATCH",
        "/rest/config/options",
        &json!({ "natEnabled": true }),
    );
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("natEnabled"));
    api.ok_json(
        "PATCH",
        "/rest/config/options",
        json!({ "natEnabled": false }),
    );
    for (body, mentions) in [
        (
            json!({ "globalAnnounceServers": "x" }),
            "globalAnnounceServers",
        ),
        (
            json!({ "globalAnnounceServers": ["http://plain"] }),
            "https",
        ),
        (
            json!({ "reconnectionIntervalS": "5" }),
            "reconnectionIntervalS",
        ),
        (json!({ "relaysEnabled": 1 }), "relaysEnabled"),
        (json!({ "listenAddresses": ["tcp://0.0.0.0:1"] }), "quic://"),
    ] {
        let (status, error) = api.send_json("PATCH", "/rest/config/options", &body);
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(mentions),
            "{body}: {error}"
        );
    }
    assert_eq!(
        api.get("/rest/config/options"),
        options,
        "refusals change nothing"
    );

    // A Syncthing client writes the whole configuration back unchanged: accepted.
    let whole = api.get("/rest/config");
    api.ok_json("PUT", "/rest/config", whole.clone());
    assert_eq!(api.get("/rest/config"), whole);

    // Defaults: where auto-accepted folders go.
    let target = device.path("incoming");
    api.ok_json(
        "PATCH",
        "/rest/config/defaults/folder",
        json!({ "path": target }),
    );
    assert_eq!(
        api.get("/rest/config/defaults/folder")["path"],
        json!(target)
    );
    let (status, error) = api.send_json(
        "PUT",
        "/rest/config/defaults/folder",
        &json!({ "path": "relative/dir" }),
    );
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("absolute"),
        "{error}"
    );
    assert_eq!(
        api.get("/rest/config")["defaults"]["folder"]["path"],
        json!(target)
    );
    assert_eq!(
        api.get("/rest/config/defaults/device")["autoAcceptFolders"],
        false
    );

    // The CLI, through the running daemon.
    let out = device.ok(["config", "set", "localAnnounceEnabled=false"]);
    assert!(out.contains("saved by the running daemon"), "{out}");
    assert_eq!(
        device.ok(["config", "get", "localAnnounceEnabled"]).trim(),
        "false"
    );
    let all: Value = serde_json::from_str(&device.ok(["config", "get", "--json"])).unwrap();
    assert_eq!(all["relaysEnabled"], false);
    assert_eq!(all["reconnectionIntervalS"], 5);
    let confirmed: Value =
        serde_json::from_str(&device.ok(["config", "set", "relaysEnabled=false", "--json"]))
            .unwrap();
    assert_eq!(confirmed["ok"], true);
    assert!(
        confirmed["message"]
            .as_str()
            .unwrap()
            .contains("relaysEnabled"),
        "{confirmed}"
    );
    let key: Value = serde_json::from_str(&device.ok(["--json", "api-key"])).unwrap();
    assert_eq!(key["apiKey"].as_str(), Some(api.key.as_str()));
    let err = device.fails(1, ["config", "set", "relaysEnabled=maybe"]);
    assert!(err.contains("true or false"), "{err}");
    let err = device.fails(1, ["config", "set", "natEnabled=true"]);
    assert!(
        err.contains("globalAnnounceServers"),
        "lists the options: {err}"
    );
    assert_eq!(
        api.get("/rest/config/restart-required")["requiresRestart"],
        false
    );
    device.ok(["config", "set", "listenAddresses=quic://127.0.0.1:0"]);
    assert_eq!(
        api.get("/rest/config/restart-required")["requiresRestart"],
        true
    );

    // With the daemon stopped, the CLI edits config.toml and says so.
    running.stop();
    let out = device.ok([
        "config",
        "set",
        "globalAnnounceServers=https://a.example/?id=X, https://b.example:8443",
    ]);
    assert!(out.contains("not running"), "{out}");
    assert_eq!(
        device.ok(["config", "get", "globalAnnounceServers"]).trim(),
        "https://a.example/?id=X,https://b.example:8443"
    );
    assert_eq!(
        device.ok(["config", "get", "relaysEnabled"]).trim(),
        "false"
    );
}

#[test]
fn auto_accepted_folders_land_under_the_default_path() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_labeled_folder("photos", "photos", "Holiday Photos");
    fs::create_dir_all(root_a.join("2024")).unwrap();
    fs::write(
        root_a.join("2024/beach.jpg"),
        crate::support::noise(7, 300_000),
    )
    .unwrap();
    b.ok(["device", "add", &a.id(), "--auto-accept-folders"]);
    let running_b = b.serve();
    let api_b = Api::of(&b, &running_b);
    let incoming = b.path("incoming");
    api_b.ok_json(
        "PUT",
        "/rest/config/defaults/folder",
        json!({ "path": incoming }),
    );
    a.ok([
        "device",
        "add",
        &b.id(),
        "--address",
        &format!("quic://127.0.0.1:{}", running_b.port),
    ]);
    a.ok(["folder", "share", "photos", &b.id()]);
    // An offer whose label and ID are no plain directory names finds no place: it waits.
    a.add_labeled_folder("../up", "up", "..");
    a.ok(["folder", "share", "../up", &b.id()]);
    let running_a = a.serve();
    let api_a = Api::of(&a, &running_a);

    let landed = incoming.join("Holiday Photos");
    crate::support::wait_for_same_tree(
        "the offered folder is accepted and synced",
        60,
        (&root_a, &a),
        (&landed, &b),
    );
    let folder = api_b.get("/rest/config/folders/photos");
    assert_eq!(folder["path"], json!(landed));
    assert_eq!(folder["label"], "Holiday Photos");
    assert!(
        folder["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["deviceID"] == a.id().as_str()),
        "{folder}"
    );
    wait_until("the offer with no place waits as pending", 30, || {
        api_b.get("/rest/cluster/pending/folders")["../up"]["offeredBy"][a.id()].is_object()
    });
    let pending = api_b.get("/rest/cluster/pending/folders");
    assert_eq!(
        pending.as_object().unwrap().len(),
        1,
        "only that one waits: {pending}"
    );
    assert!(
        events(&api_b, "PendingFoldersChanged")
            .iter()
            .any(|e| e["data"]["added"][0]["folderID"] == "../up"),
        "the user is told"
    );
    assert!(!incoming.join("up").exists() && !b.path("up").exists());

    // A watched B's progress: FolderCompletion reaches 100 for b; its own scan announced
    // its progress.
    let id_b = b.id();
    wait_until("a reports b's completion at 100%", 30, || {
        events(&api_a, "FolderCompletion").iter().any(|e| {
            e["data"]["device"] == id_b.as_str()
                && e["data"]["folder"] == "photos"
                && e["data"]["completion"] == 100.0
                && e["data"]["remoteState"] == "valid"
        })
    });
    let scans = events(&api_a, "FolderScanProgress");
    let first = scans.first().unwrap_or_else(|| panic!("no scan progress"));
    assert_eq!(first["data"]["folder"], "photos");
    assert_eq!(first["data"]["total"], 300_000, "{first}");
    assert!(first["data"]["current"].as_u64().unwrap() <= 300_000);
    let summary = events(&api_a, "FolderSummary");
    assert!(
        summary
            .iter()
            .any(|e| e["data"]["summary"]["globalBytes"] == 300_000),
        "{summary:?}"
    );
}

/// Devices and folders added and removed through the API while files sync: no restart, no
/// lost change, no lost file, and a removed folder's files stay.
#[test]
fn configuration_changes_while_files_sync() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    let [running_a, _running_b] = connect_devices(&a, &b);
    let api = std::sync::Arc::new(Api::of(&a, &running_a));
    let started = api.get("/rest/system/status")["startTime"].clone();
    wait_until("a connects to b", 30, || connected(&api, &b.id()));

    let writer = {
        let root = root_a.clone();
        std::thread::spawn(move || {
            for i in 0..200u64 {
                fs::write(
                    root.join(format!("load-{i:03}.bin")),
                    crate::support::noise(i, 20_000),
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let strangers: Vec<String> = (0..4).map(|_| Device::init().id()).collect();
    let extra: Vec<_> = (0..4)
        .map(|i| {
            let root = a.path(&format!("extra-{i}"));
            fs::create_dir_all(&root).unwrap();
            fs::write(root.join("keep.txt"), format!("extra {i}")).unwrap();
            root
        })
        .collect();
    for (i, (id, root)) in strangers.iter().zip(&extra).enumerate() {
        api.ok_json(
            "POST",
            "/rest/config/devices",
            json!({ "deviceID": id, "addresses": ["quic://127.0.0.1:9"] }),
        );
        api.ok_json(
            "POST",
            "/rest/config/folders",
            json!({ "id": format!("extra-{i}"), "path": root, "devices": [{ "deviceID": id }] }),
        );
    }
    // Remove half of them again, while the writer still writes.
    for (i, id) in strangers.iter().enumerate().step_by(2) {
        let (status, _) = api.call("DELETE", &format!("/rest/config/folders/extra-{i}"));
        assert_eq!(status, 200);
        let (status, _) = api.call("DELETE", &format!("/rest/config/devices/{id}"));
        assert_eq!(status, 200);
    }
    writer.join().unwrap();

    crate::support::wait_for_same_tree("every file arrives", 90, (&root_a, &a), (&root_b, &b));
    let config = api.get("/rest/config");
    let folders: Vec<&str> = config["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(folders, ["docs", "extra-1", "extra-3"]);
    let devices: Vec<&str> = config["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceID"].as_str().unwrap())
        .collect();
    for (i, id) in strangers.iter().enumerate() {
        assert_eq!(devices.contains(&id.as_str()), i % 2 == 1, "{id}");
    }
    let saved = fs::read_to_string(a.home().join("config.toml")).unwrap();
    assert!(
        saved.contains("extra-3") && !saved.contains("extra-2"),
        "{saved}"
    );
    for root in &extra {
        assert!(
            root.join("keep.txt").exists(),
            "a removed folder keeps its files"
        );
    }
    wait_until("the added folder that stayed is scanned", 30, || {
        api.get("/rest/db/status?folder=extra-3")["localFiles"] == 1
    });
    assert_eq!(
        api.get("/rest/system/status")["startTime"],
        started,
        "no restart"
    );
}

/// A paused folder stops (no scans, no sync, not offered) and its files stay; resumed, it
/// catches up. Peers that still offer it do not make it pending.
#[test]
fn a_paused_folder_stops_and_resumes() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    fs::write(root_a.join("before.txt"), b"before").unwrap();
    let [running_a, _running_b] = connect_devices(&a, &b);
    let api = Api::of(&a, &running_a);
    wait_until("the first file arrives", 30, || {
        root_b.join("before.txt").exists()
    });

    let out = a.ok(["folder", "pause", "docs"]);
    assert!(out.contains("applied by the running daemon"), "{out}");
    assert_eq!(api.get("/rest/config/folders/docs")["paused"], true);
    let paused = api.get("/rest/db/status?folder=docs");
    assert_eq!(paused["state"], "paused");
    // The fields clients parse are there for a paused folder too.
    for field in [
        "stateChanged",
        "globalFiles",
        "needBytes",
        "sequence",
        "errors",
    ] {
        assert!(!paused[field].is_null(), "{field}: {paused}");
    }
    api.refused("GET", "/rest/db/need?folder=docs", 404, "paused");
    assert_eq!(status_of(&a)["folders"][0]["state"], "paused");
    fs::write(root_a.join("while-paused.txt"), b"waits").unwrap();
    // b reconnects and offers "docs" again; a neither syncs it nor lists it as pending.
    wait_until("a and b reconnect", 30, || connected(&api, &b.id()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!root_b.join("while-paused.txt").exists());
    assert_eq!(api.get("/rest/cluster/pending/folders"), json!({}));
    assert!(root_a.join("before.txt").exists(), "files stay");

    let out = a.ok(["folder", "resume", "docs"]);
    assert!(out.contains("Resumed"), "{out}");
    crate::ns_daemon::wait_until("the file written while paused arrives", &[&a, &b], || {
        root_b.join("while-paused.txt").exists()
    });

    // With the daemon stopped, pausing edits config.toml, and the next start leaves the
    // folder alone.
    running_a.stop();
    let out = a.ok(["folder", "pause", "docs"]);
    assert!(out.contains("not running"), "{out}");
    let running_a = a.serve();
    let api = Api::of(&a, &running_a);
    assert_eq!(api.get("/rest/db/status?folder=docs")["state"], "paused");
    let listed: Value = serde_json::from_str(&a.ok(["folder", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["paused"], true);
}
