//! A Syncthing relay protocol v1 server (strelaysrv's behaviour, so stock Syncthing clients
//! work with it): devices that cannot reach each other directly both connect to the relay,
//! and it copies the bytes of their (end-to-end encrypted) connection between them.
//!
//! One TCP port serves two modes. Protocol mode (TLS, client certificate = device ID): a
//! device joins permanently and waits for invitations, or asks once for a session with a
//! joined device. Session mode (plaintext): each side joins the session with its single-use
//! key, and the relay splices the two sockets. The wire format lives in
//! `peerfold_protocol::relay`, shared with the daemon's relay client.
//!
//! # Layout
//! - [`Server`] (`server.rs`): binds the ports, the accept loop, the first-byte peek that
//!   picks the mode, the TLS handshake timeout, graceful shutdown.
//! - `protocol_mode.rs`: one TLS connection: join (pings, invitations) or connect request.
//! - `registry.rs`: the joined devices and their invitation outboxes.
//! - `session.rs`: session keys, the wait for both sides, session-mode joins.
//! - `splice.rs`: copying a session's bytes both ways, with idle timeouts and rate limits.
//! - `framing.rs`: reading and writing relay messages on a stream.
//! - `limits.rs`: token buckets (per-IP connect requests, byte rates).
//! - `stats.rs` and `status.rs`: the counters and the `/status` JSON endpoint.
//! - From `peerfold-server-kit` (shared with the discovery server): the STUN responder on
//!   the relay's port number over UDP (`--no-stun` turns it off), so devices learn their
//!   public UDP address, and the relay's certificate, made once in the data directory.
//! - [`config`]: the runtime [`Config`] and the command line ([`Cli`]).
//!
//! # Starting one in a test
//! ```no_run
//! # async fn example() -> Result<(), peerfold_relay::Error> {
//! let data = std::env::temp_dir().join("relay-example");
//! let server = peerfold_relay::Server::bind(peerfold_relay::Config::testing(&data)).await?;
//! let url = server.url(); // relay://127.0.0.1:PORT/?id=RELAY-ID
//! # let _ = url;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod config;
mod error;
mod framing;
mod limits;
mod protocol_mode;
mod registry;
mod server;
mod session;
mod splice;
mod stats;
mod status;

pub use config::{Cli, Config, ConfigError};
pub use error::Error;
pub use server::Server;
