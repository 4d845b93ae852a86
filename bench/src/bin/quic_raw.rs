//! The raw QUIC reference for `bench/sync.py` (a): one quinn connection with peerfold's TLS
//! (`peerfold_protocol::tls`: TLS 1.3, Ed25519 certificates pinned by device ID, ALPN
//! `peerfold/1`) and the daemon's receive window, one stream, as fast as quinn moves it.
//! No framing, no files, no hashing: what the link and QUIC allow, for the daemon's figure
//! to be read against.
//!
//! - `recv --listen ADDR`: prints `device ID: ...` and `listening on ...`, takes one
//!   connection, reads its stream to the end, answers with the byte count and prints one
//!   JSON line (bytes, seconds, MB/s).
//! - `send --to ADDR --device ID --bytes N`: sends N bytes on one stream and prints the same
//!   line, timed until the receiver confirmed it read them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{PeerDecision, PeerPolicy, client_config, server_config};
use serde_json::json;

/// The daemon's connection-wide windows on a link with a short round trip, like the
/// bench's veth pair (`Windows` in engine/src/peers/flow.rs).
const RECEIVE_WINDOW: u32 = 4 << 20;
const SEND_WINDOW: u64 = 1 << 20;

#[derive(Debug, Parser)]
#[command(about = "raw QUIC throughput with peerfold's TLS, for bench/sync.py")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive one stream and report.
    Recv {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send N bytes on one stream and report.
    Send {
        #[arg(long)]
        to: SocketAddr,
        /// The receiver's device ID (it prints it).
        #[arg(long)]
        device: String,
        #[arg(long)]
        bytes: u64,
    },
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.receive_window(RECEIVE_WINDOW.into());
    transport.send_window(SEND_WINDOW);
    Arc::new(transport)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let identity = Identity::generate()?;
    match Cli::parse().command {
        Command::Recv { listen } => recv(&identity, listen).await,
        Command::Send { to, device, bytes } => {
            let device: DeviceId = device.parse().context("--device")?;
            send(&identity, to, device, bytes).await
        }
    }
}

async fn recv(identity: &Identity, listen: SocketAddr) -> anyhow::Result<()> {
    let tls = server_config(identity, PeerPolicy::new(|_| PeerDecision::Accept))?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    let endpoint = quinn::Endpoint::server(server, listen)?;
    println!("device ID: {}", identity.device_id());
    println!("listening on {}", endpoint.local_addr()?);
    let Some(incoming) = endpoint.accept().await else {
        bail!("the endpoint closed");
    };
    let connection = incoming.await?;
    let (mut send, mut recv) = connection.accept_bi().await?;
    let started = Instant::now();
    let mut total = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    send.write_all(&total.to_be_bytes()).await?;
    send.finish()?;
    connection.closed().await;
    report("recv", total, seconds);
    Ok(())
}

async fn send(
    identity: &Identity,
    to: SocketAddr,
    device: DeviceId,
    bytes: u64,
) -> anyhow::Result<()> {
    let tls = client_config(identity, PeerPolicy::only(device))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport());
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client);
    let connection = endpoint
        .connect(to, peerfold_protocol::identity::CERT_COMMON_NAME)?
        .await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let chunk = bytes::Bytes::from(vec![0x5a; 1 << 20]);
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        send.write_chunk(chunk.slice(..n)).await?;
        left -= n as u64;
    }
    send.finish()?;
    let mut confirmed = [0u8; 8];
    recv.read_exact(&mut confirmed).await?;
    let seconds = started.elapsed().as_secs_f64();
    if u64::from_be_bytes(confirmed) != bytes {
        bail!(
            "the receiver read {} of {bytes} bytes",
            u64::from_be_bytes(confirmed)
        );
    }
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    report("send", bytes, seconds);
    Ok(())
}

fn report(side: &str, bytes: u64, seconds: f64) {
    println!(
        "{}",
        json!({"side": side, "bytes": bytes, "seconds": seconds, "mb_s": bytes as f64 / seconds / 1e6})
    );
}
