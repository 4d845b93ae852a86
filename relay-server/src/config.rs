//! What the relay is told to do: the runtime [`Config`] and the command line ([`Cli`]), whose
//! flags keep strelaysrv's names and defaults where it has them (`--ping-interval 1m`,
//! `--network-timeout 2m`, `--message-timeout 1m`, `--status-listen :22070`...).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Everything a [`Server`](crate::Server) needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The one TCP port of both modes (TLS protocol mode and plaintext session mode).
    pub listen: SocketAddr,
    /// Where the relay's certificate and key live (made on first start).
    pub data: PathBuf,
    /// A private relay's token; empty for a public relay.
    pub token: String,
    /// The IP put in session invitations; `None` tells clients to use the IP they reached
    /// the relay at (right unless the relay is behind a port forward to another address).
    pub ext_ip: Option<IpAddr>,
    /// The port put in session invitations; `None` means the listen port.
    pub ext_port: Option<u16>,
    /// Where `/status` is served over plain HTTP; `None` disables it.
    pub status_listen: Option<SocketAddr>,
    /// How often joined clients are pinged; also how long a new protocol-mode connection
    /// may take to send its first message.
    pub ping_interval: Duration,
    /// A protocol-mode connection silent this long is dropped, and so is a session whose
    /// either direction moves nothing this long.
    pub network_timeout: Duration,
    /// Both sides of a session must join within this, or it is discarded.
    pub message_timeout: Duration,
    /// Bound on the TLS handshake and on a session-mode `JoinSessionRequest` (header and
    /// body): a client that connects and stalls is cut after this.
    pub handshake_timeout: Duration,
    /// Bytes a second each session may move (each direction counts); 0 = unlimited.
    pub per_session_rate: u64,
    /// Bytes a second all sessions together may move; 0 = unlimited.
    pub global_rate: u64,
    /// Protocol-mode connections (joined devices and connect requests) at once; past it a
    /// client gets `RelayFull` and is closed.
    pub max_clients: usize,
    /// Sessions (waiting or proxying) at once; past it a `ConnectRequest` gets
    /// "internal error".
    pub max_sessions: usize,
    /// Unused session keys at once (two per waiting session).
    pub max_pending_keys: usize,
    /// `ConnectRequest`s one client IP may make per second, on average.
    pub connect_rate: f64,
    /// `ConnectRequest`s one client IP may make in a burst.
    pub connect_burst: f64,
    /// Who runs the relay (shown in `/status`, at most 30 characters by convention).
    pub provided_by: String,
    /// Relay pools, reported in `/status` only: this relay does not join pools.
    pub pools: Vec<String>,
    /// Whether STUN Binding requests are answered on UDP at the listen port number.
    pub stun: bool,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An address that is neither `IP:PORT` nor `:PORT`.
    #[error("{0:?} is not an address (IP:PORT or :PORT)")]
    Address(String),
    /// A duration that is neither a number of seconds nor Go-style (`90s`, `1m30s`, `500ms`).
    #[error("{0:?} is not a duration (e.g. 60, 60s, 1m30s, 500ms)")]
    Duration(String),
    /// A value outside what the relay can work with.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 22067)),
            data: default_data_dir(),
            token: String::new(),
            ext_ip: None,
            ext_port: None,
            status_listen: Some(SocketAddr::from(([0, 0, 0, 0], 22070))),
            ping_interval: Duration::from_secs(60),
            network_timeout: Duration::from_secs(120),
            message_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            per_session_rate: 0,
            global_rate: 0,
            max_clients: 10_000,
            max_sessions: 10_000,
            max_pending_keys: 20_000,
            // A device asks for one session per peer it wants to reach, now and then; many
            // devices behind one NAT share the burst.
            connect_rate: 10.0,
            connect_burst: 50.0,
            provided_by: String::new(),
            pools: Vec::new(),
            stun: true,
        }
    }
}

impl Config {
    /// A config for tests: both listeners on `127.0.0.1:0` (STUN on, on the relay's port
    /// number), identity kept in `data`.
    pub fn testing(data: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            status_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            data: data.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let timeouts = [
            self.ping_interval,
            self.network_timeout,
            self.message_timeout,
            self.handshake_timeout,
        ];
        if timeouts.iter().any(Duration::is_zero) {
            return Err(ConfigError::Invalid(
                "intervals and timeouts must be positive",
            ));
        }
        if self.max_clients == 0 || self.max_sessions == 0 || self.max_pending_keys < 2 {
            return Err(ConfigError::Invalid(
                "max-clients and max-sessions must be at least 1, max-pending-keys at least 2",
            ));
        }
        if !self.connect_rate.is_finite() || self.connect_rate <= 0.0 || self.connect_burst < 1.0 {
            return Err(ConfigError::Invalid(
                "connect-rate must be positive and connect-burst at least 1",
            ));
        }
        Ok(())
    }
}

/// `$XDG_DATA_HOME/peerfold-relay` (`~/.local/share/...` on Linux), else
/// `./peerfold-relay-data` where no home is known (e.g. a bare service account).
fn default_data_dir() -> PathBuf {
    dirs::data_dir().map_or_else(
        || PathBuf::from("peerfold-relay-data"),
        |dir| dir.join("peerfold-relay"),
    )
}

/// `IP:PORT`, `[IPv6]:PORT` or Go's `:PORT` (every interface).
pub fn parse_address(text: &str) -> Result<SocketAddr, ConfigError> {
    if let Some(port) = text.strip_prefix(':') {
        let port = port
            .parse()
            .map_err(|_| ConfigError::Address(text.to_owned()))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    text.parse()
        .map_err(|_| ConfigError::Address(text.to_owned()))
}

/// A number of seconds, or Go's duration form as strelaysrv's flags take it (`1m0s`,
/// `90s`, `500ms`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration(text.to_owned());
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * unit).map_err(|_| bad())?;
    }
    Ok(total)
}

