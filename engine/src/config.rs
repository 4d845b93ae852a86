//! `config.toml`: this device's settings, its folders and the devices it knows.
//!
//! The file is read whole and written atomically. Unknown keys are refused so a typo does not
//! silently do nothing; syntax errors name the line and column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peerfold_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use crate::disk::fsutil;

mod address;
mod defaults;
pub(crate) mod diff;
mod edit;
mod folder;
mod home;
mod ignored;
pub(crate) mod introduce;
pub(crate) mod live;

pub use crate::model::{FolderType, PullOrder};
pub use address::{Address, AddressError};
pub use defaults::Defaults;
pub use edit::{ConfigEdit, EditFileError, OptionChange, edit_file};
pub use folder::{FolderConfig, MinDiskFree, VersioningType};
pub use home::{HOME_ENV, Home, HomeError};
pub use ignored::{IgnoredDevice, IgnoredFolder};

/// Settings Syncthing's clients send that peerfold keeps, and gives back, but does not use
/// (Syncthing's `copiers`, `hashers`, ...): the JSON text of each value by its Syncthing
/// name. A client reads back what it wrote; the daemon logs that the setting has no effect.
pub type UnusedSettings = BTreeMap<String, String>;

/// Where the REST API listens unless configured otherwise (not Syncthing's 8384, so both can
/// run on one host).
pub const DEFAULT_API_ADDRESS: &str = "127.0.0.1:8385";
/// Where the QUIC listener binds unless configured otherwise (not Syncthing's 22000).
pub const DEFAULT_LISTEN: [&str; 2] = ["quic://0.0.0.0:22100", "quic://[::]:22100"];

/// A configuration (or a value for it) that makes no sense, with what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<AddressError> for Invalid {
    fn from(e: AddressError) -> Self {
        Self(e.to_string())
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This device's name, as peers see it.
    #[serde(default)]
    pub device_name: String,
    /// Addresses the QUIC listener binds, as `quic://HOST:PORT`.
    #[serde(default = "default_listen")]
    pub listen: Vec<Address>,
    /// The REST API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Discovery, relays and reconnection (Syncthing's options of the same names).
    #[serde(default)]
    pub options: Options,
    /// What new folders get (auto-accepted ones, in particular).
    #[serde(default)]
    pub defaults: Defaults,
    /// Shared folders.
    #[serde(default, rename = "folder")]
    pub folders: Vec<FolderConfig>,
    /// Known devices.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    /// Devices turned away without a pending entry (Syncthing's `remoteIgnoredDevices`).
    #[serde(
        default,
        rename = "ignored_device",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ignored_devices: Vec<IgnoredDevice>,
}

/// The REST API settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `HOST:PORT` to listen on.
    #[serde(default = "default_api_address")]
    pub address: String,
    /// The key clients must present.
    #[serde(default)]
    pub key: String,
    /// The web GUI's user; with `password_hash`, browsers must log in (required before the
    /// GUI is served on an address other than loopback).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The GUI password as an argon2 PHC string (`$argon2id$...`), never the password.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password_hash: String,
    /// Syncthing's `debugging`: the debug endpoints (`/rest/debug/*`) answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub debugging: bool,
    /// Syncthing's GUI settings peerfold keeps for its clients but does not use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unused_syncthing_settings: UnusedSettings,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            address: default_api_address(),
            key: String::new(),
            user: String::new(),
            password_hash: String::new(),
            debugging: false,
            unused_syncthing_settings: UnusedSettings::new(),
        }
    }
}

