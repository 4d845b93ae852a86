//! Scanning folders into the index, through the real binary.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Device, noise};

fn by_name(entries: Vec<Value>) -> BTreeMap<String, Value> {
    entries
        .into_iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e))
        .collect()
}

fn seq(entry: &Value) -> u64 {
    entry["sequence"].as_u64().unwrap()
}

/// The one counter of an entry only this device changed: a Unix time in seconds (counters
/// advance to `max(previous + 1, now)`).
fn own_counter(entry: &Value) -> u64 {
    let counters = entry["version"].as_array().unwrap();
    assert_eq!(counters.len(), 1, "{entry}");
    let value = counters[0]["value"].as_u64().unwrap();
    assert!(value > 1_600_000_000, "{entry}");
    value
}

fn block_hashes(entry: &Value) -> Vec<String> {
    entry["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hash"].as_str().unwrap().to_owned())
        .collect()
}

/// Every block of `entry` hashes to what the file holds at its offset, and they tile it.
fn assert_blocks_match_file(entry: &Value, path: &Path) {
    let data = fs::read(path).unwrap();
    let mut expected_offset = 0u64;
    for block in entry["blocks"].as_array().unwrap() {
        let offset = block["offset"].as_u64().unwrap();
        let size = block["size"].as_u64().unwrap();
        assert_eq!(offset, expected_offset, "blocks are contiguous");
        let slice = &data[offset as usize..(offset + size) as usize];
        assert_eq!(
            block["hash"].as_str().unwrap(),
            blake3::hash(slice).to_hex().as_str()
        );
        expected_offset += size;
    }
    assert_eq!(expected_offset, data.len() as u64, "blocks cover the file");
    assert_eq!(entry["size"].as_u64().unwrap(), data.len() as u64);
}

