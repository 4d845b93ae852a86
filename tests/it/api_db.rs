//! Syncthing's folder views (issue 16): `db/browse` (the global tree), `db/remoteneed`
//! (what a device still lacks), `db/prio`, and `system/browse` (path completion) and
//! `svc/report`, in the shapes Syncthing's GUI reads.

use std::fs;

use serde_json::{Value, json};

use crate::api::Api;
use crate::support::Device;

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

#[test]
fn the_global_tree_what_a_peer_lacks_and_path_completion() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("dir/sub/deep.txt"), b"deep").unwrap();
    fs::write(root.join("dir/x.bin"), vec![1u8; 300]).unwrap();
    fs::write(root.join("top.txt"), b"top").unwrap();
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json("POST", "/rest/db/scan?folder=docs", json!({}));

    // The whole tree, nested; then one level; then under a prefix; directories only.
    let tree = api.get("/rest/db/browse?folder=docs");
    assert_eq!(names(&tree), ["dir", "top.txt"], "{tree}");
    let dir = &tree[0];
    assert_eq!(dir["type"], "FILE_INFO_TYPE_DIRECTORY");
    assert_eq!(names(&dir["children"]), ["sub", "x.bin"]);
    assert_eq!(names(&dir["children"][0]["children"]), ["deep.txt"]);
    assert_eq!(dir["children"][1]["size"], 300);
    let flat = api.get("/rest/db/browse?folder=docs&levels=0");
    assert!(flat[0].get("children").is_none(), "{flat}");
    let under = api.get("/rest/db/browse?folder=docs&prefix=dir");
    assert_eq!(names(&under), ["sub", "x.bin"]);
    let dirs = api.get("/rest/db/browse?folder=docs&prefix=dir&dirsonly=true");
    assert_eq!(names(&dirs), ["sub"]);

    // A device the folder is shared with, never connected: it lacks everything.
    let peer = Device::init().id();
    api.ok_json("POST", "/rest/config/devices", json!({ "deviceID": peer }));
    api.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        json!({ "devices": [{ "deviceID": peer }] }),
    );
    let needed = api.get(&format!("/rest/db/remoteneed?folder=docs&device={peer}"));
    let mut lacking: Vec<&str> = names(&needed["files"]);
    lacking.sort_unstable();
    assert_eq!(
        lacking,
        ["dir", "dir/sub", "dir/sub/deep.txt", "dir/x.bin", "top.txt"],
        "{needed}"
    );
    let page = api.get(&format!(
        "/rest/db/remoteneed?folder=docs&device={peer}&page=2&perpage=2"
    ));
    assert_eq!(page["files"].as_array().unwrap().len(), 2);
    assert_eq!(page["page"], 2);

    // db/prio answers with what this device needs (nothing here).
    let prio = api.ok_json("POST", "/rest/db/prio?folder=docs&file=top.txt", json!({}));
    assert_eq!(prio["rest"], json!([]), "{prio}");

    // Path completion: directories under the typed prefix, with a trailing slash.
    let base = root.display().to_string();
    let completed = api.get(&format!("/rest/system/browse?current={base}/d"));
    assert_eq!(completed, json!([format!("{base}/dir/")]));

    // The usage report, in Syncthing's shape, from this device's numbers.
    let report = api.get("/rest/svc/report");
    assert_eq!(report["urVersion"], 3);
    assert_eq!(report["numFolders"], 1);
    assert_eq!(report["numDevices"], 1);
    assert_eq!(report["totFiles"], 3, "{report}");
}
