//! The errors that stop a server from starting or shutting down cleanly. Per-request failures
//! never surface here: they become HTTP status codes.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use peerfold_protocol::identity::IdentityError;
use peerfold_protocol::tls::TlsConfigError;
use peerfold_server_kit::identity::IdentityFileError;

use crate::config::ConfigError;
use crate::store::StoreError;

/// Why the server could not start (or stop cleanly).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// The configuration was unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server's certificate and key could not be made or read.
    #[error("server identity in {path}: {source}")]
    Identity {
        /// The file involved.
        path: PathBuf,
        /// What went wrong with it.
        source: IdentityError,
    },
    /// Reading or writing the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The store could not be opened or closed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

impl From<IdentityFileError> for Error {
    fn from(e: IdentityFileError) -> Self {
        match e {
            IdentityFileError::Io { path, source } => Self::Io { path, source },
            IdentityFileError::Identity { path, source } => Self::Identity { path, source },
        }
    }
}