#[test]
fn rescan_records_exactly_the_changes() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    fs::create_dir(root.join("dir")).unwrap();
    fs::write(root.join("keep.txt"), b"unchanged").unwrap();
    fs::write(root.join("modify.txt"), b"version one").unwrap();
    fs::write(root.join("insert.bin"), noise(1, 1 << 20)).unwrap();
    fs::write(root.join("truncate.bin"), noise(2, 512 << 10)).unwrap();
    fs::write(root.join("rename-from.txt"), noise(3, 100_000)).unwrap();
    fs::write(root.join("delete.txt"), b"bye").unwrap();
    fs::write(root.join("dir/nested.txt"), b"nested").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("keep.txt", root.join("link")).unwrap();

    let first = device.scan("docs");
    assert_eq!(first["added"], 10);
    assert_eq!(first["files"], 8);
    let before = by_name(device.ls("docs"));
    assert_eq!(before.len(), 10);
    for (name, entry) in &before {
        own_counter(entry);
        assert_eq!(entry["deleted"], false);
        if entry["kind"] == "file" {
            assert_blocks_match_file(entry, &root.join(name));
        }
    }
    assert_eq!(before["link"]["kind"], "symlink");
    assert_eq!(before["link"]["symlink_target"], "keep.txt");
    assert_eq!(before["dir"]["kind"], "directory");
    assert_eq!(before["empty"]["blocks"].as_array().unwrap().len(), 0);
    let max_before = before.values().map(seq).max().unwrap();

    // Let the clock tick past the scan so same-size edits get a new modification time.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(root.join("modify.txt"), b"version two").unwrap();
    let mut data = fs::read(root.join("insert.bin")).unwrap();
    data.splice(500_000..500_000, *b"INSERTED");
    fs::write(root.join("insert.bin"), &data).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(root.join("truncate.bin"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    fs::rename(root.join("rename-from.txt"), root.join("renamed.txt")).unwrap();
    fs::remove_file(root.join("delete.txt")).unwrap();
    fs::write(root.join("dir/new.txt"), b"new").unwrap();

    let second = device.scan("docs");
    assert_eq!(second["added"], 2, "{second}");
    assert_eq!(second["changed"], 3, "{second}");
    assert_eq!(second["deleted"], 2, "{second}");
    let after = by_name(device.ls("docs"));

    let changed: HashSet<&str> = [
        "modify.txt",
        "insert.bin",
        "truncate.bin",
        "rename-from.txt",
        "renamed.txt",
        "delete.txt",
        "dir/new.txt",
    ]
    .into();
    let mut new_sequences = HashSet::new();
    for (name, entry) in &after {
        if changed.contains(name.as_str()) {
            assert!(seq(entry) > max_before, "{name} gets a new sequence");
            assert!(new_sequences.insert(seq(entry)), "sequences are unique");
            if let Some(earlier) = before.get(name) {
                assert!(own_counter(entry) > own_counter(earlier), "{name}");
            } else {
                own_counter(entry);
            }
        } else {
            assert_eq!(entry, &before[name], "{name} must not change");
        }
    }
    assert_eq!(new_sequences.len(), changed.len());
    assert_eq!(after.len(), 12);

    for tombstone in ["delete.txt", "rename-from.txt"] {
        assert_eq!(after[tombstone]["deleted"], true);
        assert_eq!(after[tombstone]["blocks"].as_array().unwrap().len(), 0);
    }
    for name in [
        "modify.txt",
        "insert.bin",
        "truncate.bin",
        "renamed.txt",
        "dir/new.txt",
    ] {
        assert_blocks_match_file(&after[name], &root.join(name));
    }
    // A rename is a new name with the old content: the very same blocks.
    assert_eq!(
        block_hashes(&after["renamed.txt"]),
        block_hashes(&before["rename-from.txt"])
    );
    // An insert leaves most blocks as they were.
    let old: HashSet<String> = block_hashes(&before["insert.bin"]).into_iter().collect();
    let new = block_hashes(&after["insert.bin"]);
    let reused = new.iter().filter(|h| old.contains(*h)).count();
    assert!(
        reused + 2 >= new.len(),
        "{reused} of {} blocks reused",
        new.len()
    );
    assert_eq!(after["truncate.bin"]["size"], 1000);

    // A third scan with no changes changes nothing.
    let third = device.scan("docs");
    assert_eq!(
        (
            third["added"].clone(),
            third["changed"].clone(),
            third["deleted"].clone()
        ),
        (0.into(), 0.into(), 0.into())
    );
    assert_eq!(by_name(device.ls("docs")), after);
}

#[test]
fn one_byte_insert_in_64_mib_changes_only_nearby_blocks() {
    let device = Device::init();
    let root = device.add_folder("big", "big");
    let path = root.join("big.bin");
    let mut data = noise(64, 64 << 20);
    fs::write(&path, &data).unwrap();
    device.scan("big");
    let before = &device.ls("big")[0];
    let old: HashSet<String> = block_hashes(before).into_iter().collect();

    data.insert(4096, 0x42);
    fs::write(&path, &data).unwrap();
    device.scan("big");
    let after = &device.ls("big")[0];
    assert_blocks_match_file(after, &path);
    let new_blocks: Vec<&Value> = after["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !old.contains(b["hash"].as_str().unwrap()))
        .collect();
    let new_bytes: u64 = new_blocks.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert!(
        !new_blocks.is_empty() && new_blocks.len() <= 2,
        "{} new blocks",
        new_blocks.len()
    );
    // The changed blocks are the ones around the insert, at the start of the file.
    for block in &new_blocks {
        assert!(block["offset"].as_u64().unwrap() < 1 << 20);
    }
    assert!(new_bytes < 1 << 20, "{new_bytes} bytes of new blocks");
}

#[test]
fn ignore_patterns_skip_names_and_mark_newly_ignored_entries() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    fs::create_dir_all(root.join("build/out")).unwrap();
    fs::write(root.join("build/out/x.o"), b"obj").unwrap();
    fs::write(root.join("a.log"), b"log").unwrap();
    fs::write(root.join("keep.log"), b"log").unwrap();
    fs::write(root.join("main.rs"), b"fn main() {}").unwrap();
    device.scan("docs");
    assert_eq!(by_name(device.ls("docs")).len(), 6);

    fs::write(root.join(".peerfoldignore"), "build/\n*.log\n!keep.log\n").unwrap();
    let report = device.scan("docs");
    assert_eq!(report["ignored"], 4, "{report}");
    let entries = by_name(device.ls("docs"));
    for name in ["build", "build/out", "build/out/x.o", "a.log"] {
        assert_eq!(entries[name]["invalid"], true, "{name}");
        assert_eq!(
            entries[name]["deleted"], false,
            "ignored is not deleted: {name}"
        );
    }
    for name in ["keep.log", "main.rs"] {
        assert_eq!(entries[name]["invalid"], false, "{name}");
    }
    assert!(!entries.contains_key(".peerfoldignore"));
    assert!(!entries.contains_key(".peerfold"));
}

#[test]
fn temp_files_and_the_marker_are_never_indexed() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    fs::write(root.join(".peerfold.x.txt.tmp"), b"partial").unwrap();
    fs::write(root.join(".peerfold/state"), b"internal").unwrap();
    fs::write(root.join("real.txt"), b"real").unwrap();
    device.scan("docs");
    let names: Vec<String> = by_name(device.ls("docs")).into_keys().collect();
    assert_eq!(names, vec!["real.txt"]);
}

