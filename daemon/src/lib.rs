//! The peerfold daemon and command-line tool.
//!
//! # Layout
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

pub mod cli;
pub mod config;
mod control;
pub mod daemon;
mod folder_actions;
mod fsutil;
pub mod home;
pub mod index;
pub mod names;
mod net;
pub mod planner;
mod puller;
pub mod scanner;
pub mod store;
pub mod sync;
mod watch;
