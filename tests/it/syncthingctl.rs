//! Debian's `syncthingctl` (syncthingtray 1.3.2), as a user would run it, against two
//! paired peerfold daemons: every operation succeeds and does what it says, checked through
//! the REST API. Needs the `syncthingtray` package (tests/run.sh installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::api::Api;
use crate::settings::pair;
use crate::support::wait_until;

/// Runs `syncthingctl ARGS` against the API at `api` from `dir`; returns its output. Killed
/// after two minutes: after some errors it spins instead of exiting.
fn ctl(api: &Api, dir: &Path, args: &[&str]) -> Output {
    let runtime = std::env::temp_dir().join("syncthingctl-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    Command::new("timeout")
        .args(["--kill-after=5", "120", "syncthingctl"])
        .args(args)
        .arg("--no-color")
        .env("SYNCTHING_CTL_URL", &api.base)
        .env("SYNCTHING_CTL_API_KEY", &api.key)
        .env("XDG_RUNTIME_DIR", &runtime)
        .current_dir(dir)
        .output()
        .expect("syncthingctl (apt-get install syncthingtray)")
}

/// `syncthingctl ARGS` must succeed; returns what it printed.
fn ok(api: &Api, dir: &Path, args: &[&str]) -> String {
    let output = ctl(api, dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "syncthingctl {args:?}: {text}");
    assert!(!text.contains("Error"), "syncthingctl {args:?}: {text}");
    text
}

fn folder_paused(api: &Api) -> Value {
    api.get("/rest/config/folders/docs")["paused"].clone()
}

#[test]
fn syncthingctl_drives_peerfold() {
    let p = pair();
    let (api, root) = (&p.api_a, p.root_a.as_path());
    let peer = p.b.id();
    wait_until("connected", 30, || {
        api.get("/rest/system/connections")["connections"][&peer]["connected"] == true
    });

    let status = ok(api, root, &["status"]);
    assert!(
        status.contains("docs") && status.contains(&p.root_a.display().to_string()),
        "{status}"
    );
    assert!(status.contains(&peer), "the peer is listed: {status}");
    let log = ok(api, root, &["log"]);
    assert!(log.lines().count() > 1, "{log}");

    let scans = || api.get("/rest/stats/folder")["docs"]["lastScan"].clone();
    let before = scans();
    std::thread::sleep(Duration::from_millis(1100));
    ok(api, root, &["rescan", "docs"]);
    wait_until("rescanned", 20, || scans() != before);
    let before = scans();
    std::thread::sleep(Duration::from_millis(1100));
    ok(api, root, &["rescan-all"]);
    wait_until("rescanned all", 20, || scans() != before);

    ok(api, root, &["pause", "--dir", "docs"]);
    assert_eq!(folder_paused(api), true);
    ok(api, root, &["resume", "--dir", "docs"]);
    assert_eq!(folder_paused(api), false);
    ok(api, root, &["pwd", "pause"]);
    assert_eq!(folder_paused(api), true);
    ok(api, root, &["pwd", "resume"]);
    assert_eq!(folder_paused(api), false);
    let device_paused = || api.get(&format!("/rest/config/devices/{peer}"))["paused"].clone();
    ok(api, root, &["pause", "--dev", &peer]);
    assert_eq!(device_paused(), true);
    ok(api, root, &["resume", "--dev", &peer]);
    assert_eq!(device_paused(), false);

    std::fs::write(root.join("idle.txt"), b"synced before idle").unwrap();
    ok(
        api,
        root,
        &["wait-for-idle", "--timeout", "60000", "--at-least", "1000"],
    );
    let pwd = ok(api, root, &["pwd", "status"]);
    assert!(pwd.contains("docs"), "{pwd}");

    let cat = ctl(api, root, &["cat"]);
    assert!(cat.status.success());
    let text = String::from_utf8_lossy(&cat.stdout);
    let config: Value = serde_json::from_str(text.trim_start_matches(|c| c != '{'))
        .unwrap_or_else(|e| panic!("cat prints the configuration: {e}: {text}"));
    assert_eq!(config["folders"][0]["id"], "docs");
    ok(
        api,
        root,
        &[
            "edit",
            "--js-lines",
            "config.folders[0].label = 'Edited by syncthingctl'; config",
        ],
    );
    assert_eq!(
        api.get("/rest/config/folders/docs")["label"],
        "Edited by syncthingctl"
    );

    let started = api.get("/rest/system/status")["startTime"].clone();
    ok(api, root, &["restart"]);
    // The API is down for a moment while the engine starts again.
    let status_now = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            api.call("GET", "/rest/system/status")
        }))
        .ok()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
    };
    let restarted = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        status_now().is_some_and(|body| body["startTime"] != started)
    });
    assert!(restarted, "not restarted:\n{}", p.a.log());
    ok(api, root, &["stop"]);
    wait_until("stopped", 30, || {
        std::net::TcpStream::connect(api.base.trim_start_matches("http://")).is_err()
    });
}
