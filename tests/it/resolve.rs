//! What the GUI's Conflicts and Versions pages do, through the REST API on a real daemon:
//! settle a conflict copy three ways and restore a kept version. Nothing is deleted: the
//! file that loses goes to the versions directory, and each change is indexed (and so
//! sent to peers) like an edit.

use std::fs;

use serde_json::{Value, json};

use crate::api::Api;
use crate::support::{Device, wait_until};

const COPY: &str = "notes.sync-conflict-20261206-101500-ABCDEFG.txt";

/// The index entry of `name` on the running daemon (`None`: unknown or deleted).
fn indexed(api: &Api, name: &str) -> Option<Value> {
    let name = name.replace(' ', "%20");
    let (status, file) = api.call("GET", &format!("/rest/db/file?folder=docs&file={name}"));
    (status == 200 && !file["local"]["deleted"].as_bool().unwrap_or(true)).then_some(file)
}

fn versions(api: &Api) -> Value {
    api.get("/rest/folder/versions?folder=docs")
}

#[test]
fn conflicts_are_settled_and_versions_restored_without_losing_a_file() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    fs::write(root.join("notes.txt"), "mine").unwrap();
    fs::write(root.join(COPY), "theirs").unwrap();
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    let conflicts = api.get("/rest/db/conflicts?folder=docs");
    assert_eq!(conflicts["conflicts"][0]["name"], COPY, "{conflicts}");
    assert_eq!(conflicts["conflicts"][0]["original"], "notes.txt");

    // Keep the conflict copy: it takes the name, "mine" goes to versions.
    let resolve = "/rest/db/conflicts/resolve?folder=docs";
    let answer = api.ok_json(
        "POST",
        resolve,
        json!({ "conflict": COPY, "keep": "conflict" }),
    );
    assert_eq!(answer["kept"], "notes.txt");
    assert_eq!(
        fs::read_to_string(root.join("notes.txt")).unwrap(),
        "theirs"
    );
    assert!(!root.join(COPY).exists());
    let kept = versions(&api);
    assert_eq!(
        kept["notes.txt"].as_array().map(Vec::len),
        Some(1),
        "{kept}"
    );
    assert!(
        indexed(&api, COPY).is_none(),
        "the copy's deletion is indexed"
    );
    assert!(
        api.get("/rest/db/conflicts?folder=docs")["conflicts"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Restore "mine" from versions: "theirs" is kept in its place.
    let time = kept["notes.txt"][0]["versionTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = api.ok_json(
        "POST",
        "/rest/folder/versions?folder=docs",
        json!({ "notes.txt": time }),
    );
    assert_eq!(failed, json!({}));
    assert_eq!(fs::read_to_string(root.join("notes.txt")).unwrap(), "mine");
    let kept = versions(&api);
    assert_eq!(
        kept["notes.txt"].as_array().map(Vec::len),
        Some(1),
        "{kept}"
    );
    let stored = fs::read_dir(root.join(".peerfold/versions"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(stored, ["theirs"]);
    wait_until("the restored content is indexed", 10, || {
        indexed(&api, "notes.txt").is_some_and(|f| f["local"]["size"] == 4)
    });
    // A version that is not there is reported by name, and nothing changes.
    let failed = api.ok_json(
        "POST",
        "/rest/folder/versions?folder=docs",
        json!({ "notes.txt": "2001-01-01T00:00:00Z", "nothing.txt": time }),
    );
    assert!(
        failed["notes.txt"]
            .as_str()
            .unwrap()
            .contains("no kept version"),
        "{failed}"
    );
    assert!(failed["nothing.txt"].is_string(), "{failed}");
    assert_eq!(fs::read_to_string(root.join("notes.txt")).unwrap(), "mine");

    // Keep the original: the copy goes to versions.
    fs::write(root.join(COPY), "theirs again").unwrap();
    api.ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    api.ok_json(
        "POST",
        resolve,
        json!({ "conflict": COPY, "keep": "original" }),
    );
    assert!(!root.join(COPY).exists());
    assert_eq!(fs::read_to_string(root.join("notes.txt")).unwrap(), "mine");
    assert!(versions(&api)[COPY].is_array(), "{}", versions(&api));

    // Keep both: the copy gets a plain name and is no conflict any more.
    let copy = COPY.replace("101500", "111500");
    fs::write(root.join(&copy), "third").unwrap();
    api.ok_json("POST", "/rest/db/scan?folder=docs", json!({}));
    let answer = api.ok_json("POST", resolve, json!({ "conflict": copy, "keep": "both" }));
    let plain = "notes (conflict 20261206-111500 ABCDEFG).txt";
    assert_eq!(answer["kept"], plain);
    assert_eq!(fs::read_to_string(root.join(plain)).unwrap(), "third");
    assert_eq!(fs::read_to_string(root.join("notes.txt")).unwrap(), "mine");
    assert!(indexed(&api, plain).is_some());
    assert!(
        api.get("/rest/db/conflicts?folder=docs")["conflicts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