/// Options with a Syncthing counterpart (`/rest/config/options`, `peerfold config`).
/// Discovery and relays use the announce and relay settings once they run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Announce this device to the global discovery servers and look peers up there.
    #[serde(default = "default_true")]
    pub global_announce_enabled: bool,
    /// Global discovery servers, as `https://HOST:PORT/?id=DEVICE-ID` (none by default;
    /// `default`, Syncthing's word for its public servers, stands for none).
    #[serde(default = "default_announce_servers")]
    pub global_announce_servers: Vec<String>,
    /// Announce and find devices on the LAN (mDNS).
    #[serde(default = "default_true")]
    pub local_announce_enabled: bool,
    /// Meet devices through relays when no direct path works.
    #[serde(default = "default_true")]
    pub relays_enabled: bool,
    /// Longest wait between two attempts to reach a disconnected device.
    #[serde(default = "default_reconnection_interval")]
    pub reconnection_interval_s: u64,
    /// STUN servers the QUIC socket learns its public address from, as `HOST:PORT`;
    /// `default` stands for this device's own relays (among the listen addresses) and
    /// global discovery servers, which answer STUN on their ports (peerfold ships no public
    /// STUN servers). Empty: no STUN.
    #[serde(default = "default_stun_servers")]
    pub stun_servers: Vec<String>,
    /// Seconds between two STUN probes while the mapping holds (Syncthing's
    /// `stunKeepaliveStartS`); 0 turns STUN off.
    #[serde(default = "default_stun_keepalive_start")]
    pub stun_keepalive_start_s: u64,
    /// The shortest interval between probes: it halves towards this while the mapping
    /// keeps changing (Syncthing's `stunKeepaliveMinS`).
    #[serde(default = "default_stun_keepalive_min")]
    pub stun_keepalive_min_s: u64,
    /// The most this device sends, in KiB/s, to all peers together (`maxSendKbps`; 0: no
    /// limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_send_kbps: u64,
    /// The most this device receives, in KiB/s, from all peers together (`maxRecvKbps`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_recv_kbps: u64,
    /// Whether the limits (these and each device's) hold for peers on the LAN too
    /// (`limitBandwidthInLan`); by default LAN links are not limited.
    #[serde(default, skip_serializing_if = "is_false")]
    pub limit_bandwidth_in_lan: bool,
    /// Syncthing's options peerfold keeps for its clients but does not use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unused_syncthing_settings: UnusedSettings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            global_announce_enabled: true,
            global_announce_servers: default_announce_servers(),
            local_announce_enabled: true,
            relays_enabled: true,
            reconnection_interval_s: default_reconnection_interval(),
            stun_servers: default_stun_servers(),
            stun_keepalive_start_s: default_stun_keepalive_start(),
            stun_keepalive_min_s: default_stun_keepalive_min(),
            max_send_kbps: 0,
            max_recv_kbps: 0,
            limit_bandwidth_in_lan: false,
            unused_syncthing_settings: UnusedSettings::new(),
        }
    }
}

/// `~` and `~/...` name the user's home directory; other paths are taken as they are.
pub fn expand_tilde(path: &str) -> Option<PathBuf> {
    match path.strip_prefix('~') {
        Some("") => dirs::home_dir(),
        Some(rest) if rest.starts_with('/') => {
            dirs::home_dir().map(|home| home.join(rest.trim_start_matches('/')))
        }
        _ => Some(PathBuf::from(path)),
    }
}

/// One known device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Its device ID.
    #[serde(with = "device_id")]
    pub id: DeviceId,
    /// A human name.
    #[serde(default)]
    pub name: String,
    /// Where to reach it: `quic://HOST:PORT`, or `dynamic` for discovery.
    #[serde(default = "default_addresses")]
    pub addresses: Vec<Address>,
    /// Paused: not dialed, and its connections are refused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Folders it offers are added (under `defaults.folder_path`) and shared with it
    /// without asking.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_accept_folders: bool,
    /// An introducer (`introducer`): the devices it shares this device's folders with are
    /// added and shared those folders (see `config/introduce`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub introducer: bool,
    /// Devices this introducer stops sharing with stay (`skipIntroductionRemovals`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_introduction_removals: bool,
    /// The introducer that added this device, if one did (`introducedBy`).
    #[serde(
        default,
        with = "device_id::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub introduced_by: Option<DeviceId>,
    /// Networks it may connect from, as `ADDRESS/PREFIX` (`allowedNetworks`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Folders it offers that are not recorded as pending (`ignoredFolders`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_folders: Vec<IgnoredFolder>,
    /// The most this device sends to it, in KiB/s (`maxSendKbps`; 0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_send_kbps: u64,
    /// The most this device receives from it, in KiB/s (`maxRecvKbps`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_recv_kbps: u64,
    /// Syncthing's device settings peerfold keeps for its clients but does not use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unused_syncthing_settings: UnusedSettings,
}

