//! Real daemons on loopback keep a folder identical.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{Device, knock_on, noise, pair, tree, wait_for_same_tree, wait_until};

/// Two initialised devices with folder "docs" shared between them; `a` dials `b`.
fn two_devices() -> (Device, Device, std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    (a, b, root_a, root_b)
}

/// Shares "docs" with `other`. Rescans stay at the default hour: changes must arrive through
/// file-system notifications.
fn share(device: &Device, other: &Device) {
    device.ok(["folder", "share", "docs", &other.id()]);
}

#[test]
fn two_devices_sync_a_tree_and_every_kind_of_change() {
    let (a, b, root_a, root_b) = two_devices();
    fs::create_dir_all(root_a.join("dir/nested")).unwrap();
    fs::write(root_a.join("dir/nested/file.txt"), b"nested").unwrap();
    fs::write(root_a.join("empty"), b"").unwrap();
    fs::write(root_a.join("big.bin"), noise(1, 3 << 20)).unwrap();
    fs::write(root_a.join("private.txt"), b"secret").unwrap();
    fs::set_permissions(
        root_a.join("private.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("dir/nested/file.txt", root_a.join("link")).unwrap();

    let [running_a, running_b] = connect(&a, &b);

    wait_for_same_tree("b has a's tree", 30, (&root_a, &a), (&root_b, &b));
    assert_eq!(tree(&root_b).len(), 7, "{:?}", tree(&root_b));
    wait_until("b reports the folder in sync", 30, || {
        let status: serde_json::Value = serde_json::from_str(&b.ok(["status", "--json"])).unwrap();
        status["folders"][0]["need"]["files"] == 0 && status["folders"][0]["state"] == "idle"
    });
    let status: serde_json::Value = serde_json::from_str(&b.ok(["status", "--json"])).unwrap();
    let folder = &status["folders"][0];
    assert_eq!(folder["id"], "docs");
    assert_eq!(folder["local"]["files"], 7, "{status}");
    assert_eq!(folder["global"], folder["local"], "{status}");
    let device = &status["devices"][0];
    assert_eq!(device["id"], a.id().as_str());
    assert_eq!(device["connected"], true);
    assert!(device["inBytes"].as_u64().unwrap() > 3 << 20, "{status}");
    assert!(b.ok(["status"]).contains("connected"));

    // Changes on b: edit, append, delete, rename, new directory, permission change.
    fs::write(root_b.join("dir/nested/file.txt"), b"edited on b").unwrap();
    let mut big = fs::read(root_b.join("big.bin")).unwrap();
    big.extend_from_slice(&noise(2, 100_000));
    fs::write(root_b.join("big.bin"), &big).unwrap();
    fs::remove_file(root_b.join("empty")).unwrap();
    fs::rename(root_b.join("private.txt"), root_b.join("renamed.txt")).unwrap();
    fs::create_dir(root_b.join("newdir")).unwrap();
    fs::write(root_b.join("newdir/x"), b"x").unwrap();
    fs::set_permissions(root_b.join("dir"), fs::Permissions::from_mode(0o700)).unwrap();
    wait_for_same_tree("a has b's changes", 30, (&root_a, &a), (&root_b, &b));
    assert!(!root_a.join("empty").exists());
    assert_eq!(fs::read(root_a.join("big.bin")).unwrap(), big);
    // What sync replaced or deleted on a is kept in a's versions directory.
    let versions = root_a.join(".peerfold/versions");
    assert_eq!(
        fs::read(versions.join("dir/nested/file.txt")).unwrap(),
        b"nested"
    );
    assert!(versions.join("empty").exists());
    assert!(
        versions.join("private.txt").exists(),
        "renamed away = deleted here"
    );

    // A directory deleted on a disappears on b, contents first.
    fs::remove_dir_all(root_a.join("dir")).unwrap();
    wait_until("b deletes the directory", 30, || {
        !root_b.join("dir").exists()
    });
    wait_for_same_tree("trees equal again", 30, (&root_a, &a), (&root_b, &b));

    // No temp files are left behind.
    for (name, _) in tree(&root_b) {
        assert!(!name.contains(".peerfold."), "temp file left: {name}");
    }
    assert!(running_a.stop().success());
    assert!(running_b.stop().success(), "{}", b.log());
    let stderr = b.fails(1, ["status"]);
    assert!(stderr.contains("not running"), "{stderr}");
}

/// [`connect`] for other test modules.
pub(crate) fn connect_devices(a: &Device, b: &Device) -> [crate::support::Running; 2] {
    connect(a, b)
}

/// `peerfold status --json` of a running device.
pub(crate) fn status_of(device: &Device) -> serde_json::Value {
    serde_json::from_str(&device.ok(["status", "--json"])).unwrap()
}

/// Pairs `a` and `b`, shares "docs" both ways, and starts both daemons (b first, so a can
/// dial b's port).
fn connect(a: &Device, b: &Device) -> [crate::support::Running; 2] {
    pair(a, b, None);
    share(a, b);
    share(b, a);
    let running_b = b.serve();
    pair_address(a, b, running_b.port);
    [a.serve(), running_b]
}

/// Points `a`'s entry for `b` at `b`'s current port.
pub(crate) fn pair_address(a: &Device, b: &Device, port: u16) {
    let path = a.home().join("config.toml");
    let text = fs::read_to_string(&path).unwrap();
    let id = b.id();
    let mut out = String::new();
    let mut in_b = false;
    for line in text.lines() {
        if line.starts_with("id = ") {
            in_b = line.contains(&id);
        }
        if in_b && line.starts_with("addresses = ") {
            out.push_str(&format!("addresses = [\"quic://127.0.0.1:{port}\"]\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    fs::write(path, out).unwrap();
}

#[test]
fn an_unknown_device_is_recorded_as_pending_and_gets_nothing() {
    let (a, c) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    fs::write(root_a.join("secret.txt"), b"not for c").unwrap();
    let root_c = c.add_folder("docs", "docs");
    let running_a = a.serve();
    // c knows a; a does not know c.
    let _running_c = knock_on(&c, &a, running_a.port);
    let c_id = c.id();
    wait_until("a lists c as pending", 30, || {
        a.ok(["device", "pending", "--json"]).contains(&c_id)
    });
    let pending: serde_json::Value =
        serde_json::from_str(&a.ok(["device", "pending", "--json"])).unwrap();
    assert_eq!(pending[0]["id"], c_id.as_str());
    assert!(
        pending[0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!root_c.join("secret.txt").exists(), "nothing is exchanged");
    assert!(a.log().contains("unknown device"), "{}", a.log());
}

#[test]
fn a_folder_offered_but_not_shared_waits_as_pending_until_accepted() {
    let (a, b, root_a, root_b) = two_devices();
    let photos_a = a.add_labeled_folder("photos", "photos", "Holiday photos");
    fs::write(photos_a.join("cat.jpg"), b"meow").unwrap();
    pair(&a, &b, None);
    share(&a, &b);
    share(&b, &a);
    a.ok(["folder", "share", "photos", &b.id()]);
    let running_b = b.serve();
    pair_address(&a, &b, running_b.port);
    let running_a = a.serve();
    let a_id = a.id();
    wait_until("b lists photos as pending", 30, || {
        b.ok(["folder", "pending", "--json"]).contains("photos")
    });
    let pending: serde_json::Value =
        serde_json::from_str(&b.ok(["folder", "pending", "--json"])).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["id"], "photos");
    assert_eq!(pending[0]["label"], "Holiday photos");
    assert_eq!(pending[0]["device"], a_id.as_str());
    // "docs", shared both ways, is not pending and syncs; nothing of photos is created.
    fs::write(root_a.join("doc.txt"), b"doc").unwrap();
    wait_until("docs syncs", 30, || root_b.join("doc.txt").exists());
    assert!(!b.path("photos").exists());

    // Accepting: add the folder with a local path and share it back.
    running_b.stop();
    let photos_b = b.add_folder("photos", "photos");
    b.ok(["folder", "share", "photos", &a_id]);
    assert_eq!(b.ok(["folder", "pending", "--json"]).trim(), "[]");
    // The restarted b gets a new port that a does not know: b dials a instead.
    pair_address(&b, &a, running_a.port);
    let _running_b = b.serve();
    wait_until("photos arrive", 30, || photos_b.join("cat.jpg").exists());
    assert_eq!(fs::read(photos_b.join("cat.jpg")).unwrap(), b"meow");
    drop(running_a);
}

#[test]
fn a_case_only_rename_leaves_one_file_with_the_new_name() {
    let (a, b, root_a, root_b) = two_devices();
    fs::write(root_a.join("Readme.txt"), b"read me").unwrap();
    let _running = connect(&a, &b);
    wait_until("b has Readme.txt", 30, || {
        root_b.join("Readme.txt").exists()
    });
    fs::rename(root_a.join("Readme.txt"), root_a.join("README.txt")).unwrap();
    wait_for_same_tree("the rename reaches b", 30, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_b.join("README.txt")).unwrap(), b"read me");
    assert!(!root_b.join("Readme.txt").exists());
}

#[test]
fn a_chain_of_three_carries_changes_end_to_end() {
    // a <-> b <-> c: a and c only know b.
    let (a, b, c) = (Device::init(), Device::init(), Device::init());
    let roots: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|d| d.add_folder("docs", "docs"))
        .collect();
    let running_b = {
        pair(&a, &b, None);
        pair(&c, &b, None);
        for (x, y) in [(&a, &b), (&b, &a), (&b, &c), (&c, &b)] {
            x.ok(["folder", "share", "docs", &y.id()]);
        }
        b.serve()
    };
    pair_address(&a, &b, running_b.port);
    pair_address(&c, &b, running_b.port);
    let _running_a = a.serve();
    let _running_c = c.serve();
    fs::write(roots[0].join("from-a.txt"), b"hello from a").unwrap();
    fs::write(roots[2].join("from-c.txt"), b"hello from c").unwrap();
    wait_until("c has a's file", 30, || {
        roots[2].join("from-a.txt").exists()
    });
    wait_until("a has c's file", 30, || {
        roots[0].join("from-c.txt").exists()
    });
    wait_until("all three equal", 30, || {
        tree(&roots[0]) == tree(&roots[1]) && tree(&roots[1]) == tree(&roots[2])
    });
    drop(running_b);
}

#[test]
fn concurrent_edits_converge_with_a_conflict_copy_everywhere() {
    let (a, b, root_a, root_b) = two_devices();
    fs::write(root_a.join("notes.txt"), b"original").unwrap();
    let [running_a, running_b] = connect(&a, &b);
    wait_until("b has notes.txt", 30, || tree(&root_b) == tree(&root_a));
    assert!(running_a.stop().success());
    assert!(running_b.stop().success());

    // Both edit while apart; b's edit is the later one and wins.
    fs::write(root_a.join("notes.txt"), b"edited on a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::write(root_b.join("notes.txt"), b"edited on b, later").unwrap();

    let running_b = b.serve();
    pair_address(&a, &b, running_b.port);
    let _running_a = a.serve();
    wait_until("both converge with a conflict copy", 40, || {
        let (ta, tb) = (tree(&root_a), tree(&root_b));
        ta == tb && ta.keys().any(|k| k.contains(".sync-conflict-"))
    });
    let names: Vec<String> = tree(&root_a).into_keys().collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        fs::read(root_a.join("notes.txt")).unwrap(),
        b"edited on b, later"
    );
    let copy = names
        .iter()
        .find(|n| n.contains(".sync-conflict-"))
        .unwrap();
    assert!(
        copy.starts_with("notes.sync-conflict-") && copy.ends_with(".txt"),
        "{copy}"
    );
    assert_eq!(fs::read(root_b.join(copy)).unwrap(), b"edited on a");
}

#[test]
fn a_daemon_killed_mid_transfer_resumes_and_leaves_nothing_behind() {
    let (a, b, root_a, root_b) = two_devices();
    let big = noise(9, 256 << 20);
    fs::write(root_a.join("big.bin"), &big).unwrap();
    fs::write(root_b.join("mine.txt"), b"b's own file").unwrap();
    let [running_a, running_b] = connect(&a, &b);
    // The restarted b gets a new port that a does not know: b dials a instead.
    pair_address(&b, &a, running_a.port);

    let temp = root_b.join(".peerfold.big.bin.tmp");
    wait_until("b is part-way through big.bin", 60, || {
        fs::metadata(&temp).is_ok_and(|m| m.len() >= 32 << 20)
    });
    running_b.kill();
    let served_before = a.log().matches("served block").count();
    assert!(temp.exists(), "the partial temp file survives the kill");
    assert!(!root_b.join("big.bin").exists());

    let _running_b = b.serve();
    wait_until("b has big.bin", 120, || {
        fs::metadata(root_b.join("big.bin")).is_ok_and(|m| m.len() == big.len() as u64)
    });
    assert_eq!(
        blake3::hash(&fs::read(root_b.join("big.bin")).unwrap()),
        blake3::hash(&big)
    );
    assert!(!temp.exists(), "no temp file left");
    assert_eq!(fs::read(root_b.join("mine.txt")).unwrap(), b"b's own file");
    wait_for_same_tree("both agree", 30, (&root_a, &a), (&root_b, &b));

    // Blocks written before the kill were not requested again: the requests served overall
    // stay close to the number of blocks (the kill can lose the ones in flight, at most
    // 128 per file).
    let blocks = serde_json::from_str::<serde_json::Value>(&a.ok(["ls", "docs", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "big.bin")
        .unwrap()["blocks"]
        .as_array()
        .unwrap()
        .len();
    let served = a.log().matches("served block").count();
    assert!(served_before > 64, "{served_before} blocks before the kill");
    assert!(
        served <= blocks + 128,
        "{served} requests for {blocks} blocks"
    );
}

/// Two devices with "docs" of the given types, synced once (a's file reached b).
fn typed_pair(
    type_a: &str,
    type_b: &str,
) -> (
    Device,
    Device,
    std::path::PathBuf,
    std::path::PathBuf,
    [crate::support::Running; 2],
) {
    let (a, b, root_a, root_b) = two_devices();
    for (device, folder_type) in [(&a, type_a), (&b, type_b)] {
        let path = device.home().join("config.toml");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(
            &path,
            text.replace(
                "type = \"sendreceive\"",
                &format!("type = \"{folder_type}\""),
            ),
        )
        .unwrap();
    }
    fs::write(root_a.join("from-a.txt"), b"a's version").unwrap();
    let [running_a, running_b] = connect(&a, &b);
    wait_for_same_tree("b receives a's file", 30, (&root_a, &a), (&root_b, &b));
    (a, b, root_a, root_b, [running_a, running_b])
}

/// Edits on `device` that must be noticed there (two local files afterwards).
fn edit_locally(device: &Device, root: &std::path::Path) {
    fs::write(root.join("from-a.txt"), b"local edit").unwrap();
    fs::write(root.join("only-here.txt"), b"new here").unwrap();
    wait_until("the local change is indexed", 30, || {
        let status: serde_json::Value =
            serde_json::from_str(&device.ok(["status", "--json"])).unwrap();
        status["folders"][0]["local"]["files"] == 2
    });
    // Give a wrongly propagating change time to show up before checking it did not.
    std::thread::sleep(std::time::Duration::from_secs(3));
}

#[test]
fn a_receive_only_folder_keeps_its_local_changes_to_itself() {
    let (a, b, root_a, root_b, _running) = typed_pair("sendreceive", "receiveonly");
    edit_locally(&b, &root_b);
    assert_eq!(fs::read(root_a.join("from-a.txt")).unwrap(), b"a's version");
    assert!(!root_a.join("only-here.txt").exists());
    assert_eq!(fs::read(root_b.join("from-a.txt")).unwrap(), b"local edit");
    // a's new changes still reach b.
    fs::write(root_a.join("second.txt"), b"more from a").unwrap();
    wait_until("b receives a's second file", 30, || {
        root_b.join("second.txt").exists()
    });

    // Revert: b gives up its changes; they stay in its versions directory.
    let said = b.ok(["folder", "revert", "docs"]);
    assert!(said.contains("Reverted 2 "), "{said}");
    wait_for_same_tree(
        "b is back to the global state",
        30,
        (&root_a, &a),
        (&root_b, &b),
    );
    assert_eq!(fs::read(root_b.join("from-a.txt")).unwrap(), b"a's version");
    let versions = root_b.join(".peerfold/versions");
    assert_eq!(
        fs::read(versions.join("from-a.txt")).unwrap(),
        b"local edit"
    );
    assert_eq!(
        fs::read(versions.join("only-here.txt")).unwrap(),
        b"new here"
    );
    // Only receive-only folders revert.
    let refused = a.fails(1, ["folder", "revert", "docs"]);
    assert!(refused.contains("receiveonly"), "{refused}");
}

#[test]
fn a_send_only_folder_never_takes_remote_changes() {
    let (a, b, root_a, root_b, _running) = typed_pair("sendonly", "sendreceive");
    edit_locally(&b, &root_b);
    assert_eq!(fs::read(root_a.join("from-a.txt")).unwrap(), b"a's version");
    assert!(!root_a.join("only-here.txt").exists());
    // a's own changes still go out.
    fs::write(root_a.join("second.txt"), b"more from a").unwrap();
    wait_until("b receives a's second file", 30, || {
        root_b.join("second.txt").exists()
    });

    // Override: a's state wins everywhere; b keeps what it loses as versions.
    let said = a.ok(["folder", "override", "docs"]);
    assert!(said.contains("Overrode 2 "), "{said}");
    wait_for_same_tree("b has a's state again", 30, (&root_a, &a), (&root_b, &b));
    assert_eq!(fs::read(root_b.join("from-a.txt")).unwrap(), b"a's version");
    assert!(!root_b.join("only-here.txt").exists());
    let versions = root_b.join(".peerfold/versions");
    assert_eq!(
        fs::read(versions.join("only-here.txt")).unwrap(),
        b"new here"
    );
    let refused = b.fails(1, ["folder", "override", "nope"]);
    assert!(refused.contains("no folder"), "{refused}");
}
