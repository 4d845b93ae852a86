//! Syncthing's small endpoints its GUI and clients call first (issue 16): posted errors
//! (through Debian's `syncthing cli errors`, as a user would), random strings, languages,
//! whether the configuration is in sync, the upgrade check, a scan of every folder, the
//! recent log lines and debug facilities.
//! Needs Debian's `syncthing` (tests/run.sh installs it).

use serde_json::Value;

use crate::api::Api;
use crate::support::Device;

/// `POST /rest/db/scan` without `folder` scans every folder and returns once all are done.
#[test]
fn a_scan_without_a_folder_scans_them_all() {
    let device = Device::init();
    let roots = [
        device.add_folder("one", "one"),
        device.add_folder("two", "two"),
    ];
    let running = device.serve();
    let api = Api::of(&device, &running);
    for (i, root) in roots.iter().enumerate() {
        std::fs::write(root.join(format!("new-{i}.txt")), b"fresh").unwrap();
    }
    let (status, answer) = api.send_json("POST", "/rest/db/scan", &serde_json::json!({}));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["changed"].get("one").is_some(), "{answer}");
    assert!(answer["changed"].get("two").is_some(), "{answer}");
    for folder in ["one", "two"] {
        let status = api.get(&format!("/rest/db/status?folder={folder}"));
        assert_eq!(status["localFiles"], 1, "{folder}: {status}");
    }
}

/// What Syncthing's clients send: `tcp://` addresses (taken as QUIC at the same host and
/// port), an empty address list entry (stman's `[""]`: "find it"), legacy folder types.
#[test]
fn syncthing_clients_inputs_are_taken_as_syncthing_takes_them() {
    let device = Device::init();
    device.add_folder("docs", "docs");
    let running = device.serve();
    let api = Api::of(&device, &running);
    let (peer_one, peer_two) = (Device::init().id(), Device::init().id());
    api.ok_json(
        "POST",
        "/rest/config/devices",
        serde_json::json!({ "deviceID": peer_one, "addresses": ["tcp://127.0.0.1:9", "quic4://127.0.0.1:10"] }),
    );
    // Read back as written (a client can find and remove what it wrote), dialed as QUIC.
    let stored = api.get(&format!("/rest/config/devices/{peer_one}"));
    assert_eq!(
        stored["addresses"],
        serde_json::json!(["tcp://127.0.0.1:9", "quic4://127.0.0.1:10"]),
        "{stored}"
    );
    let saved = std::fs::read_to_string(device.home().join("config.toml")).unwrap();
    assert!(
        saved.contains("\"quic://127.0.0.1:9\"") && saved.contains("\"quic://127.0.0.1:10\""),
        "{saved}"
    );
    assert!(
        device.log().contains("peerfold dials QUIC only"),
        "the mapping is logged"
    );
    api.ok_json(
        "POST",
        "/rest/config/devices",
        serde_json::json!({ "deviceID": peer_two, "addresses": [""] }),
    );
    let stored = api.get(&format!("/rest/config/devices/{peer_two}"));
    assert_eq!(
        stored["addresses"],
        serde_json::json!(["dynamic"]),
        "{stored}"
    );
    for (legacy, kind) in [("readonly", "sendonly"), ("readwrite", "sendreceive")] {
        api.ok_json(
            "PATCH",
            "/rest/config/folders/docs",
            serde_json::json!({ "type": legacy }),
        );
        assert_eq!(
            api.get("/rest/config/folders/docs")["type"],
            kind,
            "{legacy}"
        );
    }
    // Override and revert on a folder of another type: 200 and nothing done, as Syncthing.
    for action in ["override", "revert"] {
        let answer = api.ok_json(
            "POST",
            &format!("/rest/db/{action}?folder=docs"),
            serde_json::json!({}),
        );
        assert_eq!(answer["changed"], 0, "{action}: {answer}");
    }
    let (status, answer) = api.send_json(
        "PATCH",
        "/rest/config/folders/docs",
        &serde_json::json!({ "type": "readmostly" }),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("readmostly"),
        "{answer}"
    );
}

