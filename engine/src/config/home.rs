//! The home directory: identity, configuration and index of one device.
//!
//! ```text
//! HOME/config.toml   settings, folders, devices (mode 0600: it holds the API key)
//! HOME/cert.pem      the device certificate; its SHA-256 is the device ID
//! HOME/key.pem       the private key (mode 0600)
//! HOME/index.db      the SQLite index (a cache: rebuilt by a rescan if lost)
//! ```

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use peerfold_protocol::identity::{Identity, IdentityError};

use crate::config::{Config, ConfigError};
use crate::disk::fsutil;
use crate::store::{Store, StoreError};

/// The environment variable naming the home directory.
pub const HOME_ENV: &str = "PEERFOLD_HOME";

/// A device's home directory.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

/// Problems with the home directory.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No identity yet.
    #[error("{dir} is not initialised: run `peerfold init` first")]
    NotInitialised {
        /// The home directory.
        dir: PathBuf,
    },
    /// `init` would overwrite an identity.
    #[error(
        "{path} already exists: this home already has an identity, and replacing it would \
         change the device ID (remove the home yourself if that is what you want)"
    )]
    AlreadyInitialised {
        /// The existing file.
        path: PathBuf,
    },
    /// No usable home directory could be determined.
    #[error("cannot determine a home directory: pass --home DIR or set {HOME_ENV}")]
    NoDefault,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("identity in {dir}: {source}")]
    Identity {
        /// The home directory.
        dir: PathBuf,
        /// What is wrong.
        source: IdentityError,
    },
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The index is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Home {
    /// The home at `explicit` if given, else the platform's config directory
    /// (`~/.config/peerfold` on Linux).
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self, HomeError> {
        let dir = match explicit {
            Some(dir) => dir,
            None => dirs::config_dir()
                .ok_or(HomeError::NoDefault)?
                .join("peerfold"),
        };
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// `index.db`.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("index.db")
    }

    /// True once `init` has made an identity here.
    pub fn is_initialised(&self) -> bool {
        self.cert_path().exists() || self.key_path().exists()
    }

    /// Creates the directory, a new identity, a configuration with a fresh API key, and the
    /// index. Refuses to touch a home that already has an identity.
    pub fn init(&self, configure: impl FnOnce(&mut Config)) -> Result<Identity, HomeError> {
        for path in [self.cert_path(), self.key_path()] {
            if path.exists() {
                return Err(HomeError::AlreadyInitialised { path });
            }
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| self.io(&self.dir, source))?;
        let identity = Identity::generate().map_err(|source| HomeError::Identity {
            dir: self.dir.clone(),
            source,
        })?;
        // The key first: a crash between the two leaves no certificate without its key.
        let key_path = self.key_path();
        fsutil::write_new(&key_path, identity.private_key_pem().as_bytes(), 0o600)
            .map_err(|source| self.io(&key_path, source))?;
        let cert_path = self.cert_path();
        fsutil::write_new(&cert_path, identity.certificate_pem().as_bytes(), 0o644)
            .map_err(|source| self.io(&cert_path, source))?;
        let config_path = self.config_path();
        if !config_path.exists() {
            let mut config = Config::new(default_device_name(), random_api_key());
            configure(&mut config);
            config.save(&config_path)?;
        }
        Store::open(&self.db_path())?;
        Ok(identity)
    }

    /// This device's identity.
    pub fn identity(&self) -> Result<Identity, HomeError> {
        let cert_path = self.cert_path();
        let key_path = self.key_path();
        if !cert_path.exists() && !key_path.exists() {
            return Err(HomeError::NotInitialised {
                dir: self.dir.clone(),
            });
        }
        let cert = std::fs::read(&cert_path).map_err(|source| self.io(&cert_path, source))?;
        let key = std::fs::read(&key_path).map_err(|source| self.io(&key_path, source))?;
        Identity::from_pem(&cert, &key).map_err(|source| HomeError::Identity {
            dir: self.dir.clone(),
            source,
        })
    }

    /// The configuration.
    pub fn config(&self) -> Result<Config, HomeError> {
        if !self.is_initialised() {
            return Err(HomeError::NotInitialised {
                dir: self.dir.clone(),
            });
        }
        Ok(Config::load(&self.config_path())?)
    }

    /// Replaces the configuration.
    pub fn save_config(&self, config: &Config) -> Result<(), HomeError> {
        Ok(config.save(&self.config_path())?)
    }

    /// Opens the index, creating it if it was lost.
    pub fn store(&self) -> Result<Store, HomeError> {
        if !self.is_initialised() {
            return Err(HomeError::NotInitialised {
                dir: self.dir.clone(),
            });
        }
        Ok(Store::open(&self.db_path())?)
    }

    fn io(&self, path: &Path, source: std::io::Error) -> HomeError {
        HomeError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The host name, or "peerfold" when it cannot be read.
fn default_device_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "peerfold".to_owned())
}

/// 32 characters (A-Z, 2-7) from the OS random source: never a leading `-`, which
/// `syncthing cli --gui-apikey KEY` would take for an option.
fn random_api_key() -> String {
    let mut bytes = [0u8; 20];
    // Without a working random source no key can be trusted; an empty key makes the API
    // refuse every request until one is set.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        return String::new();
    }
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys go on command lines (`syncthing cli --gui-apikey KEY`): letters and digits only.
    #[test]
    fn api_keys_are_32_letters_and_digits() {
        for _ in 0..256 {
            let key = random_api_key();
            assert_eq!(key.len(), 32);
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        }
        assert_ne!(random_api_key(), random_api_key());
    }
}
