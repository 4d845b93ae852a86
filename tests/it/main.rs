//! The workspace's integration tests: they drive the real `peerfold` binary (and, where a
//! test needs to reach inside, the library) on temporary homes and folders.
//!
//! This binary is attached to the `peerfold` package (see daemon/Cargo.toml) so cargo builds
//! the binary first and passes its path in `CARGO_BIN_EXE_peerfold`.

mod admission;
mod api;
mod api_db;
mod api_debug;
mod api_inputs;
mod api_svc;
mod big_index;
mod block_deltas;
mod browser;
mod cli;
mod clients;
mod control;
mod disk_full;
mod global_discovery;
mod gui_auth;
mod gui_browser;
mod hostile;
mod hostile_serve;
mod index_check;
mod index_rebuild;
mod introducer;
mod lan_discovery;
mod netns;
mod ns_daemon;
mod peer_entries;
mod pending_bounds;
mod poisoned_counter;
mod punch;
mod punch_bench;
mod rate_limit;
mod reconnect;
mod relay;
mod relay_syncthing;
mod replacements;
mod resolve;
mod scan;
mod settings;
mod slow_peer;
mod soak;
mod stall;
mod stun;
mod support;
mod sync;
mod syncthing_gui;
mod syncthingctl;
mod wire_peer;
mod wire_server;