#[test]
fn posted_errors_random_strings_languages_insync_and_upgrade() {
    let device = Device::init();
    let running = device.serve();
    let api = Api::of(&device, &running);
    // A fresh key goes on a command line as it is.
    assert!(
        api.key.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}",
        api.key
    );
    let cli_home = device.path("syncthing-cli-home");
    let cli = |args: &[&str]| api.syncthing_cli_ok(&cli_home, args);

    // Errors: none, two posted as text (kept in order, with a time), shown and cleared
    // through `syncthing cli` (its `errors push` panics in 1.19 before it sends anything).
    assert_eq!(api.get("/rest/system/error")["errors"], Value::Null);
    let post_text = |text: &str| {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/rest/system/error", api.base))
            .header("X-API-Key", &api.key)
            .body(text.to_owned())
            .unwrap();
        let response = api.agent.run(request).unwrap();
        response.status().as_u16()
    };
    assert_eq!(post_text("the disk is on fire\n"), 200);
    assert_eq!(post_text("and the backup too"), 200);
    assert_eq!(post_text("  \n"), 400, "an empty error is refused");
    let shown: Value = serde_json::from_str(&cli(&["errors", "show"])).unwrap();
    let messages: Vec<&str> = shown["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["the disk is on fire", "and the backup too"]);
    assert!(
        shown["errors"][0]["when"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok(),
        "{shown}"
    );
    cli(&["errors", "clear"]);
    assert_eq!(api.get("/rest/system/error")["errors"], Value::Null);

    // Random strings: the length asked, two never alike.
    let one = api.get("/rest/svc/random/string")["random"].clone();
    assert_eq!(one.as_str().unwrap().len(), 32, "{one}");
    assert_ne!(one, api.get("/rest/svc/random/string")["random"]);
    let long = api.get("/rest/svc/random/string?length=200");
    assert_eq!(long["random"].as_str().unwrap().len(), 200);
    api.refused("GET", "/rest/svc/random/string?length=0", 400, "length");

    // Languages, best first, from the browser's header.
    let (status, body) = api.send(
        "GET",
        "/rest/svc/lang",
        &[
            ("X-API-Key", &api.key),
            ("Accept-Language", "de-CH;q=0.4, nl-BE, fr;q=0.7"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let langs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(langs, serde_json::json!(["nl-be", "fr", "de-ch"]));

    // In sync until a change that needs a restart (the device name does not).
    for path in ["/rest/config/insync", "/rest/system/config/insync"] {
        assert_eq!(api.get(path)["configInSync"], true, "{path}");
    }
    api.ok_json(
        "PATCH",
        "/rest/config/options",
        serde_json::json!({ "listenAddresses": ["quic://127.0.0.1:0"] }),
    );
    let required = api.get("/rest/config/restart-required")["requiresRestart"] == true;
    assert_eq!(
        api.get("/rest/config/insync")["configInSync"],
        !required,
        "insync is the opposite of restart-required"
    );

    // No self-upgrade: the running version is the latest, and asking to upgrade changes
    // nothing (`syncthing cli operations upgrade` succeeds).
    let upgrade = api.get("/rest/system/upgrade");
    let running_version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(upgrade["running"], running_version.as_str(), "{upgrade}");
    assert_eq!(upgrade["latest"], running_version.as_str());
    assert_eq!(upgrade["newer"], false);
    cli(&["operations", "upgrade"]);
    assert_eq!(api.get("/rest/system/ping")["ping"], "pong");
}

/// `/rest/events/disk`: a file made on a shows there as `LocalChangeDetected` (added), and
/// on b, once pulled, as `RemoteChangeDetected` (modified by a); deleted, both again; none of
/// them in `/rest/events`.
#[test]
fn disk_events_tell_local_and_remote_changes_apart() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    b.add_folder("docs", "docs");
    let [running_a, running_b] = crate::sync::connect_devices(&a, &b);
    let (api_a, api_b) = (Api::of(&a, &running_a), Api::of(&b, &running_b));
    std::fs::create_dir_all(root_a.join("sub")).unwrap();
    std::fs::write(root_a.join("sub/report.txt"), b"quarterly").unwrap();
    api_a.ok_json("POST", "/rest/db/scan?folder=docs", Value::Null);
    let disk_on = |api: &Api, kind: &str| -> Vec<Value> {
        api.get("/rest/events/disk?since=0&timeout=0")
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["data"].clone())
            .collect()
    };
    let local = disk_on(&api_a, "LocalChangeDetected");
    let added = local
        .iter()
        .find(|d| d["path"] == "sub/report.txt")
        .unwrap_or_else(|| panic!("{local:?}"));
    assert_eq!(added["action"], "added");
    assert_eq!(added["type"], "file");
    assert_eq!(added["folderID"], "docs");
    assert!(
        local
            .iter()
            .any(|d| d["path"] == "sub" && d["type"] == "dir")
    );
    let a_short = a.id()[..7].to_owned();
    crate::support::wait_until("b pulled the file", 30, || {
        disk_on(&api_b, "RemoteChangeDetected")
            .iter()
            .any(|d| d["path"] == "sub/report.txt" && d["action"] == "modified")
    });
    let remote = disk_on(&api_b, "RemoteChangeDetected");
    let pulled = remote
        .iter()
        .find(|d| d["path"] == "sub/report.txt")
        .unwrap();
    assert_eq!(pulled["modifiedBy"], a_short.as_str(), "{pulled}");

    std::fs::remove_file(root_a.join("sub/report.txt")).unwrap();
    api_a.ok_json("POST", "/rest/db/scan?folder=docs", Value::Null);
    assert!(
        disk_on(&api_a, "LocalChangeDetected")
            .iter()
            .any(|d| d["path"] == "sub/report.txt" && d["action"] == "deleted"),
        "the deletion is told"
    );
    crate::support::wait_until("b deleted the file", 30, || {
        disk_on(&api_b, "RemoteChangeDetected")
            .iter()
            .any(|d| d["path"] == "sub/report.txt" && d["action"] == "deleted")
    });
    // The general stream does not carry them, even when asked for by name.
    let general = api_a.get("/rest/events?since=0&timeout=0");
    assert!(
        general
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "LocalChangeDetected" && e["type"] != "RemoteChangeDetected"),
        "{general}"
    );
}

/// `/rest/system/log` (and `.txt`) keep the recent lines, `since` cuts them;
/// `/rest/system/debug` turns a facility's debug lines on and off.
#[test]
fn recent_log_lines_and_debug_facilities() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        serde_json::json!({ "label": "Docs" }),
    );
    let messages = |query: &str| -> Vec<Value> {
        api.get(&format!("/rest/system/log{query}"))["messages"]
            .as_array()
            .unwrap()
            .clone()
    };
    let saved = messages("")
        .into_iter()
        .find(|m| {
            m["message"]
                .as_str()
                .unwrap()
                .contains("configuration changed and saved")
        })
        .expect("the change is in the log");
    assert_eq!(saved["level"], 2, "{saved}");
    let when = saved["when"].as_str().unwrap().to_owned();
    let later = messages(&format!("?since={when}"));
    assert!(
        later
            .iter()
            .all(|m| m["when"].as_str().unwrap() > when.as_str()),
        "{later:?}"
    );
    let (status, text) = api.send(
        "GET",
        "/rest/system/log.txt",
        &[("X-API-Key", api.key.as_str())],
    );
    assert_eq!(status, 200);
    assert!(
        text.contains("INFO: configuration changed and saved"),
        "{text}"
    );

    let debug = api.get("/rest/system/debug");
    assert!(debug["facilities"]["scanner"].is_string(), "{debug}");
    assert_eq!(debug["enabled"], serde_json::json!([]));
    let debug_lines = || {
        messages("")
            .into_iter()
            .filter(|m| m["level"] == 0)
            .filter(|m| m["message"].as_str().unwrap().contains("change noticed"))
            .count()
    };
    assert_eq!(debug_lines(), 0, "no debug lines unless asked");
    let on = api.ok_json(
        "POST",
        "/rest/system/debug?enable=scanner",
        serde_json::json!({}),
    );
    assert_eq!(on["enabled"], serde_json::json!(["scanner"]));
    std::fs::write(root.join("one.txt"), b"1").unwrap();
    crate::support::wait_until("the watcher's debug line", 20, || debug_lines() > 0);
    let off = api.ok_json(
        "POST",
        "/rest/system/debug?disable=scanner",
        serde_json::json!({}),
    );
    assert_eq!(off["enabled"], serde_json::json!([]));
    let before = debug_lines();
    std::fs::write(root.join("two.txt"), b"2").unwrap();
    crate::support::wait_until("two.txt is scanned", 20, || {
        api.get("/rest/db/status?folder=docs")["localFiles"] == 2
    });
    assert_eq!(debug_lines(), before, "debug lines stop once disabled");
}
