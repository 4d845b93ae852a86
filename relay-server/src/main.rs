//! `peerfold-relay`: the command line around [`peerfold_relay::Server`]. Parses flags, sets
//! up logging, starts the relay, prints what clients need, and stops on SIGINT/SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use peerfold_relay::{Cli, Server};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Cli::parse().resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        println!("device ID: {}", server.device_id());
        // The bound address as is (0.0.0.0 when listening everywhere): set --ext-address
        // to print, and invite to, the address clients should use.
        println!("relay URL: {}", server.url());
        if let Some(addr) = server.status_addr() {
            println!("status on http://{addr}/status");
        }
        peerfold_server_kit::shutdown_signal()
            .await
            .context("listening for SIGINT and SIGTERM")?;
        tracing::info!("shutting down");
        server.shutdown().await;
        anyhow::Ok(())
    })
}
