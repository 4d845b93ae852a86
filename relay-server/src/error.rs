//! The errors that stop a relay from starting. Per-connection failures never surface here:
//! they end that connection (with a `Response` code where the protocol has one) and are
//! logged at debug level.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use peerfold_protocol::identity::IdentityError;
use peerfold_protocol::tls::TlsConfigError;
use peerfold_server_kit::identity::IdentityFileError;

use crate::config::ConfigError;

/// Why the relay could not start.
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
    /// The relay's certificate and key could not be made or read.
    #[error("relay identity in {path}: {source}")]
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
