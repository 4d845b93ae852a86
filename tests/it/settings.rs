//! Syncthing's settings (issue 16): every one a client can change is kept or refused, never
//! answered 200 and dropped; the folder settings peerfold honours (watcher, ignorePerms,
//! ignoreDelete, maxConflicts, minDiskFree) change what two real daemons do. The `syncthing
//! cli` rows need Debian's `syncthing` (tests/run.sh installs it).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::api::Api;
use crate::support::{Device, Running, tree, wait_until};
use crate::sync::connect_devices;

/// A value unlike `current` of the same type, as a client would set it.
fn changed(name: &str, current: &Value) -> Option<Value> {
    let by_name = match name {
        "type" => json!("sendonly"),
        "order" => json!("newestFirst"),
        "filesystemType" => json!("fake"),
        "blockPullOrder" => json!("inOrder"),
        "copyRangeMethod" => json!("all"),
        "markerName" => json!(".stfolder"),
        "compression" => json!("always"),
        "authMode" => json!("ldap"),
        "theme" => json!("dark"),
        "minDiskFree" | "minHomeDiskFree" => json!({ "value": 2.5, "unit": "GB" }),
        "fsWatcherDelayS" => json!(7),
        "maxConflicts" => json!(3),
        "allowedNetworks" | "alwaysLocalNets" => json!(["192.168.0.0/16"]),
        "featureFlags" | "unackedNotificationIDs" => json!(["x"]),
        "ignoredFolders" => json!([{ "id": "f", "label": "f", "time": "2024-01-01T00:00:00Z" }]),
        _ => Value::Null,
    };
    if !by_name.is_null() {
        return Some(by_name);
    }
    match current {
        Value::Bool(b) => Some(json!(!b)),
        Value::Number(n) => Some(json!(n.as_i64().unwrap_or(0) + 7)),
        Value::String(s) => Some(json!(format!("{s}changed"))),
        _ => None,
    }
}

/// Settings that identify the object or need a test of their own.
const SKIPPED: &[&str] = &[
    "id",
    "deviceID",
    "path",
    "devices",
    "addresses",
    "versioning",
    "paused",
    "address",
    "apiKey",
    // Read back as its argon2 hash, never as sent (tests/it/gui_auth.rs).
    "password",
    "listenAddresses",
    "globalAnnounceServers",
    "stunServers",
];

/// Changes every setting of one object with `send` (a body holding that one change);
/// returns the names kept and the names refused. A refusal must name the setting and leave
/// it as it was; an acceptance must read back.
fn change_each(
    api: &Api,
    path: &str,
    mut send: impl FnMut(&str, &Value) -> (u16, Value),
) -> (Vec<String>, Vec<String>) {
    let before = api.get(path);
    let (mut kept, mut refused) = (Vec::new(), Vec::new());
    for (name, current) in before.as_object().unwrap() {
        if SKIPPED.contains(&name.as_str()) {
            continue;
        }
        let Some(new) = changed(name, current) else {
            continue;
        };
        let (status, answer) = send(name, &new);
        let after = api.get(path);
        match status {
            200 => {
                assert!(
                    same(&after[name], &new),
                    "{path} {name}: 200 but it reads back {} (sent {new})",
                    after[name]
                );
                kept.push(name.clone());
            }
            400 => {
                let error = answer["error"].as_str().unwrap_or_default();
                assert!(error.contains(name.as_str()), "{path} {name}: {error}");
                assert_eq!(after[name], *current, "{path} {name}: refused but changed");
                refused.push(name.clone());
            }
            other => panic!("{path} {name}: {other} {answer}"),
        }
    }
    (kept, refused)
}