/// The command line of `peerfold-relay`.
#[derive(Debug, Default, Parser)]
#[command(name = "peerfold-relay", version, about)]
pub struct Cli {
    /// Address of the relay port (TLS protocol mode and plaintext session mode)
    /// [default: 0.0.0.0:22067].
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub listen: Option<SocketAddr>,
    /// Directory for the relay's certificate and key
    /// [default: $XDG_DATA_HOME/peerfold-relay].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Token clients must present to join (a private relay); empty = public.
    #[arg(long, default_value = "")]
    pub token: String,
    /// Address put in session invitations, IP:PORT or :PORT; an empty IP means "the IP the
    /// client reached the relay at" [default: the listen port, empty IP].
    #[arg(long, value_name = "ADDR")]
    pub ext_address: Option<String>,
    /// Address of the plain-HTTP /status endpoint; an empty value disables it
    /// [default: :22070].
    #[arg(long, value_name = "ADDR")]
    pub status_listen: Option<String>,
    /// How often joined clients are pinged [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Silence after which a connection or a session direction is dropped [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub network_timeout: Option<Duration>,
    /// Time both sides have to join a session [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub message_timeout: Option<Duration>,
    /// Bound on the TLS handshake and on a session join request [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// Bytes per second per session, 0 = unlimited [default: 0].
    #[arg(long, value_name = "BYTES")]
    pub per_session_rate: Option<u64>,
    /// Bytes per second for all sessions together, 0 = unlimited [default: 0].
    #[arg(long, value_name = "BYTES")]
    pub global_rate: Option<u64>,
    /// Protocol-mode connections at once; more get RelayFull [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_clients: Option<usize>,
    /// Sessions (waiting or proxying) at once [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Unused session keys at once [default: 20000].
    #[arg(long, value_name = "N")]
    pub max_pending_keys: Option<usize>,
    /// Connect requests per second per client IP, on average [default: 10].
    #[arg(long, value_name = "PER_SECOND")]
    pub connect_rate: Option<f64>,
    /// Connect requests a client IP may burst [default: 50].
    #[arg(long, value_name = "N")]
    pub connect_burst: Option<f64>,
    /// Who runs this relay, shown in /status.
    #[arg(long, default_value = "")]
    pub provided_by: String,
    /// Relay pools, comma-separated, shown in /status (this relay does not join pools).
    #[arg(long, value_delimiter = ',')]
    pub pools: Vec<String>,
    /// Do not answer STUN Binding requests on UDP at the relay port number.
    #[arg(long)]
    pub no_stun: bool,
}

impl Cli {
    /// The runtime configuration: these flags over the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let (ext_ip, ext_port) = match self.ext_address.as_deref() {
            None | Some("") => (None, None),
            Some(text) => {
                let addr = parse_address(text)?;
                let ip = Some(addr.ip()).filter(|ip| !ip.is_unspecified());
                (ip, Some(addr.port()).filter(|&port| port != 0))
            }
        };
        let status_listen = match self.status_listen.as_deref() {
            None => defaults.status_listen,
            Some("") => None,
            Some(text) => Some(parse_address(text)?),
        };
        let config = Config {
            listen: self.listen.unwrap_or(defaults.listen),
            data: self.data.unwrap_or_else(|| defaults.data.clone()),
            token: self.token,
            ext_ip,
            ext_port,
            status_listen,
            ping_interval: self.ping_interval.unwrap_or(defaults.ping_interval),
            network_timeout: self.network_timeout.unwrap_or(defaults.network_timeout),
            message_timeout: self.message_timeout.unwrap_or(defaults.message_timeout),
            handshake_timeout: self.handshake_timeout.unwrap_or(defaults.handshake_timeout),
            per_session_rate: self.per_session_rate.unwrap_or(defaults.per_session_rate),
            global_rate: self.global_rate.unwrap_or(defaults.global_rate),
            max_clients: self.max_clients.unwrap_or(defaults.max_clients),
            max_sessions: self.max_sessions.unwrap_or(defaults.max_sessions),
            max_pending_keys: self.max_pending_keys.unwrap_or(defaults.max_pending_keys),
            connect_rate: self.connect_rate.unwrap_or(defaults.connect_rate),
            connect_burst: self.connect_burst.unwrap_or(defaults.connect_burst),
            provided_by: self.provided_by,
            pools: self.pools,
            stun: !self.no_stun,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_and_go_forms() {
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m0s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "s", "5x", "1m5", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_resolve_with_go_style_addresses() {
        let config = Cli::try_parse_from([
            "peerfold-relay",
            "--listen",
            ":4000",
            "--ext-address",
            ":5000",
            "--status-listen",
            "",
            "--ping-interval",
            "30s",
            "--pools",
            "a,b",
        ])
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:4000".parse().unwrap());
        assert_eq!((config.ext_ip, config.ext_port), (None, Some(5000)));
        assert_eq!(config.status_listen, None);
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.network_timeout, Duration::from_secs(120));
        assert_eq!(config.pools, ["a", "b"]);
        let config = Cli::try_parse_from(["x", "--ext-address", "192.0.2.7:443"])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.ext_ip, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(config.status_listen, Config::default().status_listen);
        assert!(
            Cli::try_parse_from(["x", "--max-clients", "0"])
                .unwrap()
                .resolve()
                .is_err()
        );
        assert!(Cli::try_parse_from(["x", "--listen", "nowhere"]).is_err());
    }
}
