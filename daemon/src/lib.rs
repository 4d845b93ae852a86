#![recursion_limit = "256"]
//! The peerfold daemon and command-line tool.
//!
//! # Layout
//! - `api`: the REST API (Syncthing's paths and JSON shapes).
//! - [`cli`]: argument definitions and the commands (thin: they call the modules below).
//! - [`home`]: the home directory (identity, `config.toml`, `index.db`).
//! - [`config`]: the configuration file.
//! - [`store`]: the SQLite index; the only module with SQL.
//! - [`scanner`]: turns a folder on disk into index entries.
//! - [`planner`]: pure sync decisions: the global version of a name and what to do about it.
//! - [`sync`]: what a folder needs, from the store through the planner.
//! - [`index`]: the entry types the others share.
//! - `control`: the local control socket (`peerfold status`, override, revert).
//! - `folder_actions`: override (send-only) and revert (receive-only).

mod api;
mod auto_accept;
pub mod cli;
pub mod config;
mod control;
pub mod daemon;
mod events;
mod folder_actions;
mod fsutil;
pub mod home;
pub mod index;
mod live_config;
pub mod names;
mod net;
mod options;
pub mod planner;
mod puller;
pub mod scanner;
pub mod store;
mod summary;
pub mod sync;
mod watch;
