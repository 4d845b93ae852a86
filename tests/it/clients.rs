//! Syncthing's Python clients from PyPI, in a venv this test makes (pip reaches PyPI):
//! python-syncthing 2.4.1 runs its calls against a peerfold daemon paired with another,
//! its database resets rebuild the index, and syncthingmanager 0.1.0 (`stman`) runs its
//! commands, each checked through the REST API. Needs `python3` with `venv` (tests/run.sh
//! installs python3-venv).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::api::Api;
use crate::settings::pair;
use crate::support::{Device, wait_until};

const PACKAGES: [&str; 2] = ["syncthing==2.4.1", "syncthingmanager==0.1.0"];

/// The venv with both clients (made once, kept under the target directory).
fn venv() -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    let _once = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("syncthing-clients-venv");
    let ready = dir.join("ready");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 (apt-get install python3-venv)");
        assert!(
            made.success(),
            "python3 -m venv (apt-get install python3-venv)"
        );
        let installed = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES)
            .status()
            .unwrap();
        assert!(installed.success(), "pip install {PACKAGES:?}");
        std::fs::write(&ready, PACKAGES.join("\n")).unwrap();
    }
    dir
}

fn port(api: &Api) -> &str {
    api.base.rsplit(':').next().unwrap()
}

/// Runs a Python snippet in the venv with python-syncthing's `s` bound to `api`.
fn python(venv: &Path, api: &Api, code: &str) -> String {
    let script = format!(
        "import syncthing, warnings\nwarnings.simplefilter('ignore')\n\
         s = syncthing.Syncthing('{}', host='127.0.0.1', port={}, timeout=30.0)\n{code}",
        api.key,
        port(api)
    );
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{code}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// The daemon's start time, or `None` while its API is down (a restart).
fn started(api: &Api) -> Option<Value> {
    std::net::TcpStream::connect(api.base.trim_start_matches("http://")).ok()?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        api.call("GET", "/rest/system/status")
    }))
    .ok()
    .filter(|(status, _)| *status == 200)
    .map(|(_, body)| body["startTime"].clone())
}

#[test]
fn python_syncthing_runs_its_calls_and_resets_rebuild_the_index() {
    let venv = venv();
    let p = pair();
    let (api, peer) = (&p.api_a, p.b.id());
    std::fs::write(p.root_a.join("hello.txt"), b"hello").unwrap();
    wait_until("b has hello.txt", 30, || {
        p.root_b.join("hello.txt").exists()
    });

    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/python_syncthing.py");
    let output = Command::new(venv.join("bin/python"))
        .arg(&driver)
        .args(["127.0.0.1", port(api), &api.key, "docs", &peer])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    let failed: Vec<(&String, &Value)> = results
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| *r != "ok")
        .collect();
    assert!(
        failed.is_empty(),
        "python-syncthing calls failed: {failed:?}"
    );
    assert!(results.as_object().unwrap().len() >= 40, "{results}");

    // A folder's index, then the whole database, erased: the daemon restarts, the index
    // is rebuilt from disk, and the two still sync.
    for reset in ["s.system.reset_folder('docs')", "s.system.reset()"] {
        let before = started(api).unwrap();
        python(&venv, api, reset);
        wait_until("restarted after the reset", 60, || {
            started(api).is_some_and(|now| now != before)
        });
        wait_until("the index is rebuilt", 30, || {
            api.get("/rest/db/status?folder=docs")["localFiles"] == 1
        });
    }
    assert!(p.a.log().contains("index erased"), "the reset is logged");
    std::fs::write(p.root_b.join("after-reset.txt"), b"from b").unwrap();
    wait_until("b's new file reaches a", 60, || {
        p.root_a.join("after-reset.txt").exists()
    });
    assert_eq!(std::fs::read(p.root_a.join("hello.txt")).unwrap(), b"hello");
}

