//! Syncthing's debug endpoints (`/rest/debug/*`) on two paired daemons: refused until the
//! GUI setting `debugging` is on, then the peers' completion, one file as each device
//! announced it, and a support bundle without secrets; Go's profiles refused saying why.

use std::io::Read;

use serde_json::{Value, json};

use crate::settings::pair;
use crate::support::wait_until;

#[test]
fn debug_endpoints_answer_while_debugging_is_on() {
    let p = pair();
    let (api, peer) = (&p.api_a, p.b.id());
    let (status, body) = api.call("GET", "/rest/debug/peerCompletion");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Debugging disabled")
    );

    api.ok_json("PATCH", "/rest/config/gui", json!({ "debugging": true }));
    assert_eq!(api.get("/rest/config/gui")["debugging"], true);
    std::fs::write(p.root_a.join("shared.txt"), b"both have it").unwrap();
    wait_until("b has shared.txt", 30, || {
        p.root_b.join("shared.txt").exists()
    });
    wait_until("a sees b complete", 30, || {
        api.get("/rest/debug/peerCompletion")[&peer] == 100
    });

    let file = api.get("/rest/debug/file?folder=docs&file=shared.txt");
    assert_eq!(file["global"]["name"], "shared.txt", "{file}");
    let versions = file["globalVersions"].as_str().unwrap();
    let (short_a, short_b) = (&p.a.id()[..7], &peer[..7]);
    assert!(
        versions.starts_with("{{Version:")
            && versions.contains(short_a)
            && versions.contains(short_b),
        "{versions}"
    );
    let (status, _) = api.call("GET", "/rest/debug/file?folder=docs&file=nothing.txt");
    assert_eq!(status, 404);

    // The support bundle: a zip with the configuration, its secrets redacted, and the log.
    let mut response = api
        .agent
        .get(format!("{}/rest/debug/support", api.base))
        .header("X-API-Key", &api.key)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let zipped = response.body_mut().read_to_vec().unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
    let mut read = |name: &str| {
        let mut text = String::new();
        archive
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name} not in the bundle: {e}"))
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let config: Value = serde_json::from_str(&read("config.json.txt")).unwrap();
    assert_eq!(config["gui"]["apiKey"], "REDACTED");
    assert_eq!(config["folders"][0]["id"], "docs");
    assert!(!read("config.json.txt").contains(&api.key));
    assert!(!read("log-inmemory.txt").is_empty());
    assert!(read("connection-stats.json.txt").contains(&peer));

    let (status, body) = api.call("GET", "/rest/debug/cpuprof");
    assert_eq!(status, 501);
    assert!(body["error"].as_str().unwrap().contains("perf"), "{body}");
    drop(p.b);
}
