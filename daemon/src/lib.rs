#![recursion_limit = "256"]
//! The peerfold daemon and command-line tool.
//!
//! # Layout
//! The sync engine itself is the `peerfold-engine` crate; this crate holds the binary and the
//! adapters over it.
//! - `api`: the REST API (Syncthing's paths and JSON shapes).
//! - [`cli`]: argument definitions and the commands.
//! - `control`: the local control socket (`peerfold status`, override, revert, edits).
//! - [`serve`]: `peerfold serve`: starts the engine, then the adapters on its handle.
//! - `options`: the options peerfold keeps, by Syncthing's names.

mod api;
pub mod cli;
mod control;
pub mod logs;
mod options;
pub mod serve;
