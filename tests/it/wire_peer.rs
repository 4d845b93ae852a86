//! A peer played by the test at the wire level: the protocol crate and quinn, no daemon.
//! Used by the hostile-peer tests and the stall test.

use std::sync::Arc;

use bytes::BytesMut;
use peerfold_protocol::DeviceId;
use peerfold_protocol::framing::FrameCodec;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{self, PeerPolicy};
use peerfold_protocol::wire::{self, message::Body};

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

/// Like [`handshake`], and also returns what was read on the control stream past the
/// daemon's Hello (its ClusterConfig, maybe index batches), for a caller that goes on
/// reading that stream with [`next`].
pub(crate) async fn handshake_keeping_buffer(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    BytesMut,
) {
    handshake_with_index_id(evil, a_id, port, 1).await
}

/// Like [`handshake_keeping_buffer`], announcing the peer's own index of "docs" under
/// `index_id` (a new one tells the daemon the peer's index was rebuilt).
pub(crate) async fn handshake_with_index_id(
    evil: &Identity,
    a_id: DeviceId,
    port: u16,
    index_id: u64,
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    BytesMut,
) {
    let evil_id = evil.device_id();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(
        tls::client_config(evil, PeerPolicy::only(a_id)).unwrap(),
    ))
    .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = endpoint
        .connect(format!("127.0.0.1:{port}").parse().unwrap(), "peerfold")
        .unwrap()
        .await
        .unwrap();
    let (mut tx, mut rx) = connection.open_bi().await.unwrap();
    send(
        &mut tx,
        Body::Hello(wire::Hello {
            device_name: "evil".into(),
            client_name: "test".into(),
            client_version: "0".into(),
        }),
    )
    .await;
    send(
        &mut tx,
        Body::ClusterConfig(wire::ClusterConfig {
            folders: vec![wire::Folder {
                id: "docs".into(),
                devices: vec![wire::FolderDevice {
                    id: evil_id.as_bytes().to_vec(),
                    index_id,
                    max_sequence: 9,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }),
    )
    .await;
    let mut buf = BytesMut::new();
    assert!(matches!(
        next(&mut rx, &mut buf).await.unwrap().body,
        Some(Body::Hello(_))
    ));
    (connection, tx, rx, buf)
}