impl DeviceConfig {
    /// Whether a connection from `remote` (`IP:PORT`) may be this device's: any when no
    /// network is listed; otherwise only from a listed one (a relayed connection, whose
    /// address is the relay's path, is not).
    pub fn may_connect_from(&self, remote: &str) -> bool {
        if self.allowed_networks.is_empty() {
            return true;
        }
        let Ok(address) = remote.parse::<std::net::SocketAddr>() else {
            return false;
        };
        let ip = address.ip().to_canonical();
        self.allowed_networks
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .any(|n| n.contains(&ip))
    }

    /// A device with default settings.
    pub fn new(id: DeviceId, name: String, addresses: Vec<Address>) -> Self {
        Self {
            id,
            name,
            addresses,
            paused: false,
            auto_accept_folders: false,
            introducer: false,
            skip_introduction_removals: false,
            introduced_by: None,
            allowed_networks: Vec::new(),
            ignored_folders: Vec::new(),
            max_send_kbps: 0,
            max_recv_kbps: 0,
            unused_syncthing_settings: UnusedSettings::new(),
        }
    }
}

/// Problems reading or writing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has wrong keys or values.
    #[error("{path} line {line}, column {column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// A fresh configuration for a device named `device_name` with API key `api_key`.
    pub fn new(device_name: String, api_key: String) -> Self {
        Self {
            device_name,
            listen: default_listen(),
            api: ApiConfig {
                key: api_key,
                ..ApiConfig::default()
            },
            options: Options::default(),
            defaults: Defaults::default(),
            folders: Vec::new(),
            devices: Vec::new(),
            ignored_devices: Vec::new(),
        }
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_and_column(&text, span.start));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        config
            .check()
            .map_err(|Invalid(message)| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(config)
    }

    /// Writes the file atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let mut text = String::from(
            "# peerfold configuration. Edit while the daemon is stopped, or use the CLI.\n\n",
        );
        // Serialising plain structs of strings and lists cannot fail.
        text.push_str(
            &toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                message: e.to_string(),
            })?,
        );
        fsutil::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Cross-field rules the types alone do not express.
    pub fn check(&self) -> Result<(), Invalid> {
        let mut seen = std::collections::HashSet::new();
        for folder in &self.folders {
            check_folder_id(&folder.id)?;
            folder.check()?;
            if !seen.insert(folder.id.as_str()) {
                return Err(Invalid(format!(
                    "folder {:?} is configured twice",
                    folder.id
                )));
            }
            for device in &folder.devices {
                if !self.devices.iter().any(|d| d.id == *device) {
                    return Err(Invalid(format!(
                        "folder {:?} is shared with {device}, which is not a configured device",
                        folder.id
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for device in &self.devices {
            if !seen.insert(device.id) {
                return Err(Invalid(format!("device {} is configured twice", device.id)));
            }
            for network in &device.allowed_networks {
                network.parse::<ipnet::IpNet>().map_err(|_| {
                    Invalid(format!(
                        "device {}: allowed network {network:?} must be ADDRESS/PREFIX, e.g. 192.168.1.0/24",
                        device.id
                    ))
                })?;
            }
        }
        for address in &self.listen {
            check_listen_address(address)?;
        }
        for server in &self.options.global_announce_servers {
            check_announce_server(server)?;
        }
        for server in &self.options.stun_servers {
            check_stun_server(server)?;
        }
        check_stun_keepalive(
            self.options.stun_keepalive_start_s,
            self.options.stun_keepalive_min_s,
        )?;
        if let Some(template) = &self.defaults.folder {
            template
                .check()
                .map_err(|Invalid(e)| Invalid(format!("the default folder: {e}")))?;
        }
        let default_path = &self.defaults.folder_path;
        if !(default_path == "~" || default_path.starts_with("~/") || default_path.starts_with('/'))
        {
            return Err(Invalid(format!(
                "the default folder path {default_path:?} must be absolute (or start with ~)"
            )));
        }
        Ok(())
    }

    /// The folder with this ID.
    pub fn folder(&self, id: &str) -> Option<&FolderConfig> {
        self.folders.iter().find(|f| f.id == id)
    }
}

/// Folder IDs travel in protocol messages and file names: non-empty, at most 256 bytes, no
/// control characters and no surrounding whitespace.
pub fn check_folder_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() || id.len() > 256 {
        return Err(Invalid(format!(
            "folder ID {id:?} must be 1 to 256 bytes long"
        )));
    }
    if id.trim() != id || id.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "folder ID {id:?} must not contain control characters or surrounding spaces"
        )));
    }
    Ok(())
}