#[test]
fn missing_root_or_marker_fails_and_leaves_the_index_untouched() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    fs::write(root.join("a.txt"), b"a").unwrap();
    fs::write(root.join("b.txt"), b"b").unwrap();
    device.scan("docs");
    let before = device.ls("docs");

    fs::remove_dir(root.join(".peerfold")).unwrap();
    let stderr = device.fails(1, ["scan", "docs"]);
    assert!(stderr.contains("marker"), "{stderr}");
    assert_eq!(device.ls("docs"), before);

    fs::create_dir(root.join(".peerfold")).unwrap();
    let moved = device.path("moved");
    fs::rename(&root, &moved).unwrap();
    let stderr = device.fails(1, ["scan", "docs"]);
    assert!(stderr.contains("missing"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(
        device.ls("docs"),
        before,
        "a vanished folder is not 'all deleted'"
    );

    // Back in place, nothing was lost.
    fs::rename(&moved, &root).unwrap();
    let report = device.scan("docs");
    assert_eq!(report["deleted"], 0);
    assert_eq!(device.ls("docs"), before);
}

#[test]
fn unreadable_files_and_directories_are_reported_and_kept() {
    // Runs the CLI as `nobody` when the tests run as root, so permissions bite.
    let device = Device::unprivileged();
    device.ok(["init"]);
    let root = device.add_folder("docs", "docs");
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/inner.txt"), b"inner").unwrap();
    fs::write(root.join("secret.txt"), b"secret").unwrap();
    fs::write(root.join("open.txt"), b"open").unwrap();
    device.scan("docs");
    let before = by_name(device.ls("docs"));
    assert_eq!(before.len(), 4);

    std::thread::sleep(Duration::from_millis(20));
    fs::write(root.join("secret.txt"), b"secret, changed").unwrap();
    fs::set_permissions(root.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(root.join("open.txt"), b"open, changed").unwrap();
    let out = device.run(["scan", "docs", "--json"]);
    fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret.txt"), "{stderr}");
    assert!(stderr.contains("sub"), "{stderr}");
    let report: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report[0]["issues"].as_array().unwrap().len(),
        2,
        "{report:?}"
    );

    let after = by_name(device.ls("docs"));
    assert_eq!(
        after["secret.txt"], before["secret.txt"],
        "unreadable: kept as it was"
    );
    assert_eq!(
        after["sub/inner.txt"], before["sub/inner.txt"],
        "unreadable dir: kept"
    );
    assert_eq!(after["sub/inner.txt"]["deleted"], false);
    assert_ne!(
        after["open.txt"], before["open.txt"],
        "the rest was scanned"
    );
}

#[test]
fn non_utf8_names_are_skipped_with_a_warning() {
    let device = Device::init();
    let root = device.add_folder("docs", "docs");
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    fs::write(root.join(bad), b"x").unwrap();
    fs::write(root.join("good.txt"), b"x").unwrap();
    let out = device.run(["scan", "docs"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad-\u{FFFD}-name") && stderr.contains("UTF-8"),
        "{stderr}"
    );
    let names: Vec<String> = by_name(device.ls("docs")).into_keys().collect();
    assert_eq!(names, vec!["good.txt"]);
}

#[test]
fn a_file_that_keeps_changing_is_never_indexed_with_mixed_content() {
    // Through the library: a writer appends to a large file during the whole scan.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("f");
    fs::create_dir_all(root.join(".peerfold")).unwrap();
    let path = root.join("growing.bin");
    fs::write(&path, noise(5, 32 << 20)).unwrap();
    fs::write(root.join("still.txt"), b"still").unwrap();
    let store = peerfold_engine::store::StoreHandle::open(&dir.path().join("index.db")).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(&[1; 16]).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let report = peerfold_engine::disk::scanner::scan_folder(
        &store,
        "f",
        &root,
        peerfold_protocol::ShortId(1),
        |_| {},
    )
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let store = store.reader().unwrap();

    let issue = report
        .issues
        .iter()
        .find(|i| i.name == "growing.bin")
        .expect("the changing file is reported");
    assert!(
        issue.message.contains("changed while being hashed"),
        "{issue:?}"
    );
    let folder = store.folder("f").unwrap().unwrap();
    let mut names = Vec::new();
    store
        .for_each_local_entry(folder, |e| {
            names.push(e.name);
            Ok::<(), peerfold_engine::store::StoreError>(())
        })
        .unwrap();
    assert_eq!(names, vec!["still.txt"], "not indexed with mixed content");
}

/// Every folder is watched, however many there are: all share one inotify instance (one
/// per folder hit the kernel's 128 instances per user with a few hundred folders, and the
/// rest were found only by the hourly rescan).
#[test]
fn two_hundred_folders_are_all_watched_through_one_inotify_instance() {
    let device = Device::init();
    let running = device.serve();
    let api = crate::api::Api::of(&device, &running);
    let roots: Vec<_> = (0..200)
        .map(|i| {
            let root = device.path(&format!("f{i}"));
            api.ok_json(
                "POST",
                "/rest/config/folders",
                serde_json::json!({ "id": format!("f{i}"), "path": root }),
            );
            root
        })
        .collect();
    let watching = || device.log().matches("watching").count();
    crate::support::wait_until("every folder watches", 60, || watching() >= 200);
    assert!(!device.log().contains("cannot watch"), "{}", device.log());
    let inotify = fs::read_dir(format!("/proc/{}/fd", running.pid()))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify"))
        .count();
    assert_eq!(inotify, 1, "inotify instances of the daemon");
    // A change in the last folder is noticed (the periodic rescan is an hour away).
    fs::write(roots[199].join("late.txt"), "noticed").unwrap();
    crate::support::wait_until("the change is indexed", 20, || {
        api.call("GET", "/rest/db/file?folder=f199&file=late.txt").0 == 200
    });
}
