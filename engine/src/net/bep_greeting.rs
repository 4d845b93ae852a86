//! A Syncthing device that dials us (it found our address through a discovery server both
//! use) negotiates `bep/1.0`, not `peerfold/1`. Rather than failing its handshake, we
//! exchange BEP's pre-authentication Hello, so Syncthing lists this device as pending by
//! name, then close: peerfold does not speak BEP past the Hello.

use std::time::Duration;

use peerfold_protocol::bep_hello::{self, BEP_ALPN, Hello};

/// How long the exchange may take before the connection is closed anyway.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Syncthing gets to read our Hello and hang up before we close.
const LINGER: Duration = Duration::from_secs(2);

/// Whether the connection negotiated Syncthing's protocol.
pub(super) fn is_bep(connection: &quinn::Connection) -> bool {
    connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|alpn| alpn == BEP_ALPN)
}

/// Why the Hellos were not exchanged.
#[derive(Debug, thiserror::Error)]
pub(super) enum GreetingError {
    #[error("no stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
    #[error("reading its Hello: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error(transparent)]
    Hello(#[from] bep_hello::BepHelloError),
    #[error("sending our Hello: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("sending our Hello: {0}")]
    Finish(#[from] quinn::ClosedStream),
    #[error("no Hello within {GREETING_TIMEOUT:?}")]
    Timeout,
}

/// Reads the Syncthing device's Hello on the stream it opens and answers with ours (named
/// `our_name`, the configured device name); returns
/// what it said of itself. Closes the connection either way.
pub(super) async fn greet(
    connection: &quinn::Connection,
    our_name: &str,
) -> Result<Hello, GreetingError> {
    let outcome = tokio::time::timeout(GREETING_TIMEOUT, exchange(connection, our_name))
        .await
        .unwrap_or(Err(GreetingError::Timeout));
    if outcome.is_ok() {
        // Syncthing hangs up once it has our Hello; closing at once could discard it.
        let _ = tokio::time::timeout(LINGER, connection.closed()).await;
    }
    connection.close(0u32.into(), b"peerfold speaks peerfold/1, not BEP");
    outcome
}

async fn exchange(connection: &quinn::Connection, our_name: &str) -> Result<Hello, GreetingError> {
    let (mut send, mut recv) = connection.accept_bi().await?;
    let mut header = [0u8; 6];
    recv.read_exact(&mut header).await?;
    let length = bep_hello::framed_len(&header)?;
    let mut framed = header.to_vec();
    framed.resize(length, 0);
    recv.read_exact(&mut framed[6..]).await?;
    let theirs = bep_hello::decode(&framed)?;
    let ours = Hello {
        device_name: our_name.to_owned(),
        client_name: "peerfold".to_owned(),
        client_version: format!("v{}", env!("CARGO_PKG_VERSION")),
        num_connections: 0,
        timestamp: 0,
    };
    send.write_all(&bep_hello::encode(&ours)).await?;
    send.finish()?;
    Ok(theirs)
}
