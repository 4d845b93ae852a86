//! Pending offers are bounded against a real daemon: paired peers offering folders by the
//! hundred with 8 KiB labels over reconnects, and unknown identities knocking by the hundred.
//! The tables stay at their caps, the newest offers are the ones kept, labels are cut.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{self, PeerPolicy};
use peerfold_protocol::wire::{self, message::Body};
use serde_json::Value;

use crate::support::{Device, wait_until};
use crate::wire_peer::{next, send};

/// The daemon's caps (engine/src/store/write.rs): offers kept per device and in total, the
/// bytes of a label kept, devices that knocked kept.
const PER_DEVICE: usize = 256;
const TOTAL: usize = 1024;
const LABEL_BYTES: usize = 256;
const DEVICES: usize = 100;

/// A QUIC client endpoint on loopback.
fn client() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn client_config(identity: &Identity, daemon: DeviceId) -> quinn::ClientConfig {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(
        tls::client_config(identity, PeerPolicy::only(daemon)).unwrap(),
    ))
    .unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Connects as `identity`, sends Hello and a ClusterConfig offering `folders`, and waits for
/// the daemon's Hello.
async fn offer(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    daemon: DeviceId,
    port: u16,
    folders: Vec<wire::Folder>,
) -> quinn::Connection {
    let connection = endpoint
        .connect_with(
            client_config(identity, daemon),
            format!("127.0.0.1:{port}").parse().unwrap(),
            "peerfold",
        )
        .unwrap()
        .await
        .unwrap();
    let (mut tx, mut rx) = connection.open_bi().await.unwrap();
    let hello = wire::Hello {
        device_name: "offers".into(),
        client_name: "test".into(),
        client_version: "0".into(),
    };
    send(&mut tx, Body::Hello(hello)).await;
    send(
        &mut tx,
        Body::ClusterConfig(wire::ClusterConfig {
            folders,
            block_list_deltas: false,
        }),
    )
    .await;
    let mut buf = BytesMut::new();
    assert!(matches!(
        next(&mut rx, &mut buf).await.unwrap().body,
        Some(Body::Hello(_))
    ));
    connection
}

/// `peerfold pending --json`: (devices, folders).
fn pending(device: &Device) -> (Vec<Value>, Vec<Value>) {
    let json: Value = serde_json::from_str(&device.ok(["pending", "--json"])).unwrap();
    let list = |key: &str| json[key].as_array().cloned().unwrap_or_default();
    (list("devices"), list("folders"))
}

fn folder_id(round: usize, device: usize, i: usize) -> String {
    format!("r{round}-d{device}-f{i:03}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_from_paired_peers_stay_within_their_caps_newest_kept() {
    let a = Device::init();
    a.add_folder("docs", "docs");
    let peers: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
    for peer in &peers {
        a.ok(["device", "add", &peer.device_id().to_string()]);
    }
    let running = a.serve();
    let daemon: DeviceId = a.id().parse().unwrap();
    let endpoint = client();
    let label = |id: &str| format!("{id} {}", "L".repeat(8 << 10));
    // Two rounds: every peer connects and offers 256 new folders, one after the other.
    for round in 0..2 {
        for (d, peer) in peers.iter().enumerate() {
            let folders = (0..PER_DEVICE)
                .map(|i| {
                    let id = folder_id(round, d, i);
                    wire::Folder {
                        label: label(&id),
                        id,
                        ..Default::default()
                    }
                })
                .collect();
            let connection = offer(&endpoint, peer, daemon, running.port, folders).await;
            let last = folder_id(round, d, PER_DEVICE - 1);
            let a2 = &a;
            tokio::task::block_in_place(|| {
                wait_until("the offers of this connection are recorded", 60, || {
                    pending(a2).1.iter().any(|f| f["id"] == last.as_str())
                });
                let (_, folders) = pending(a2);
                assert!(folders.len() <= TOTAL, "{} pending folders", folders.len());
                let mine = peer.device_id().to_string();
                let per_device = folders
                    .iter()
                    .filter(|f| f["device"] == mine.as_str())
                    .count();
                assert!(per_device <= PER_DEVICE, "{per_device} from one device");
            });
            connection.close(0u32.into(), b"next");
        }
    }
    // The newest 1,024 are kept: the last round of peers 1-4 (peer 0's last round came
    // first, so it went out first).
    let (_, folders) = pending(&a);
    let kept: BTreeSet<String> = folders
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = (1..5)
        .flat_map(|d| (0..PER_DEVICE).map(move |i| folder_id(1, d, i)))
        .collect();
    assert_eq!(kept.len(), TOTAL);
    assert_eq!(kept, expected);
    for f in &folders {
        let label = f["label"].as_str().unwrap();
        let id = f["id"].as_str().unwrap();
        assert!(
            label.len() <= LABEL_BYTES,
            "a label of {} bytes",
            label.len()
        );
        assert!(label.starts_with(id), "{label:?}");
    }
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_knocking_stay_within_their_cap_newest_kept() {
    let a = Device::init();
    a.add_folder("docs", "docs");
    let running = a.serve();
    let daemon: DeviceId = a.id().parse().unwrap();
    let endpoint = client();
    let strangers: Vec<Identity> = (0..DEVICES + 50)
        .map(|_| Identity::generate().unwrap())
        .collect();
    for stranger in &strangers {
        let connection = endpoint
            .connect_with(
                client_config(stranger, daemon),
                format!("127.0.0.1:{}", running.port).parse().unwrap(),
                "peerfold",
            )
            .unwrap()
            .await
            .unwrap();
        // The daemon records the device, then closes the connection.
        tokio::time::timeout(Duration::from_secs(20), connection.closed())
            .await
            .expect("the daemon turns an unknown device away");
    }
    let (devices, _) = pending(&a);
    let kept: BTreeSet<String> = devices
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let newest: BTreeSet<String> = strangers[strangers.len() - DEVICES..]
        .iter()
        .map(|s| s.device_id().to_string())
        .collect();
    assert_eq!(kept.len(), DEVICES, "{} pending devices", kept.len());
    assert_eq!(kept, newest, "the newest knocks are kept");
    drop(running);
}
