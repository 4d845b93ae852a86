//! Issue 10 item 4: a peer claims a version counter for this device that it never issued.
//!
//! A wire-level peer announces a's own file with a's counter at 2^64-1. Before the fix the
//! daemon took it, a later local edit could not get a newer version (the counter
//! saturated), and the edit never left: an honest peer held an equal version and pulled
//! nothing, with no error anywhere.

use std::fs;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};
use serde_json::Value;

use crate::support::{Device, wait_until};
use crate::sync::{connect_devices, status_of};
use crate::wire_peer::{handshake, send};

const NAME: &str = "notes.txt";
const FIRST: &[u8] = b"first version, made on a";
const EDIT: &[u8] = b"a later edit on a";

/// a's counter in `device`'s own index entry for `NAME`, if it has one.
fn counter_of_a(device: &Device, a_short: u64) -> Option<u64> {
    let short = peerfold_protocol::ShortId(a_short).to_string();
    device.ls("docs").into_iter().find(|e| e["name"] == NAME)?["version"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == short.as_str())?["value"]
        .as_u64()
}

/// The folder errors `peerfold status` lists on a.
fn errors(a: &Device) -> Vec<Value> {
    status_of(a)["folders"][0]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `NAME` as a has it, but with a's counter at the end of its range.
fn poisoned_entry(root: &std::path::Path, a_short: u64, evil_short: u64) -> wire::FileInfo {
    let meta = fs::metadata(root.join(NAME)).unwrap();
    let modified = meta.modified().unwrap();
    let since = modified.duration_since(std::time::UNIX_EPOCH).unwrap();
    wire::FileInfo {
        name: NAME.into(),
        kind: wire::FileKind::File as i32,
        size: FIRST.len() as u64,
        permissions: 0o644,
        modified_s: since.as_secs() as i64,
        modified_ns: since.subsec_nanos(),
        sequence: 1,
        version: Some(wire::Vector {
            counters: vec![wire::Counter {
                id: a_short,
                value: u64::MAX,
            }],
        }),
        blocks: vec![wire::BlockInfo {
            offset: 0,
            size: FIRST.len() as u32,
            hash: blake3::hash(FIRST).as_bytes().to_vec(),
        }],
        modified_by: evil_short,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_this_device_never_issued_is_refused_and_later_edits_still_sync() {
    let evil = Identity::generate().unwrap();
    let evil_id = evil.device_id();
    let (a, c) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    let root_c = c.add_folder("docs", "docs");
    fs::write(root_a.join(NAME), FIRST).unwrap();
    a.ok(["device", "add", &evil_id.to_string()]);
    a.ok(["folder", "share", "docs", &evil_id.to_string()]);
    let (a, c, root_a, root_c, [running_a, running_c]) = tokio::task::spawn_blocking(move || {
        let running = connect_devices(&a, &c);
        wait_until("c has a's file", 30, || {
            fs::read(root_c.join(NAME)).is_ok_and(|d| d == FIRST)
        });
        (a, c, root_a, root_c, running)
    })
    .await
    .unwrap();
    let a_id: DeviceId = a.id().parse().unwrap();
    let a_short = a_id.short().0;

    let (connection, mut tx, _rx) = handshake(&evil, a_id, running_a.port).await;
    send(
        &mut tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files: vec![poisoned_entry(&root_a, a_short, evil_id.short().0)],
        }),
    )
    .await;

    let (a, c, root_a, root_c) = tokio::task::spawn_blocking(move || {
        // Refused (after the fix), or taken by a and passed on to c (before it).
        wait_until("a deals with the poisoned entry", 30, || {
            !errors(&a).is_empty()
                || (counter_of_a(&a, a_short) == Some(u64::MAX)
                    && counter_of_a(&c, a_short) == Some(u64::MAX))
        });
        fs::write(root_a.join(NAME), EDIT).unwrap();
        wait_until("c pulls a's later edit", 30, || {
            fs::read(root_c.join(NAME)).is_ok_and(|d| d == EDIT)
        });
        (a, c, root_a, root_c)
    })
    .await
    .unwrap();

    // The refusal is listed where `peerfold status` shows a folder's problems, and logged
    // without the peer's input.
    let listed = errors(&a);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["path"], NAME, "{listed:?}");
    let why = listed[0]["error"].as_str().unwrap();
    assert!(why.contains("counter"), "{why}");
    let human = a.ok(["status"]);
    assert!(human.contains(NAME) && human.contains("counter"), "{human}");
    let log = a.log();
    assert!(log.contains("refused an index entry"), "{log}");
    // a's version of the edit is its own and time-based, far from the end of the range.
    let counter = counter_of_a(&a, a_short).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // (A few changes within a second each add one.)
    assert!(
        counter > 1_600_000_000 && counter < now + 60,
        "a's counter is {counter}, the clock {now}"
    );
    assert_eq!(fs::read(root_a.join(NAME)).unwrap(), EDIT);
    assert_eq!(fs::read(root_c.join(NAME)).unwrap(), EDIT);
    connection.close(0u32.into(), b"done");
    drop((running_a, running_c, c));
}
