//! One device's sync engine, as a library behind one [`Engine`] handle: the index and its
//! store, the scanner and watcher, the planner, the folders' tasks, the peer sessions and
//! the transport. No HTTP, no command line, no REST JSON: those are the daemon's adapters.
//!
//! # Layout
//! - [`model`]: pure: entries, names, the planner, a name's view, counts, rewrites.
//! - [`store`]: the SQLite index; the only module with SQL.
//! - [`disk`]: the scanner, the watcher, kept versions, assembling pulled files.
//! - [`config`]: the configuration file, the home, addresses, edits.
//! - [`events`]: typed events and the log clients poll.
//! - [`folder`]: each running folder's handle and tasks.
//! - `peers`: the peer registry, sessions, the dialer.
//! - `net`: QUIC and TLS (the only module naming quinn, rustls or socket2).
//! - `engine`: the handle that composes them.

pub mod config;
pub mod disk;
mod engine;
pub mod events;
pub mod folder;
mod life;
pub mod model;
mod net;
pub mod peers;
pub mod store;
#[cfg(test)]
mod testing;

pub use engine::{
    ConfigChangeError, Engine, EngineError, FolderLookupError, IndexReset, StartOptions,
};
pub use net::NetError;
pub use net::discovery::DiscoveryMethod;
pub use net::relay::{RelayClientError, RelaySlot};
pub use net::stun::{NatType, PublicAddress};
pub use peers::rate::is_lan;
