//! A Syncthing Global Discovery v3 server: devices announce where they can be reached over
//! HTTPS with their own certificate (which proves their device ID) and look each other up by ID.
//!
//! The wire format and the address fix-up live in `peerfold_protocol::discovery`, shared with
//! the daemon's client, so both sides read the same JSON the same way.
//!
//! # Layout
//! - [`Server`] (`server.rs`): binds the listener(s), runs the accept loop with the connection
//!   cap, TLS handshake and idle timeouts, and shuts down gracefully.
//! - `http.rs`: one request in, one response out: announce, lookup, `/ping`, `/metrics`.
//! - `proxy.rs`: the client address and certificate a reverse proxy passes in headers (`--http`).
//! - [`store`]: the [`Store`] trait, the record merge/expiry rules, and its SQLite and Redis
//!   implementations.
//! - `limits.rs`: the per-IP token bucket (429) and the adaptive not-found `Retry-After`.
//! - `metrics.rs`: the Prometheus registry.
//! - From `peerfold-server-kit` (shared with the relay): the STUN responder on UDP at the
//!   listen port number (`--no-stun` turns it off), so devices learn their public UDP
//!   address, and the server's certificate, made once in the data directory.
//! - [`config`]: the runtime [`Config`], the command line ([`Cli`]) and the TOML file.
//! - [`clock`]: the injected wall clock, so tests check expiry without sleeping.
//!
//! # Starting one in a test
//! ```no_run
//! # async fn example() -> Result<(), peerfold_discovery::Error> {
//! let data = std::env::temp_dir().join("disco-example");
//! let server = peerfold_discovery::Server::bind(peerfold_discovery::Config::testing(&data)).await?;
//! let url = server.url(); // https://127.0.0.1:PORT/?id=SERVER-ID
//! # let _ = url;
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod clock;
pub mod config;
mod error;
mod http;
mod limits;
mod metrics;
mod proxy;
mod server;
pub mod store;

pub use clock::{Clock, ManualClock};
pub use config::{Cli, Config, ConfigError, StoreConfig};
pub use error::Error;
pub use server::Server;
pub use store::{Store, StoreError};
