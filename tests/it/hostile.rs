//! A hostile peer, written with the protocol crate and quinn, against a real daemon.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::wire::{self, message::Body};

use crate::support::{Device, wait_until};
use crate::wire_peer::{file_entry, handshake, next, send, serving_docs_to, share_docs_with};

/// An entry of `data` in one block.
fn file(name: &str, data: &[u8]) -> wire::FileInfo {
    file_entry(name, data, data.len().max(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_sending_invalid_requests_is_disconnected() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let (connection, _tx, _rx) = handshake(&evil, a_id, running.port).await;
    let mut refused = 0;
    for i in 0..150u64 {
        let Ok((mut tx, mut rx)) = connection.open_bi().await else {
            break;
        };
        send(
            &mut tx,
            Body::Request(wire::Request {
                id: i,
                folder: "docs".into(),
                name: "../outside".into(),
                offset: 0,
                size: 10,
                hash: vec![0; 32],
                skip: 0,
            }),
        )
        .await;
        let _ = tx.finish();
        match next(&mut rx, &mut BytesMut::new()).await {
            Some(wire::Message {
                body: Some(Body::Response(r)),
            }) => {
                assert_eq!(r.code, wire::ErrorCode::InvalidFile as i32);
                refused += 1;
            }
            _ => break,
        }
    }
    let reason = tokio::time::timeout(std::time::Duration::from_secs(10), connection.closed())
        .await
        .expect("the daemon closes the connection");
    assert!(
        reason
            .to_string()
            .contains("too many invalid block requests"),
        "{reason}"
    );
    assert!((90..=110).contains(&refused), "{refused} refusals first");
    assert!(a.log().contains("too many invalid block requests"));
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_a_bad_block_is_fetched_again() {
    let evil = Identity::generate().unwrap();
    let a = Device::init();
    let root = a.add_folder("docs", "docs");
    let outside = a.path("outside");
    fs::create_dir(&outside).unwrap();
    share_docs_with(&a, &evil);
    let running = a.serve();
    let a_id: DeviceId = a.id().parse().unwrap();

    let (connection, mut tx, _rx) = handshake(&evil, a_id, running.port).await;
    // Serve blocks: the first answer for ok.txt is garbage, later ones are right.
    let good = b"the right content".to_vec();
    let asked = Arc::new(AtomicUsize::new(0));
    let server = {
        let (connection, good, asked) = (connection.clone(), good.clone(), asked.clone());
        tokio::spawn(async move {
            while let Ok((mut tx, mut rx)) = connection.accept_bi().await {
                let mut buf = BytesMut::new();
                let Some(wire::Message {
                    body: Some(Body::Request(request)),
                }) = next(&mut rx, &mut buf).await
                else {
                    continue;
                };
                let n = asked.fetch_add(1, Ordering::SeqCst);
                let data = if n == 0 {
                    b"THE WRONG CONTENT".to_vec()
                } else {
                    good.clone()
                };
                send(
                    &mut tx,
                    Body::Response(wire::Response {
                        id: request.id,
                        data: data.into(),
                        code: 0,
                    }),
                )
                .await;
                let _ = tx.finish();
            }
        })
    };

    let mut link = file("link", b"");
    link.kind = wire::FileKind::Symlink as i32;
    link.symlink_target = outside.to_string_lossy().into_owned();
    let files = vec![
        file("../escape", b"x"),
        file("/etc/escape", b"x"),
        file("a/../../escape", b"x"),
        file("nul\0name", b"x"),
        file(".peerfold/evil", b"x"),
        link,
        file("link/through-symlink", b"x"),
        file("ok.txt", &good),
    ];
    send(
        &mut tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files,
        }),
    )
    .await;

    let ok = root.join("ok.txt");
    let got = tokio::task::spawn_blocking(move || {
        wait_until("ok.txt arrives with the right content", 40, || {
            fs::read(&ok).is_ok_and(|data| data == b"the right content")
        });
    })
    .await;
    got.unwrap();
    assert!(
        asked.load(Ordering::SeqCst) >= 2,
        "the bad block was fetched again"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!a.path("escape").exists());
    assert!(!root.join(".peerfold/evil").exists());
    assert!(
        fs::symlink_metadata(root.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let log = a.log();
    assert!(log.contains("refused an index entry"), "{log}");
    assert!(log.contains("failed its hash"), "{log}");
    assert!(log.contains("symlink"), "{log}");
    server.abort();
    connection.close(0u32.into(), b"done");
    drop(running);
}

/// `/rest/folder/errors` of "docs" as (path, error) pairs.
fn folder_errors(api: &crate::api::Api) -> Vec<(String, String)> {
    api.get("/rest/folder/errors?folder=docs")["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("path"), text("error"))
        })
        .collect()
}

/// Waits until `/rest/folder/errors` lists exactly `paths` (in the API's order, by name).
async fn wait_for_errors(api: Arc<crate::api::Api>, what: &'static str, paths: Vec<String>) {
    tokio::task::spawn_blocking(move || {
        wait_until(what, 30, || {
            let listed: Vec<String> = folder_errors(&api).into_iter().map(|(p, _)| p).collect();
            listed == paths
        });
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_index_entries_are_listed_as_folder_errors_until_the_peer_mends_them() {
    let evil = Identity::generate().unwrap();
    let (a, running, a_id) = serving_docs_to(&[&evil]);
    let api = Arc::new(crate::api::Api::of(&a, &running));
    let (connection, mut tx, _rx) = handshake(&evil, a_id, running.port).await;

    // A long name with a terminal escape in it: listed cut and escaped, never logged.
    let long = format!("\u{1b}[2J{}/../x", "long".repeat(300));
    let mut wrong_size = file("wrong-size.txt", b"abc");
    wrong_size.size = 5;
    let files = vec![
        file("../escape", b"x"),
        file("/etc/escape", b"x"),
        file(&long, b"x"),
        file("nul\0name", b"x"),
        wrong_size,
        file("fine.txt", b""),
    ];
    send(
        &mut tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files,
        }),
    )
    .await;
    let shown_long = format!("\\u{{1b}}[2J{}…", "long".repeat(49));
    let mut expected: Vec<String> = ["../escape", "/etc/escape", "nul\\0name", "wrong-size.txt"]
        .map(String::from)
        .into();
    expected.push(shown_long.clone());
    expected.sort();
    wait_for_errors(api.clone(), "the malformed entries are listed", expected).await;
    let listed = folder_errors(&api);
    for (path, error) in &listed {
        assert!(path.len() <= 210, "{path}");
        assert!(!path.contains('\u{1b}') && !path.contains('\0'), "{path:?}");
        assert!(
            error.contains("refused from") && error.len() < 300,
            "{error}"
        );
    }
    let why = |name: &str| &listed.iter().find(|(p, _)| p == name).unwrap().1;
    assert!(
        why("wrong-size.txt").contains("malformed entry"),
        "{listed:?}"
    );
    assert!(why("../escape").contains("'..'"), "{listed:?}");
    let human = a.ok(["status"]);
    assert!(human.contains("wrong-size.txt"), "{human}");
    let log = a.log();
    assert!(log.contains("refused malformed index entries"), "{log}");
    assert!(
        !log.contains(&"long".repeat(60)),
        "the log echoes a peer's name"
    );

    // A valid entry for the name mends it; the rest stay listed.
    send(
        &mut tx,
        Body::IndexUpdate(wire::IndexUpdate {
            folder: "docs".into(),
            files: vec![file("wrong-size.txt", b"")],
        }),
    )
    .await;
    let mut expected: Vec<String> = ["../escape", "/etc/escape", "nul\\0name"]
        .map(String::from)
        .into();
    expected.push(shown_long);
    expected.sort();
    wait_for_errors(api.clone(), "the mended entry leaves the list", expected).await;

    // A full index without the bad names replaces everything the peer said.
    send(
        &mut tx,
        Body::Index(wire::Index {
            folder: "docs".into(),
            files: vec![file("fine.txt", b"")],
        }),
    )
    .await;
    wait_for_errors(api.clone(), "a full index clears the list", vec![]).await;
    connection.close(0u32.into(), b"done");
    drop(running);
}