/// Numbers by value (2.5 and 2.5, 7 and 7.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_syncthing_setting_is_kept_or_refused_never_dropped() {
    let device = Device::init();
    device.add_folder("docs", "docs");
    let peer = Device::init().id();
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json(
        "POST",
        "/rest/config/devices",
        json!({ "deviceID": peer, "name": "peer" }),
    );

    let folder = "/rest/config/folders/docs";
    let (folder_kept, folder_refused) = change_each(&api, folder, |name, value| {
        api.send_json("PATCH", folder, &json!({ name: value }))
    });
    let device_path = format!("/rest/config/devices/{peer}");
    let (device_kept, device_refused) = change_each(&api, &device_path, |name, value| {
        api.send_json("PATCH", &device_path, &json!({ name: value }))
    });
    let (options_kept, options_refused) =
        change_each(&api, "/rest/config/options", |name, value| {
            api.send_json("PATCH", "/rest/config/options", &json!({ name: value }))
        });
    // The GUI section through a whole-configuration PUT, as `syncthing cli` sends it.
    let (gui_kept, gui_refused) = change_each(&api, "/rest/config/gui", |name, value| {
        let mut whole = api.get("/rest/config");
        whole["gui"][name] = value.clone();
        api.send_json("PUT", "/rest/config", &whole)
    });
    println!("folder kept {folder_kept:?}\nfolder refused {folder_refused:?}");
    println!("device kept {device_kept:?}\ndevice refused {device_refused:?}");
    println!("options kept {options_kept:?}\noptions refused {options_refused:?}");
    println!("gui kept {gui_kept:?}\ngui refused {gui_refused:?}");
    // The ones users rely on are kept (and honoured: the tests below).
    for name in [
        "fsWatcherEnabled",
        "fsWatcherDelayS",
        "ignorePerms",
        "ignoreDelete",
        "order",
        "maxConflicts",
        "minDiskFree",
        "rescanIntervalS",
        "label",
        "type",
        "copiers",
        "weakHashThresholdPct",
    ] {
        assert!(folder_kept.iter().any(|k| k == name), "folder {name}");
    }
    assert!(device_kept.iter().any(|k| k == "compression"));
    assert!(device_kept.iter().any(|k| k == "introducer"));
    assert!(device_refused.iter().any(|k| k == "untrusted"));
    assert!(options_kept.iter().any(|k| k == "urAccepted"));
    assert!(options_refused.iter().any(|k| k == "natEnabled"));
    for name in ["maxSendKbps", "maxRecvKbps", "limitBandwidthInLan"] {
        assert!(options_kept.iter().any(|k| k == name), "option {name}");
    }
    for name in ["maxSendKbps", "maxRecvKbps"] {
        assert!(device_kept.iter().any(|k| k == name), "device {name}");
    }
    assert!(gui_kept.iter().any(|k| k == "theme"));
    assert!(gui_kept.iter().any(|k| k == "user"));
    assert!(gui_refused.iter().any(|k| k == "useTLS"));
    assert!(
        device.log().contains("has no effect in peerfold"),
        "a kept setting without effect is logged as such"
    );

    // What was kept survives a restart (it is in config.toml).
    let folder_before = api.get(folder);
    let options_before = api.get("/rest/config/options");
    assert!(running.stop().success());
    let running = device.serve();
    let api = Api::of(&device, &running);
    assert_eq!(api.get(folder), folder_before);
    assert_eq!(api.get("/rest/config/options"), options_before);

    // Debian's `syncthing cli` reads the whole configuration, changes one field and PUTs
    // it back: kept settings read back, a refused one fails with the reason.
    let cli_home = device.path("syncthing-cli-home");
    let cli = |args: &[&str]| api.syncthing_cli(&cli_home, args);
    for (field, value) in [
        ("hashers", "5"),
        ("ignore-delete", "false"),
        ("max-conflicts", "9"),
        ("order", "oldestFirst"),
    ] {
        let set = cli(&["config", "folders", "docs", field, "set", value]);
        assert!(
            set.status.success(),
            "cli set {field}: {}{}",
            String::from_utf8_lossy(&set.stdout),
            String::from_utf8_lossy(&set.stderr)
        );
        let got = cli(&["config", "folders", "docs", field, "get"]);
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            value,
            "{field}"
        );
    }
    let refused = cli(&["config", "devices", &peer, "untrusted", "set", "true"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("untrusted"), "{said}");
    let got = cli(&["config", "devices", &peer, "untrusted", "get"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "false");
}

/// Two connected daemons sharing "docs", with the APIs to change their settings.
pub(crate) struct Pair {
    pub(crate) a: Device,
    pub(crate) b: Device,
    pub(crate) root_a: std::path::PathBuf,
    pub(crate) root_b: std::path::PathBuf,
    pub(crate) api_a: Api,
    pub(crate) api_b: Api,
    _running: [Running; 2],
}

pub(crate) fn pair() -> Pair {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    let running = connect_devices(&a, &b);
    let (api_a, api_b) = (Api::of(&a, &running[0]), Api::of(&b, &running[1]));
    Pair {
        a,
        b,
        root_a,
        root_b,
        api_a,
        api_b,
        _running: running,
    }
}

fn set(api: &Api, settings: Value) {
    api.ok_json("PATCH", "/rest/config/folders/docs", settings);
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn watcher_ignore_perms_and_free_space_settings_are_honoured() {
    let p = pair();
    fs::write(p.root_a.join("first.txt"), b"first").unwrap();
    wait_until("b has first.txt", 30, || {
        p.root_b.join("first.txt").exists()
    });

    // fsWatcherEnabled off: a new file is not noticed until a scan is asked for.
    set(&p.api_a, json!({ "fsWatcherEnabled": false }));
    wait_until("a's watcher stops", 10, || {
        p.a.log().contains("not watched")
    });
    // The folder restarted without its watcher; its start-up scan must be over first.
    let idle = || p.api_a.get("/rest/db/status?folder=docs")["state"] == "idle";
    std::thread::sleep(std::time::Duration::from_secs(1));
    wait_until("a's folder is idle again", 20, idle);
    std::thread::sleep(std::time::Duration::from_secs(1));
    wait_until("a's folder is idle again", 20, idle);
    fs::write(p.root_a.join("unwatched.txt"), b"quiet").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !p.root_b.join("unwatched.txt").exists(),
        "a change in an unwatched folder waits for a scan"
    );
    p.api_a
        .ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    wait_until("the scanned change arrives", 30, || {
        p.root_b.join("unwatched.txt").exists()
    });

    // ignorePerms on b: modes neither applied there nor sent from there.
    set(&p.api_a, json!({ "fsWatcherEnabled": true }));
    set(&p.api_b, json!({ "ignorePerms": true }));
    let private = p.root_a.join("private.txt");
    fs::write(&private, b"mode 600 on a").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    wait_until("b has private.txt", 30, || {
        p.root_b.join("private.txt").exists()
    });
    assert_eq!(
        mode(&p.root_b.join("private.txt")),
        0o644,
        "not applied on b"
    );
    fs::set_permissions(
        p.root_b.join("first.txt"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    p.api_b
        .ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    fs::set_permissions(
        p.root_a.join("first.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    p.api_a
        .ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    // A later change from a shows the two have talked since.
    fs::write(p.root_a.join("marker.txt"), b"after the modes").unwrap();
    wait_until("b has marker.txt", 30, || {
        p.root_b.join("marker.txt").exists()
    });
    assert_eq!(mode(&p.root_a.join("first.txt")), 0o640, "b sent no mode");
    assert_eq!(
        mode(&p.root_b.join("first.txt")),
        0o700,
        "b applied no mode"
    );
    let local_b = p.api_b.get("/rest/db/file?folder=docs&file=first.txt");
    assert_eq!(
        local_b["local"]["version"], local_b["global"]["version"],
        "{local_b}"
    );

    // minDiskFree: nothing is pulled that would leave less than the whole disk free;
    // the failure says why, and lowering the limit lets the file in.
    set(
        &p.api_b,
        json!({ "minDiskFree": { "value": 100, "unit": "%" } }),
    );
    fs::write(p.root_a.join("big.bin"), vec![7u8; 100_000]).unwrap();
    wait_until("b reports the lack of space", 30, || {
        p.api_b
            .get("/rest/folder/errors?folder=docs")
            .to_string()
            .contains("minDiskFree")
    });
    assert!(!p.root_b.join("big.bin").exists());
    set(
        &p.api_b,
        json!({ "minDiskFree": { "value": 1, "unit": "kB" } }),
    );
    wait_until("b pulls big.bin once there is room", 40, || {
        p.root_b.join("big.bin").exists()
    });
    drop(p.b);
}

#[test]
fn ignore_delete_and_max_conflicts_are_honoured() {
    let p = pair();
    fs::write(p.root_a.join("keep-me.txt"), b"stays on b").unwrap();
    fs::write(p.root_a.join("notes.txt"), b"original").unwrap();
    wait_until("b has both", 30, || tree(&p.root_b) == tree(&p.root_a));

    // ignoreDelete on b: a's deletion reaches b's index, and b keeps the file.
    set(&p.api_b, json!({ "ignoreDelete": true }));
    fs::remove_file(p.root_a.join("keep-me.txt")).unwrap();
    wait_until("b learns of the deletion", 30, || {
        p.api_b.get("/rest/db/file?folder=docs&file=keep-me.txt")["global"]["deleted"] == true
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        fs::read(p.root_b.join("keep-me.txt")).unwrap(),
        b"stays on b"
    );
    let need = p.api_b.get("/rest/db/need?folder=docs");
    assert_eq!(need["rest"], json!([]), "b needs nothing: {need}");

    // maxConflicts 0 on both: the losing edit goes to versions, no copy beside the file.
    set(&p.api_a, json!({ "maxConflicts": 0 }));
    set(&p.api_b, json!({ "maxConflicts": 0 }));
    p.api_a.ok_json(
        "POST",
        &format!("/rest/system/pause?device={}", p.b.id()),
        json!({}),
    );
    wait_until("apart", 20, || {
        p.api_b.get("/rest/system/connections")["connections"][p.a.id()]["connected"] != true
    });
    fs::write(p.root_a.join("notes.txt"), b"edited on a").unwrap();
    p.api_a
        .ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(p.root_b.join("notes.txt"), b"edited on b, later").unwrap();
    p.api_b
        .ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    p.api_a.ok_json(
        "POST",
        &format!("/rest/system/resume?device={}", p.b.id()),
        json!({}),
    );
    wait_until("a takes b's later edit", 40, || {
        fs::read(p.root_a.join("notes.txt")).is_ok_and(|c| c == b"edited on b, later")
    });
    let kept = p.root_a.join(".peerfold/versions/notes.txt");
    wait_until("a's losing edit is in versions", 20, || kept.exists());
    assert_eq!(fs::read(&kept).unwrap(), b"edited on a");
    for root in [&p.root_a, &p.root_b] {
        assert!(
            !tree(root).keys().any(|k| k.contains(".sync-conflict-")),
            "no conflict copy: {:?}",
            tree(root)
        );
    }
}

#[test]
fn simple_and_staggered_versioning_as_syncthing_sets_them() {
    let p = pair();
    let notes = p.root_a.join("notes.txt");
    // b keeps two versions of each file (Syncthing's simple versioning).
    set(
        &p.api_b,
        json!({ "versioning": { "type": "simple", "params": { "keep": "2" } } }),
    );
    let versioning = p.api_b.get("/rest/config/folders/docs")["versioning"].clone();
    assert_eq!(versioning["type"], "simple", "{versioning}");
    assert_eq!(versioning["params"]["keep"], "2", "{versioning}");
    for round in 0..4 {
        let text = format!("edit {round}");
        fs::write(&notes, &text).unwrap();
        wait_until("b has the edit", 30, || {
            fs::read_to_string(p.root_b.join("notes.txt")).is_ok_and(|t| t == text)
        });
    }
    let versions = p.api_b.get("/rest/folder/versions?folder=docs");
    let kept = versions["notes.txt"].as_array().unwrap();
    assert_eq!(kept.len(), 2, "{versions}");
    let stored: Vec<String> = fs::read_dir(p.root_b.join(".peerfold/versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut contents: Vec<String> = stored
        .iter()
        .map(|n| fs::read_to_string(p.root_b.join(".peerfold/versions").join(n)).unwrap())
        .collect();
    contents.sort();
    assert_eq!(
        contents,
        ["edit 1", "edit 2"],
        "the newest two replaced: {stored:?}"
    );
    assert!(
        stored
            .iter()
            .all(|n| n.starts_with("notes~") && n.ends_with(".txt")),
        "{stored:?}"
    );

    // Staggered with a week's maximum age reads back in Syncthing's seconds.
    set(
        &p.api_b,
        json!({ "versioning": { "type": "staggered", "params": { "maxAge": "604800" } } }),
    );
    let versioning = p.api_b.get("/rest/config/folders/docs")["versioning"].clone();
    assert_eq!(versioning["type"], "staggered");
    assert_eq!(versioning["params"]["maxAge"], "604800");
    // External runs commands: refused with the reason, nothing changed.
    let (status, answer) = p.api_b.send_json(
        "PATCH",
        "/rest/config/folders/docs",
        &json!({ "versioning": { "type": "external", "params": { "command": "rm -rf /" } } }),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("external"));
    assert_eq!(
        p.api_b.get("/rest/config/folders/docs")["versioning"]["type"],
        "staggered"
    );
}

#[test]
fn the_default_folder_and_ignores_are_what_new_folders_start_with() {
    let device = Device::init();
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json(
        "PUT",
        "/rest/config/defaults/folder",
        json!({
            "ignoreDelete": true,
            "order": "newestFirst",
            "copiers": 3,
            "versioning": { "type": "simple", "params": { "keep": "4" } },
        }),
    );
    api.ok_json(
        "PUT",
        "/rest/config/defaults/ignores",
        json!({ "lines": ["*.tmp", "/cache"] }),
    );
    let defaults = api.get("/rest/config/defaults/folder");
    assert_eq!(defaults["order"], "newestFirst", "{defaults}");
    assert_eq!(
        api.get("/rest/config/defaults/ignores")["lines"],
        json!(["*.tmp", "/cache"])
    );

    // A folder added with only an ID and a path takes the defaults.
    let root = device.path("new-folder");
    fs::create_dir_all(&root).unwrap();
    api.ok_json(
        "POST",
        "/rest/config/folders",
        json!({ "id": "fresh", "path": root }),
    );
    let folder = api.get("/rest/config/folders/fresh");
    assert_eq!(folder["ignoreDelete"], true, "{folder}");
    assert_eq!(folder["order"], "newestFirst");
    assert_eq!(folder["copiers"], 3);
    assert_eq!(folder["versioning"]["type"], "simple");
    assert_eq!(folder["versioning"]["params"]["keep"], "4");
    wait_until("the default patterns are the folder's", 20, || {
        api.get("/rest/db/ignores?folder=fresh")["ignore"] == json!(["*.tmp", "/cache"])
    });

    // Kept across a restart.
    assert!(running.stop().success());
    let running = device.serve();
    let api = Api::of(&device, &running);
    assert_eq!(api.get("/rest/config/defaults/folder"), defaults);
}

/// Syncthing's default device: what a device added through the API, the CLI or an
/// introducer starts with; what is given when adding it wins.
#[test]
fn the_default_device_is_what_new_devices_start_with() {
    let device = Device::init();
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json(
        "PUT",
        "/rest/config/defaults/device",
        json!({
            "autoAcceptFolders": true,
            "maxRecvKbps": 100,
            "allowedNetworks": ["127.0.0.0/8"],
            "compression": "always",
        }),
    );
    let defaults = api.get("/rest/config/defaults/device");
    assert_eq!(defaults["autoAcceptFolders"], true, "{defaults}");
    assert_eq!(defaults["compression"], "always");
    let stored = fs::read_to_string(device.home().join("config.toml")).unwrap();
    assert!(stored.contains("[defaults.device]"), "{stored}");

    // Through the API: only the ID given.
    let by_api = Device::init().id();
    api.ok_json(
        "POST",
        "/rest/config/devices",
        json!({ "deviceID": by_api }),
    );
    let added = api.get(&format!("/rest/config/devices/{by_api}"));
    assert_eq!(added["autoAcceptFolders"], true, "{added}");
    assert_eq!(added["maxRecvKbps"], 100);
    assert_eq!(added["allowedNetworks"], json!(["127.0.0.0/8"]));
    assert_eq!(added["compression"], "always");
    // What the client sends wins over the default.
    let explicit = Device::init().id();
    api.ok_json(
        "POST",
        "/rest/config/devices",
        json!({ "deviceID": explicit, "autoAcceptFolders": false, "maxRecvKbps": 5 }),
    );
    let added = api.get(&format!("/rest/config/devices/{explicit}"));
    assert_eq!(
        (
            added["autoAcceptFolders"].clone(),
            added["maxRecvKbps"].clone()
        ),
        (json!(false), json!(5))
    );
    // Through the CLI.
    let by_cli = Device::init().id();
    device.ok(["device", "add", &by_cli, "--name", "cli"]);
    let added = api.get(&format!("/rest/config/devices/{by_cli}"));
    assert_eq!(
        (added["name"].clone(), added["maxRecvKbps"].clone()),
        (json!("cli"), json!(100))
    );
    // Back to peerfold's own default: nothing kept.
    api.ok_json(
        "PUT",
        "/rest/config/defaults/device",
        json!({ "autoAcceptFolders": false, "maxRecvKbps": 0, "allowedNetworks": [], "compression": "metadata" }),
    );
    let stored = fs::read_to_string(device.home().join("config.toml")).unwrap();
    assert!(!stored.contains("[defaults.device]"), "{stored}");
}
