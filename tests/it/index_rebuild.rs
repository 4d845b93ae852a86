//! Issue 10 item 10, DESIGN 4.8: losing `index.db` costs a rescan, never data.
//!
//! A file syncs between two daemons; a stops; the file changes on a; a's index is deleted
//! and rebuilt by `peerfold scan`; a starts again. The content written on a must come out
//! as a newer version or as a conflict, never as an older or an equal one: it survives on
//! both devices (as the file or as a conflict copy) and the devices converge.

use std::fs;
use std::path::Path;

use crate::support::{Device, tree, wait_until};
use crate::sync::{connect_devices, status_of};

const NAME: &str = "notes.txt";
const ORIGINAL: &[u8] = b"original, written on a";
const EDITED_ON_B: &[u8] = b"edited on b before the stop";
const EDITED_ON_A: &[u8] = b"edited on a while it was stopped";

/// The contents of every regular file in the folder, `.peerfold` excluded.
fn contents(root: &Path) -> Vec<Vec<u8>> {
    tree(root)
        .into_iter()
        .filter(|(_, what)| what.starts_with("file "))
        .filter_map(|(name, _)| fs::read(root.join(name)).ok())
        .collect()
}

/// Both daemons say the folder is idle and needs nothing.
fn in_sync(device: &Device) -> bool {
    let status = status_of(device);
    status["folders"][0]["state"] == "idle" && status["folders"][0]["need"]["files"] == 0
}

fn delete_index(device: &Device) {
    for suffix in ["", "-wal", "-shm"] {
        let path = device.home().join(format!("index.db{suffix}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
    }
}

/// The scenario; `edited_on_b` makes b hold a version of its own (a higher one than a's
/// first) before a stops.
fn rebuilt_index_keeps_the_local_edit(edited_on_b: bool) {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_b = b.add_folder("docs", "docs");
    fs::write(root_a.join(NAME), ORIGINAL).unwrap();
    let [running_a, running_b] = connect_devices(&a, &b);
    wait_until("b has a's file", 30, || {
        fs::read(root_b.join(NAME)).is_ok_and(|d| d == ORIGINAL)
    });
    if edited_on_b {
        fs::write(root_b.join(NAME), EDITED_ON_B).unwrap();
        wait_until("a has b's edit", 30, || {
            fs::read(root_a.join(NAME)).is_ok_and(|d| d == EDITED_ON_B)
        });
    }
    wait_until("both in sync before the stop", 30, || {
        in_sync(&a) && in_sync(&b)
    });
    assert!(running_a.stop().success(), "{}", a.log());

    fs::write(root_a.join(NAME), EDITED_ON_A).unwrap();
    delete_index(&a);
    let report = a.scan("docs");
    assert_eq!(report["added"], 1, "{report}");

    // b kept running: a dials it at the address it had.
    let _running_a = a.serve();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (ca, cb) = (contents(&root_a), contents(&root_b));
        let converged = tree(&root_a) == tree(&root_b) && in_sync(&a) && in_sync(&b);
        if converged && ca.iter().any(|c| c == EDITED_ON_A) {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "a's edit did not survive on both devices, or they did not converge\n\
                 --- a: {:#?}\n--- b: {:#?}\n--- a's contents: {:?}\n--- b's contents: {:?}\n\
                 --- a's status: {}\n--- b's status: {}\n--- a's index: {:#?}\n--- b's index: {:#?}",
                tree(&root_a),
                tree(&root_b),
                ca.iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>(),
                cb.iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>(),
                status_of(&a),
                status_of(&b),
                a.ls("docs"),
                b.ls("docs"),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The two lines of history both survive: a's edit won (it is the later one) and b's
    // own edit, if it made one, is a conflict copy on both.
    assert_eq!(fs::read(root_b.join(NAME)).unwrap(), EDITED_ON_A);
    let expected = if edited_on_b { 2 } else { 1 };
    assert_eq!(contents(&root_b).len(), expected, "{:?}", tree(&root_b));
    if edited_on_b {
        assert!(contents(&root_b).iter().any(|c| c == EDITED_ON_B));
    }
    drop(running_b);
}

#[test]
fn a_rebuilt_index_outdates_the_version_the_peer_holds_of_this_device() {
    rebuilt_index_keeps_the_local_edit(false);
}

#[test]
fn a_rebuilt_index_conflicts_with_a_higher_version_of_the_peer() {
    rebuilt_index_keeps_the_local_edit(true);
}
