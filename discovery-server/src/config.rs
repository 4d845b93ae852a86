//! What the server is told to do: the runtime [`Config`], the command line ([`Cli`]) and the
//! optional TOML file with the same keys. Command-line flags win over the file, the file over
//! the defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Everything a [`Server`](crate::Server) needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to accept connections (HTTPS, or plain HTTP with [`Config::http`]).
    pub listen: SocketAddr,
    /// Where the server's certificate and key, and the SQLite database, live.
    pub data: PathBuf,
    /// Which store keeps the announcements.
    pub store: StoreConfig,
    /// Plain HTTP behind a TLS-terminating reverse proxy, which passes the client's address
    /// and certificate in headers. Only safe when nothing but the proxy can reach `listen`.
    pub http: bool,
    /// An extra plain-HTTP listener that serves only `/metrics` (and `/ping`).
    pub metrics_listen: Option<SocketAddr>,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Announce and lookup requests each client IP may make per second, on average.
    pub rate_limit: f64,
    /// How many requests a client IP may make in a burst before the rate limit bites.
    pub rate_burst: u32,
    /// Bound on the TLS handshake, on reading a request's headers and body, and on an idle
    /// connection: slow or silent clients are cut off after this.
    pub read_timeout: Duration,
    /// Largest announce body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// How often expired addresses and records not seen for 7 days are removed.
    pub sweep_interval: Duration,
    /// 404 replies per second the adaptive `Retry-After` aims for (stdiscosrv's default).
    pub desired_not_found_rate: f64,
    /// Whether STUN Binding requests are answered on UDP at the listen port number.
    pub stun: bool,
}

/// Where announcements are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// A Redis server (`redis://HOST:PORT[/DB]`), which several servers may share.
    Redis(String),
    /// A SQLite database; `None` means `discovery.sqlite` in the data directory.
    Sqlite(Option<PathBuf>),
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for this server.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: toml::de::Error,
    },
    /// A `--store` value that names no known store.
    #[error("unknown store {0:?}: use sqlite, sqlite:PATH or redis://HOST:PORT")]
    Store(String),
    /// A value outside what the server can work with.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            data: default_data_dir(),
            store: StoreConfig::Sqlite(None),
            http: false,
            metrics_listen: None,
            max_connections: 10_000,
            // Generous for a device (one announce an hour, a lookup per peer now and then)
            // and for many devices behind one NAT, tight for a flood.
            rate_limit: 10.0,
            rate_burst: 100,
            read_timeout: Duration::from_secs(5),
            max_body_bytes: 16 * 1024,
            sweep_interval: Duration::from_secs(300),
            desired_not_found_rate: 1000.0,
            stun: true,
        }
    }
}

impl Config {
    /// A config for tests: listens on `127.0.0.1:0` (STUN on, on the same port number), keeps
    /// its data in `data`, SQLite store.
    pub fn testing(data: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: data.to_owned(),
            ..Self::default()
        }
    }

    fn validate(self) -> Result<Self, ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid("max-connections must be at least 1"));
        }
        if !self.rate_limit.is_finite() || self.rate_limit <= 0.0 || self.rate_burst == 0 {
            return Err(ConfigError::Invalid(
                "rate-limit and rate-burst must be positive",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid("max-body-bytes must be positive"));
        }
        Ok(self)
    }
}

/// `$XDG_DATA_HOME/peerfold-discovery` (`~/.local/share/...` on Linux), else
/// `./peerfold-discovery-data` where no home is known (e.g. a bare service account).
fn default_data_dir() -> PathBuf {
    dirs::data_dir().map_or_else(
        || PathBuf::from("peerfold-discovery-data"),
        |dir| dir.join("peerfold-discovery"),
    )
}