#[test]
fn syncthingmanager_runs_its_commands() {
    let venv = venv();
    let p = pair();
    let api = &p.api_a;
    let conf = p.a.path("stman.conf");
    let stman = |args: &[&str]| {
        let output = Command::new(venv.join("bin/stman"))
            .arg("-c")
            .arg(&conf)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "stman {args:?}: {text}");
        text
    };
    stman(&[
        "configure",
        "-k",
        &api.key,
        "--hostname",
        "127.0.0.1",
        "--port",
        port(api),
        "--name",
        "pf",
        "--default",
    ]);
    let listed = stman(&["device", "list"]);
    assert!(listed.contains(&p.b.id()), "{listed}");

    let carol = Device::init().id();
    let device = |field: &str| api.get(&format!("/rest/config/devices/{carol}"))[field].clone();
    stman(&[
        "device",
        "add",
        "-n",
        "carol",
        "-a",
        "tcp://127.0.0.1:22000",
        &carol,
    ]);
    assert_eq!(device("name"), "carol");
    assert_eq!(device("addresses"), json!(["tcp://127.0.0.1:22000"]));
    assert!(stman(&["device", "info", "carol"]).contains(&carol));
    stman(&["device", "edit", "-a", "tcp://127.0.0.1:22001", "carol"]);
    stman(&["device", "edit", "-r", "tcp://127.0.0.1:22000", "carol"]);
    assert_eq!(device("addresses"), json!(["tcp://127.0.0.1:22001"]));
    // stman 0.1.0 parses -c but never sends it (against Syncthing too): it only must not fail.
    stman(&["device", "edit", "-c", "always", "carol"]);
    stman(&["device", "edit", "-i", "carol"]);
    assert_eq!(device("introducer"), true);
    stman(&["device", "edit", "-io", "carol"]);
    assert_eq!(device("introducer"), false);
    stman(&["device", "edit", "-n", "carol2", "carol"]);
    assert_eq!(device("name"), "carol2");

    let other = p.a.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let folder = |field: &str| api.get("/rest/config/folders/other")[field].clone();
    stman(&[
        "folder",
        "add",
        "--label",
        "Other",
        "--foldertype",
        "readwrite",
        "--rescan-interval",
        "120",
        other.to_str().unwrap(),
        "other",
    ]);
    assert_eq!(folder("label"), "Other");
    assert_eq!(folder("rescanIntervalS"), 120);
    assert!(stman(&["folder", "list"]).contains("other"));
    assert!(stman(&["folder", "info", "other"]).contains("other"));
    stman(&[
        "folder",
        "edit",
        "--label",
        "O2",
        "--rescan",
        "300",
        "--minfree",
        "5",
        "--order",
        "newestFirst",
        "--ignore-permissions",
        "other",
    ]);
    assert_eq!(folder("label"), "O2");
    assert_eq!(folder("rescanIntervalS"), 300);
    assert_eq!(folder("minDiskFree")["value"], 5);
    assert_eq!(folder("order"), "newestFirst");
    assert_eq!(folder("ignorePerms"), true);
    stman(&["folder", "edit", "--sync-permissions", "other"]);
    assert_eq!(folder("ignorePerms"), false);
    stman(&["folder", "edit", "--type", "readonly", "other"]);
    assert_eq!(folder("type"), "sendonly");
    stman(&["folder", "share", "other", "carol2"]);
    let shared = |id: &str| {
        folder("devices")
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["deviceID"] == id)
    };
    assert!(shared(&carol));
    stman(&["folder", "unshare", "other", "carol2"]);
    assert!(!shared(&carol));
    for (args, kind) in [
        (vec!["trashcan", "--cleanout", "7"], "trashcan"),
        (vec!["simple", "--versions", "3"], "simple"),
        (vec!["staggered", "--maxage", "30"], "staggered"),
        (vec!["none"], ""),
    ] {
        let mut command = vec!["folder", "versioning", "other"];
        command.extend(args);
        stman(&command);
        assert_eq!(folder("versioning")["type"], kind, "{command:?}");
    }
    stman(&["folder", "remove", "other"]);
    let (status, _) = api.call("GET", "/rest/config/folders/other");
    assert_eq!(status, 404);
    stman(&["device", "remove", "carol2"]);
    let (status, _) = api.call("GET", &format!("/rest/config/devices/{carol}"));
    assert_eq!(status, 404);
}