/// A global discovery server is `default` or an `https://` URL.
pub fn check_announce_server(server: &str) -> Result<(), Invalid> {
    let host = server
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or_default().to_owned());
    match host {
        _ if server == "default" => Ok(()),
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(()),
        _ => Err(Invalid(format!(
            "discovery server {server:?} must be an https:// URL (https://HOST:PORT/?id=DEVICE-ID) or \"default\""
        ))),
    }
}

/// A STUN server is `HOST:PORT` (`[IPv6]:PORT`), or `default`.
pub fn check_stun_server(server: &str) -> Result<(), Invalid> {
    let ok = server == "default"
        || server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "stunServers: {server:?} must be HOST:PORT or \"default\""
        )))
    }
}

/// The STUN intervals: a start of 0 (off) or at least the minimum, a minimum of 1 to
/// 86400 seconds.
pub fn check_stun_keepalive(start: u64, min: u64) -> Result<(), Invalid> {
    if min == 0 || min > 86_400 || start > 86_400 || (start != 0 && start < min) {
        return Err(Invalid(format!(
            "stunKeepaliveStartS ({start}) must be 0 (off) or at least stunKeepaliveMinS ({min}), \
             which must be 1 to 86400 seconds"
        )));
    }
    Ok(())
}

/// A listen address is a QUIC address, or a relay to hold a slot on
/// (`relay://HOST:PORT/?id=RELAY-ID`, as in Syncthing).
pub fn check_listen_address(address: &Address) -> Result<(), Invalid> {
    match address {
        Address::Quic { .. } => Ok(()),
        Address::Relay { .. } => address
            .to_string()
            .parse::<peerfold_protocol::relay::RelayUrl>()
            .map(|_| ())
            .map_err(|e| Invalid(format!("listen address: {e}"))),
        Address::Dynamic => Err(Invalid(
            "listen address dynamic: peerfold listens on quic://HOST:PORT and relay://HOST:PORT/?id=ID"
                .into(),
        )),
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// peerfold's default listen addresses.
pub fn default_listen() -> Vec<Address> {
    DEFAULT_LISTEN
        .iter()
        .map(|s| s.parse().expect("the default listen addresses parse"))
        .collect()
}

fn default_api_address() -> String {
    DEFAULT_API_ADDRESS.to_owned()
}

fn default_true() -> bool {
    true
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_true(value: &bool) -> bool {
    *value
}

/// None: peerfold runs no public discovery servers. Devices find each other on the LAN,
/// or through a `peerfold-discovery` their users run (`default` is accepted, and names none).
fn default_announce_servers() -> Vec<String> {
    Vec::new()
}

fn default_reconnection_interval() -> u64 {
    60
}

fn default_stun_servers() -> Vec<String> {
    vec!["default".to_owned()]
}

fn default_stun_keepalive_start() -> u64 {
    180
}

fn default_stun_keepalive_min() -> u64 {
    20
}

fn default_addresses() -> Vec<Address> {
    vec![Address::Dynamic]
}

/// Device IDs are written in their text form.
pub(crate) mod device_id {
    use peerfold_protocol::DeviceId;
    use serde::{Deserialize, Deserializer, Serializer};

    /// An optional device ID (`null` for none).
    pub(crate) mod optional {
        use peerfold_protocol::DeviceId;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            id: &Option<DeviceId>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => s.collect_str(id),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DeviceId>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    text.parse()
                        .map_err(|e| serde::de::Error::custom(format!("device ID {text:?}: {e}")))
                })
                .transpose()
        }
    }

    pub(crate) fn serialize<S: Serializer>(id: &DeviceId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("device ID {text:?}: {e}")))
    }
}

