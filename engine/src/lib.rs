//! One device's sync engine, as a library: the index and its store, the scanner, the
//! planner, and (moving here next) the folders' tasks, the peer sessions and the transport.
//!
//! # Layout
//! - [`model`]: pure: entries, names, the planner.
//! - [`store`]: the SQLite index; the only module with SQL.
//! - [`disk`]: the scanner and file-system helpers.
//! - [`config`]: the configuration file and the home directory.
//! - [`folder`]: what a folder needs, from the store through the planner.

pub mod config;
pub mod disk;
pub mod folder;
pub mod model;
pub mod store;
