//! What a paired peer may announce and what the daemon makes of it, played at the wire
//! level against a real daemon: only the 0o777 part of permissions is applied (and recorded,
//! and announced again), and names not in NFC are refused like the scanner refuses them.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::BytesMut;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::api::Api;
use crate::support::wait_until;
use crate::wire_peer::{handshake_keeping_buffer, next, send, serving_docs_to};
use crate::wire_server::{from_files, serve_blocks};

/// An entry `evil` announces as its first version of `name`.
fn announced(evil: &Identity, name: &str, kind: wire::FileKind, data: &[u8]) -> wire::FileInfo {
    let me = evil.device_id().short().0;
    wire::FileInfo {
        name: name.into(),
        kind: kind as i32,
        size: data.len() as u64,
        permissions: 0o644,
        modified_s: 1_700_000_000,
        sequence: 1,
        version: Some(wire::Vector {
            counters: vec![wire::Counter { id: me, value: 1 }],
        }),
        blocks: if data.is_empty() {
            vec![]
        } else {
            vec![wire::BlockInfo {
                offset: 0,
                size: data.len() as u32,
                hash: blake3::hash(data).as_bytes().to_vec(),
            }]
        },
        modified_by: me,
        ..Default::default()
    }
}

/// Every entry the daemon announces on the control stream: until it has announced `name`
/// (within 30 s), then until two seconds pass without a message.
async fn announced_by_daemon(
    rx: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    name: &str,
) -> Vec<wire::FileInfo> {
    let mut out: Vec<wire::FileInfo> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = out.iter().any(|i| i.name == name);
        let wait = if seen {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, next(rx, buf)).await {
            Ok(Some(message)) => match message.body {
                Some(Body::Index(index)) => out.extend(index.files),
                Some(Body::IndexUpdate(update)) => out.extend(update.files),
                _ => {}
            },
            _ => break,
        }
    }
    assert!(
        out.iter().any(|i| i.name == name),
        "the daemon announced {name:?}"
    );
    out
}