pub(crate) mod device_ids {
    use peerfold_protocol::DeviceId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(ids: &[DeviceId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DeviceId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                text.parse()
                    .map_err(|e| serde::de::Error::custom(format!("device ID {text:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, include_str!("../config.example.toml")).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.folders[0].folder_type, FolderType::SendReceive);
        assert_eq!(config.devices.len(), 1);
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "device_name = \"x\"\nlisten = [\n\"quic://a:1\"\n\n[api\n",
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err();
        let ConfigError::Syntax { line, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*line, 5, "{err}");
        assert!(!err.to_string().contains('\n'));

        std::fs::write(&path, "device_nam = \"x\"\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("device_nam"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(check_folder_id("").is_err());
        assert!(check_folder_id(" x").is_err());
        assert!(check_folder_id("a\u{0}b").is_err());
        assert!(check_folder_id("photos-2024").is_ok());
        assert!(check_announce_server("default").is_ok());
        assert!(check_announce_server("https://disco.example:8443/?id=ABC").is_ok());
        assert!(check_announce_server("http://disco.example").is_err());
        assert!(check_announce_server("https://").is_err());
    }

    #[test]
    fn allowed_networks_let_in_only_their_addresses() {
        let id = DeviceId::from_bytes([5; 32]);
        let mut device = DeviceConfig::new(id, String::new(), vec![Address::Dynamic]);
        assert!(device.may_connect_from("203.0.113.9:22000"), "no list: any");
        device.allowed_networks = vec!["192.168.1.0/24".into(), "fd00::/8".into()];
        assert!(device.may_connect_from("192.168.1.20:22000"));
        assert!(device.may_connect_from("[fd00::5]:22000"));
        assert!(
            device.may_connect_from("[::ffff:192.168.1.7]:1"),
            "v4-mapped"
        );
        assert!(!device.may_connect_from("192.168.2.1:22000"));
        assert!(!device.may_connect_from("relay://relay.example:22067"));
        let mut config = Config::new("me".into(), "k".into());
        device.allowed_networks.push("192.168.1.0".into());
        config.devices.push(device);
        let err = config.check().unwrap_err();
        assert!(err.0.contains("ADDRESS/PREFIX"), "{err}");
    }

    #[test]
    fn tilde_is_the_home_directory() {
        let home = dirs::home_dir().unwrap();
        assert_eq!(expand_tilde("~").unwrap(), home);
        assert_eq!(expand_tilde("~/Sync").unwrap(), home.join("Sync"));
        assert_eq!(
            expand_tilde("/srv/sync").unwrap(),
            PathBuf::from("/srv/sync")
        );
        assert_eq!(expand_tilde("~bob").unwrap(), PathBuf::from("~bob"));
    }
}
