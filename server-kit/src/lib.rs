//! What peerfold's self-hosted servers share (`discovery-server/`, `relay-server/`): both
//! depend on `peerfold-protocol` and this crate only, never on the engine.
//!
//! # Layout
//! - [`identity`]: the server's certificate and key, made on first start in its data
//!   directory and kept, so its device ID (which clients pin with `?id=`) survives restarts.
//! - [`stun`]: the STUN responder each server runs on UDP at its own port number.
//! - [`shutdown_signal`]: SIGINT or SIGTERM, for the binaries.

#![warn(missing_docs)]

pub mod identity;
pub mod stun;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (service managers, `docker stop`).
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
