//! A peer played by the test at the wire level: the protocol crate and quinn, no daemon.
//! Used by the hostile-peer tests and the stall test.

use std::sync::Arc;

use bytes::BytesMut;
use peerfold_protocol::DeviceId;
use peerfold_protocol::framing::FrameCodec;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{self, PeerPolicy};
use peerfold_protocol::wire::{self, message::Body};

use crate::support::{Device, Running};

/// A file entry for `content` cut in blocks of `block` bytes, at version {99: 1} (a third
/// device's first version).
pub(crate) fn file_entry(name: &str, content: &[u8], block: usize) -> wire::FileInfo {
    wire::FileInfo {
        name: name.into(),
        kind: wire::FileKind::File as i32,
        size: content.len() as u64,
        permissions: 0o644,
        modified_s: 1_700_000_000,
        sequence: 1,
        version: Some(wire::Vector {
            counters: vec![wire::Counter { id: 99, value: 1 }],
        }),
        blocks: content
            .chunks(block)
            .enumerate()
            .map(|(i, data)| wire::BlockInfo {
                offset: (i * block) as u64,
                size: data.len() as u32,
                hash: blake3::hash(data).as_bytes().to_vec(),
            })
            .collect(),
        modified_by: 99,
        ..Default::default()
    }
}

/// Adds `peer` as a device of `device` and shares "docs" with it.
pub(crate) fn share_docs_with(device: &Device, peer: &Identity) {
    let id = peer.device_id().to_string();
    device.ok(["device", "add", &id]);
    device.ok(["folder", "share", "docs", &id]);
}

/// A device with folder "docs" shared with each of `peers`, running, and its ID.
pub(crate) fn serving_docs_to(peers: &[&Identity]) -> (Device, Running, DeviceId) {
    let a = Device::init();
    a.add_folder("docs", "docs");
    for peer in peers {
        share_docs_with(&a, peer);
    }
    let running = a.serve();
    let a_id = a.id().parse().unwrap();
    (a, running, a_id)
}

/// Sends one framed message on `stream`.
pub(crate) async fn send(stream: &mut quinn::SendStream, body: Body) {
    try_send(stream, body).await.unwrap();
}

/// Like [`send`], for a caller that records a failed write instead of panicking.
pub(crate) async fn try_send(
    stream: &mut quinn::SendStream,
    body: Body,
) -> Result<(), quinn::WriteError> {
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode(&wire::Message { body: Some(body) }, &mut buf)
        .unwrap();
    stream.write_all(&buf).await
}

/// The next framed message on `stream` (`buf` keeps what was read past it); `None` when the
/// stream ends or fails.
pub(crate) async fn next(
    stream: &mut quinn::RecvStream,
    buf: &mut BytesMut,
) -> Option<wire::Message> {
    let codec = FrameCodec::default();
    loop {
        if let Some(message) = codec.decode(buf).unwrap() {
            return Some(message);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match stream.read(&mut chunk).await.ok()? {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => return None,
        }
    }
}

/// Connects to the daemon at `port` as `evil`, offering "docs", and completes the
/// Hello/ClusterConfig exchange.
pub(crate) async fn handshake(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let (connection, tx, rx, _) = handshake_keeping_buffer(evil, a_id, port).await;
    (connection, tx, rx)
}

/// The Hello the test's peer sends unless told otherwise.
pub(crate) fn plain_hello() -> wire::Hello {
    wire::Hello {
        device_name: "evil".into(),
        client_name: "test".into(),
        client_version: "0".into(),
    }
}

/// The ClusterConfig that offers "docs", with `peer`'s own index at ID 1.
pub(crate) fn offering_docs(peer: DeviceId) -> wire::ClusterConfig {
    wire::ClusterConfig {
        folders: vec![wire::Folder {
            id: "docs".into(),
            devices: vec![wire::FolderDevice {
                id: peer.as_bytes().to_vec(),
                index_id: 1,
                max_sequence: 9,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The control stream of a connection, after the handshake, with what was read past the
/// daemon's Hello.
pub(crate) type Control = (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    BytesMut,
);

/// Like [`handshake`], and also returns what was read on the control stream past the
/// daemon's Hello (its ClusterConfig, maybe index batches), for a caller that goes on
/// reading that stream with [`next`].
pub(crate) async fn handshake_keeping_buffer(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
) -> Control {
    try_handshake(
        evil,
        a_id,
        port,
        plain_hello(),
        offering_docs(evil.device_id()),
    )
    .await
    .expect("the daemon completes the handshake")
}

/// Like [`handshake_keeping_buffer`], announcing the peer's own index of "docs" under
/// `index_id` (a new one tells the daemon the peer's index was rebuilt).
pub(crate) async fn handshake_with_index_id(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
    index_id: u64,
) -> Control {
    let mut config = offering_docs(evil.device_id());
    config.folders[0].devices[0].index_id = index_id;
    try_handshake(evil, a_id, port, plain_hello(), config)
        .await
        .expect("the daemon completes the handshake")
}

/// Connects to the daemon at `port` as `evil`, sends `hello` and `config`, and waits for
/// the daemon's Hello; `None` if any of it fails.
pub(crate) async fn try_handshake(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
    hello: wire::Hello,
    config: wire::ClusterConfig,
) -> Option<Control> {
    let connection = try_connect(evil, a_id, port, quinn::TransportConfig::default()).await?;
    let (tx, rx, buf) = try_handshake_on(&connection, hello, config).await?;
    Some((connection, tx, rx, buf))
}

/// The exchange of [`try_handshake`] on a connection made by [`connect`].
pub(crate) async fn try_handshake_on(
    connection: &quinn::Connection,
    hello: wire::Hello,
    config: wire::ClusterConfig,
) -> Option<(quinn::SendStream, quinn::RecvStream, BytesMut)> {
    let (mut tx, mut rx) = connection.open_bi().await.ok()?;
    try_send(&mut tx, Body::Hello(hello)).await.ok()?;
    try_send(&mut tx, Body::ClusterConfig(config)).await.ok()?;
    let mut buf = BytesMut::new();
    match next(&mut rx, &mut buf).await?.body {
        Some(Body::Hello(_)) => Some((tx, rx, buf)),
        _ => None,
    }
}

/// A QUIC connection to the daemon at `port` as `evil` with the given transport settings
/// (say, a small stream receive window), before any stream is opened.
pub(crate) async fn connect(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
    transport: quinn::TransportConfig,
) -> quinn::Connection {
    try_connect(evil, a_id, port, transport)
        .await
        .expect("the daemon accepts the connection")
}

async fn try_connect(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
    transport: quinn::TransportConfig,
) -> Option<quinn::Connection> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(
        tls::client_config(evil, PeerPolicy::only(a_id)).unwrap(),
    ))
    .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
        .connect(format!("127.0.0.1:{port}").parse().unwrap(), "peerfold")
        .unwrap()
        .await
        .ok()
}