/// Percent-encodes a query value byte by byte (names here are not ASCII).
fn query_value(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn mode(path: &std::path::Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_setgid_and_sticky_bits_from_a_peer_are_not_applied() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let root = a.path("docs");
    let (connection, mut tx, mut rx, mut buf) =
        handshake_keeping_buffer(&evil, a_id, running.port).await;
    let data = b"#!/bin/sh\necho owned\n".to_vec();
    let server = serve_blocks(
        connection.clone(),
        from_files(HashMap::from([("suid.sh".to_owned(), data.clone())])),
    );
    let mut suid = announced(&evil, "suid.sh", wire::FileKind::File, &data);
    suid.permissions = 0o4755;
    let mut sgid = announced(&evil, "sgid-dir", wire::FileKind::Directory, b"");
    sgid.permissions = 0o2775;
    let mut sticky = announced(&evil, "sticky-dir", wire::FileKind::Directory, b"");
    sticky.permissions = 0o1777;
    send(
        &mut tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files: vec![sgid, sticky, suid],
        }),
    )
    .await;

    let file = root.join("suid.sh");
    let api = Api::of(&a, &running);
    tokio::task::block_in_place(|| {
        // On disk, and recorded (the record follows the rename).
        wait_until("suid.sh arrives and is recorded", 40, || {
            fs::read(&file).is_ok_and(|d| d == b"#!/bin/sh\necho owned\n")
                && api.get("/rest/db/file?folder=docs&file=suid.sh")["local"].is_object()
        })
    });
    assert_eq!(format!("{:o}", mode(&file)), "755", "the file's mode");
    assert_eq!(format!("{:o}", mode(&root.join("sgid-dir"))), "775");
    assert_eq!(format!("{:o}", mode(&root.join("sticky-dir"))), "777");

    // The index holds what is on disk, for the local and the peer's entry alike.
    for (name, expected) in [
        ("suid.sh", "0755"),
        ("sgid-dir", "0775"),
        ("sticky-dir", "0777"),
    ] {
        let info = api.get(&format!("/rest/db/file?folder=docs&file={name}"));
        assert_eq!(info["local"]["permissions"], expected, "{name}: {info}");
        assert_eq!(info["global"]["permissions"], expected, "{name}: {info}");
    }
    // A scan sees no difference, and what the daemon announces (again) is the masked mode
    // with the peer's version: nothing bounces back as a change of this device.
    let scan = api.ok_json("POST", "/rest/db/scan?folder=docs", serde_json::json!({}));
    assert_eq!(
        scan["changed"], false,
        "a scan after the pull changes nothing"
    );
    let echoed = announced_by_daemon(&mut rx, &mut buf, "suid.sh").await;
    let evil_short = evil.device_id().short().0;
    for info in &echoed {
        assert_eq!(
            info.permissions & 0o7000,
            0,
            "{} announced as {:o}",
            info.name,
            info.permissions
        );
        let counters = &info.version.as_ref().unwrap().counters;
        assert!(
            counters.iter().all(|c| c.id == evil_short),
            "{} came back as a change here: {counters:?}",
            info.name
        );
    }
    drop(server);
    connection.close(0u32.into(), b"done");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_not_in_nfc_are_refused_and_never_written() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let root = a.path("docs");
    let (connection, mut tx, mut rx, mut buf) =
        handshake_keeping_buffer(&evil, a_id, running.port).await;
    // "café.txt" with the accent as a combining character (NFD), a directory and a file
    // inside an NFD directory, and one honest file in the same batch.
    let nfd_file = "cafe\u{301}.txt";
    let nfd_dir = "re\u{301}sume\u{301}";
    let nfd_child = "re\u{301}sume\u{301}/cv.txt";
    let files = HashMap::from([
        (nfd_file.to_owned(), b"nfd".to_vec()),
        (nfd_child.to_owned(), b"child".to_vec()),
        ("plain.txt".to_owned(), b"plain".to_vec()),
    ]);
    let server = serve_blocks(connection.clone(), from_files(files));
    send(
        &mut tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files: vec![
                announced(&evil, nfd_file, wire::FileKind::File, b"nfd"),
                announced(&evil, nfd_dir, wire::FileKind::Directory, b""),
                announced(&evil, nfd_child, wire::FileKind::File, b"child"),
                announced(&evil, "plain.txt", wire::FileKind::File, b"plain"),
            ],
        }),
    )
    .await;
    let plain = root.join("plain.txt");
    tokio::task::spawn_blocking(move || {
        wait_until("plain.txt arrives", 40, || {
            fs::read(&plain).is_ok_and(|d| d == b"plain")
        })
    })
    .await
    .unwrap();

    // Nothing of the NFD names reached the disk, in either form.
    let on_disk: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut expected = vec![".peerfold".to_owned(), "plain.txt".to_owned()];
    let mut sorted = on_disk.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "the folder holds only the honest file");
    // Neither the peer's entry nor a local one was stored.
    let api = Api::of(&a, &running);
    for name in [nfd_file, nfd_dir, nfd_child] {
        let path = format!("/rest/db/file?folder=docs&file={}", query_value(name));
        let (status, json) = api.call("GET", &path);
        assert_eq!(status, 404, "{name:?} is not in the index: {json}");
    }
    // The connection stays (a refused entry is not a protocol error), the refusal does not
    // come back as a change, and the folder is not left needing anything.
    api.ok_json("POST", "/rest/db/scan?folder=docs", serde_json::json!({}));
    let echoed = announced_by_daemon(&mut rx, &mut buf, "plain.txt").await;
    let names: Vec<&str> = echoed.iter().map(|i| i.name.as_str()).collect();
    assert!(
        names.iter().all(|n| *n == "plain.txt"),
        "announced {names:?}"
    );
    let status = api.get("/rest/db/status?folder=docs");
    assert_eq!(status["needFiles"], 0, "{status}");
    // The three refusals are listed with the folder's errors (and nothing else is).
    assert_eq!(status["errors"], 3, "{status}");
    let errors = api.get("/rest/folder/errors?folder=docs");
    for error in errors["errors"].as_array().unwrap() {
        let why = error["error"].as_str().unwrap();
        assert!(why.contains("normalization form C"), "{errors}");
    }
    assert!(
        connection.close_reason().is_none(),
        "the daemon kept the connection"
    );
    drop(server);
    connection.close(0u32.into(), b"done");
    drop(running);
}
