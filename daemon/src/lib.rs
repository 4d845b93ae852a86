#![recursion_limit = "256"]
//! The peerfold daemon and command-line tool.
//!
//! # Layout
//! The sync engine itself is the `peerfold-engine` crate; this crate holds the binary and the
//! adapters over it.
//! - `api`: the REST API (Syncthing's paths and JSON shapes).
//! - [`cli`]: argument definitions and the commands.
//! - `control`: the local control socket (`peerfold status`, override, revert).

mod api;
mod auto_accept;
pub mod cli;
mod control;
pub mod daemon;
mod events;
mod folder_actions;
mod live_config;
mod net;
mod options;
mod puller;
mod summary;
mod watch;