impl FromStr for StoreConfig {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("redis://") || text.starts_with("redis+unix://") {
            Ok(Self::Redis(text.to_owned()))
        } else if text == "sqlite" {
            Ok(Self::Sqlite(None))
        } else if let Some(path) = text.strip_prefix("sqlite:") {
            Ok(Self::Sqlite(Some(PathBuf::from(path))))
        } else {
            Err(ConfigError::Store(text.to_owned()))
        }
    }
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(url) => f.write_str(url),
            Self::Sqlite(None) => f.write_str("sqlite"),
            Self::Sqlite(Some(path)) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

/// The command line of `peerfold-discovery`.
#[derive(Debug, Default, Parser)]
#[command(name = "peerfold-discovery", version, about)]
pub struct Cli {
    /// TOML file with the same keys as these flags (e.g. `listen = "0.0.0.0:8443"`);
    /// flags given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8443].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the server's certificate, key and SQLite database
    /// [default: $XDG_DATA_HOME/peerfold-discovery].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// `sqlite` (in the data directory), `sqlite:PATH` or `redis://HOST:PORT[/DB]`
    /// [default: sqlite].
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Serve plain HTTP behind a TLS-terminating reverse proxy that passes X-Forwarded-For,
    /// X-Client-Port and the client certificate (X-SSL-Cert and friends).
    #[arg(long)]
    pub http: bool,
    /// Also serve /metrics on this plain-HTTP address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Connections served at once [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Requests per second per client IP, on average [default: 10].
    #[arg(long, value_name = "PER_SECOND")]
    pub rate_limit: Option<f64>,
    /// Requests a client IP may burst before the rate limit bites [default: 100].
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// Do not answer STUN Binding requests on UDP at the listen port number.
    #[arg(long)]
    pub no_stun: bool,
}

/// The `--config` file: the flags' names as keys, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    store: Option<String>,
    http: Option<bool>,
    metrics_listen: Option<SocketAddr>,
    max_connections: Option<usize>,
    rate_limit: Option<f64>,
    rate_burst: Option<u32>,
    no_stun: Option<bool>,
}

impl Cli {
    /// The runtime configuration: these flags over the `--config` file over the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let defaults = Config::default();
        let store = match self.store.or(file.store) {
            Some(text) => text.parse()?,
            None => defaults.store.clone(),
        };
        Config {
            listen: self.listen.or(file.listen).unwrap_or(defaults.listen),
            data: self.data.or(file.data).unwrap_or(defaults.data.clone()),
            store,
            http: self.http || file.http.unwrap_or(defaults.http),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections),
            rate_limit: self
                .rate_limit
                .or(file.rate_limit)
                .unwrap_or(defaults.rate_limit),
            rate_burst: self
                .rate_burst
                .or(file.rate_burst)
                .unwrap_or(defaults.rate_burst),
            stun: !(self.no_stun || file.no_stun.unwrap_or(false)),
            ..defaults
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disco.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nstore = \"redis://127.0.0.1:6379\"\nmax-connections = 7\nhttp = true\n",
        )
        .unwrap();
        let config = Cli {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Cli::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            config.store,
            StoreConfig::Redis("redis://127.0.0.1:6379".into())
        );
        assert_eq!(config.max_connections, 7);
        assert!(config.http);
        assert_eq!(config.rate_burst, Config::default().rate_burst);

        std::fs::write(&path, "listen = 5\n").unwrap();
        let error = Cli {
            config: Some(path.clone()),
            ..Cli::default()
        }
        .resolve()
        .unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        assert!(
            Cli {
                config: Some(path),
                ..Cli::default()
            }
            .resolve()
            .is_err()
        );
    }

    #[test]
    fn store_values() {
        assert_eq!(
            "sqlite".parse::<StoreConfig>().unwrap(),
            StoreConfig::Sqlite(None)
        );
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreConfig>().unwrap(),
            StoreConfig::Sqlite(Some("/tmp/x.db".into()))
        );
        assert!("postgres://x".parse::<StoreConfig>().is_err());
        let zero = Cli {
            max_connections: Some(0),
            ..Cli::default()
        };
        assert!(zero.resolve().is_err());
    }
}
