//! Configuration edits: one typed change, applied by [`ConfigEdit::apply`] whether the
//! daemon runs (REST, the CLI through the control socket: `Engine::change_config`) or not
//! (the CLI on `config.toml`: [`edit_file`]).

use peerfold_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use super::diff::{Command, diff};
use super::{Address, Config, DeviceConfig, FolderConfig, Home, HomeError, Invalid};

/// One change to the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConfigEdit {
    /// The whole configuration (Syncthing's `PUT /rest/config`).
    Replace(Box<Config>),
    /// A device that must not be configured yet.
    AddDevice(DeviceConfig),
    /// A device, added or replaced.
    SetDevice(DeviceConfig),
    /// Every device (those not listed are removed).
    SetDevices(Vec<DeviceConfig>),
    /// A device goes, and no folder is shared with it any more.
    RemoveDevice(#[serde(with = "super::device_id")] DeviceId),
    /// A folder that must not be configured yet.
    AddFolder(FolderConfig),
    /// A folder, added or replaced.
    SetFolder(FolderConfig),
    /// Every folder (those not listed are removed).
    SetFolders(Vec<FolderConfig>),
    /// A folder goes (its files stay).
    RemoveFolder(String),
    /// A configured folder is shared with a configured device too.
    ShareFolder {
        /// The folder.
        folder: String,
        /// The device.
        #[serde(with = "super::device_id")]
        device: DeviceId,
    },
    /// One device (or every device, for `None`) is paused or resumed.
    PauseDevices {
        /// The device, or all.
        #[serde(with = "super::device_id::optional")]
        device: Option<DeviceId>,
        /// Paused or resumed.
        paused: bool,
    },
    /// A folder is paused or resumed.
    PauseFolder {
        /// The folder.
        folder: String,
        /// Paused or resumed.
        paused: bool,
    },
    /// One option.
    SetOption(OptionChange),
    /// Where auto-accepted folders go (`~` for the home directory).
    SetDefaultFolderPath(String),
    /// Several edits as one change: all or none.
    Several(Vec<ConfigEdit>),
    /// What an introducer said of its folders' devices (the engine's own; never sent by a
    /// client).
    #[serde(skip)]
    Introduce(super::introduce::Introduction),
}

/// One of the options peerfold keeps (Syncthing's names in the REST API and the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OptionChange {
    /// Where the QUIC listeners bind (takes effect at the next start).
    ListenAddresses(Vec<Address>),
    /// Announce to, and look up in, the global discovery servers.
    GlobalAnnounceEnabled(bool),
    /// The global discovery servers.
    GlobalAnnounceServers(Vec<String>),
    /// Announce and find devices on the LAN.
    LocalAnnounceEnabled(bool),
    /// Meet devices through relays.
    RelaysEnabled(bool),
    /// The longest wait between two dials of a disconnected device, in seconds (1..=86400).
    ReconnectionIntervalS(u64),
    /// The STUN servers (`HOST:PORT` or `default`).
    StunServers(Vec<String>),
    /// Seconds between STUN probes while the mapping holds (0: no STUN).
    StunKeepaliveStartS(u64),
    /// The shortest interval between STUN probes.
    StunKeepaliveMinS(u64),
    /// The global send limit in KiB/s (0: none).
    MaxSendKbps(u64),
    /// The global receive limit in KiB/s (0: none).
    MaxRecvKbps(u64),
    /// Whether the limits hold for LAN peers too.
    LimitBandwidthInLan(bool),
    /// Syncthing's options peerfold keeps for its clients but does not use (replaced whole).
    UnusedSyncthingSettings(super::UnusedSettings),
}

impl ConfigEdit {
    /// Applies the edit to `config`, which stays unchanged if it is refused. `me` is this
    /// device (it cannot be configured as a peer). The result still has to pass
    /// [`Config::check`].
    pub fn apply(self, config: &mut Config, me: DeviceId) -> Result<(), Invalid> {
        let mut edited = config.clone();
        self.apply_in_place(&mut edited, me)?;
        *config = edited;
        Ok(())
    }

    fn apply_in_place(self, config: &mut Config, me: DeviceId) -> Result<(), Invalid> {
        let not_me = |device: &DeviceConfig| {
            if device.id == me {
                Err(Invalid("that is this device's own ID".into()))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Replace(new) => {
                new.devices.iter().try_for_each(not_me)?;
                *config = *new;
            }
            Self::AddDevice(device) => {
                not_me(&device)?;
                if config.devices.iter().any(|d| d.id == device.id) {
                    return Err(Invalid(format!(
                        "device {} is already configured",
                        device.id
                    )));
                }
                config.devices.push(device);
            }
            Self::SetDevice(device) => {
                not_me(&device)?;
                let id = device.id;
                upsert(&mut config.devices, device, |d| d.id == id);
            }
            Self::SetDevices(devices) => {
                devices.iter().try_for_each(not_me)?;
                config.devices = devices;
            }
            Self::RemoveDevice(id) => {
                if !config.devices.iter().any(|d| d.id == id) {
                    return Err(Invalid(format!("no device {id}")));
                }
                config.devices.retain(|d| d.id != id);
                for folder in &mut config.folders {
                    folder.devices.retain(|d| *d != id);
                }
            }
            Self::AddFolder(folder) => {
                if config.folder(&folder.id).is_some() {
                    return Err(Invalid(format!("folder {:?} already exists", folder.id)));
                }
                if let Some(other) = config.folders.iter().find(|f| f.path == folder.path) {
                    return Err(Invalid(format!(
                        "{} is already the path of folder {:?}",
                        folder.path.display(),
                        other.id
                    )));
                }
                config.folders.push(folder);
            }
            Self::SetFolder(folder) => {
                let id = folder.id.clone();
                upsert(&mut config.folders, folder, |f| f.id == id);
            }
            Self::SetFolders(folders) => config.folders = folders,
            Self::RemoveFolder(id) => {
                if config.folder(&id).is_none() {
                    return Err(Invalid(format!("no folder {id:?}")));
                }
                config.folders.retain(|f| f.id != id);
            }
            Self::ShareFolder { folder, device } => {
                if !config.devices.iter().any(|d| d.id == device) {
                    return Err(Invalid(format!(
                        "device {device} is not configured: add it first"
                    )));
                }
                let Some(entry) = config.folders.iter_mut().find(|f| f.id == folder) else {
                    return Err(Invalid(format!("no folder {folder:?}")));
                };
                if !entry.devices.contains(&device) {
                    entry.devices.push(device);
                }
            }
            Self::PauseDevices { device, paused } => {
                if let Some(id) = device
                    && !config.devices.iter().any(|d| d.id == id)
                {
                    return Err(Invalid(format!("no device {id}")));
                }
                for d in &mut config.devices {
                    if device.is_none_or(|id| id == d.id) {
                        d.paused = paused;
                    }
                }
            }
            Self::PauseFolder { folder, paused } => {
                let Some(entry) = config.folders.iter_mut().find(|f| f.id == folder) else {
                    return Err(Invalid(format!("no folder {folder:?}")));
                };
                entry.paused = paused;
            }
            Self::SetOption(change) => change.apply(config)?,
            Self::SetDefaultFolderPath(path) => config.defaults.folder_path = path,
            Self::Introduce(introduction) => {
                let (introducer, folders) = (introduction.introducer, &introduction.folders);
                if let Some(new) = super::introduce::introduce(config, me, introducer, folders) {
                    *config = new;
                }
            }
            Self::Several(edits) => {
                for edit in edits {
                    edit.apply_in_place(config, me)?;
                }
            }
        }
        Ok(())
    }
}

impl OptionChange {
    fn apply(self, config: &mut Config) -> Result<(), Invalid> {
        let o = &mut config.options;
        match self {
            Self::ListenAddresses(list) => {
                for address in &list {
                    super::check_listen_address(address)?;
                }
                config.listen = list;
            }
            Self::GlobalAnnounceEnabled(on) => o.global_announce_enabled = on,
            Self::GlobalAnnounceServers(list) => {
                for server in &list {
                    super::check_announce_server(server)?;
                }
                o.global_announce_servers = list;
            }
            Self::LocalAnnounceEnabled(on) => o.local_announce_enabled = on,
            Self::RelaysEnabled(on) => o.relays_enabled = on,
            Self::UnusedSyncthingSettings(settings) => o.unused_syncthing_settings = settings,
            Self::MaxSendKbps(rate) => o.max_send_kbps = rate,
            Self::MaxRecvKbps(rate) => o.max_recv_kbps = rate,
            Self::LimitBandwidthInLan(on) => o.limit_bandwidth_in_lan = on,
            Self::ReconnectionIntervalS(seconds) => {
                if seconds == 0 || seconds > 86_400 {
                    return Err(Invalid(format!(
                        "reconnectionIntervalS must be 1 to 86400 seconds, not {seconds}"
                    )));
                }
                o.reconnection_interval_s = seconds;
            }
            Self::StunServers(list) => {
                for server in &list {
                    super::check_stun_server(server)?;
                }
                o.stun_servers = list;
            }
            // Each on its own here; the pair (start at least the minimum) is checked with
            // the whole configuration, so both can change in one edit in either order.
            Self::StunKeepaliveStartS(seconds) => {
                super::check_stun_keepalive(seconds, seconds.clamp(1, 86_400))?;
                o.stun_keepalive_start_s = seconds;
            }
            Self::StunKeepaliveMinS(seconds) => {
                super::check_stun_keepalive(0, seconds)?;
                o.stun_keepalive_min_s = seconds;
            }
        }
        Ok(())
    }
}

/// Replaces the item `same` picks out, or appends `item`.
fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) {
    match list.iter_mut().find(|x| same(x)) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

/// Why an edit of `config.toml` (no daemon running) failed.
#[derive(Debug, thiserror::Error)]
pub enum EditFileError {
    /// The edit makes no sense.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The home or its files.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// Applies `edit` to the home's `config.toml` (for when no daemon runs there): the same
/// edit and checks as a running daemon, then an atomic save; devices accepted and folders
/// now shared stop being pending, as with a running daemon. Returns the new configuration.
pub fn edit_file(home: &Home, edit: ConfigEdit) -> Result<Config, EditFileError> {
    let me = home.identity()?.device_id();
    let old = home.config()?;
    let mut config = old.clone();
    edit.apply(&mut config, me)?;
    config.check()?;
    home.save_config(&config)?;
    let settled: Vec<Command> = diff(&old, &config)
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Command::ForgetPendingDevice(_) | Command::ForgetPendingFolder(..)
            )
        })
        .collect();
    if !settled.is_empty() {
        let mut store = home.store()?;
        for command in settled {
            match command {
                Command::ForgetPendingDevice(device) => store.forget_pending_device(device),
                Command::ForgetPendingFolder(folder, device) => {
                    store.forget_pending_folder(&folder, Some(device))
                }
                _ => Ok(()),
            }
            .map_err(HomeError::from)?;
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: DeviceId = DeviceId::from_bytes([1; 32]);
    const PEER: DeviceId = DeviceId::from_bytes([2; 32]);

    fn config() -> Config {
        let mut config = Config::new("me".into(), "key".into());
        config.devices.push(DeviceConfig::new(
            PEER,
            "peer".into(),
            vec![Address::Dynamic],
        ));
        config.folders.push(FolderConfig::new(
            "docs".into(),
            String::new(),
            "/srv/docs".into(),
        ));
        config
    }

    #[test]
    fn edits_change_what_they_name() {
        let mut c = config();
        ConfigEdit::ShareFolder {
            folder: "docs".into(),
            device: PEER,
        }
        .apply(&mut c, ME)
        .unwrap();
        assert_eq!(c.folders[0].devices, vec![PEER]);
        ConfigEdit::PauseDevices {
            device: None,
            paused: true,
        }
        .apply(&mut c, ME)
        .unwrap();
        assert!(c.devices[0].paused);
        ConfigEdit::RemoveDevice(PEER).apply(&mut c, ME).unwrap();
        assert!(c.devices.is_empty() && c.folders[0].devices.is_empty());
        ConfigEdit::SetOption(OptionChange::ReconnectionIntervalS(15))
            .apply(&mut c, ME)
            .unwrap();
        assert_eq!(c.options.reconnection_interval_s, 15);
        c.check().unwrap();
    }

    #[test]
    fn a_refused_edit_changes_nothing() {
        let before = config();
        for edit in [
            ConfigEdit::AddDevice(DeviceConfig::new(ME, String::new(), Vec::new())),
            ConfigEdit::AddDevice(DeviceConfig::new(PEER, String::new(), Vec::new())),
            ConfigEdit::RemoveFolder("nope".into()),
            ConfigEdit::ShareFolder {
                folder: "docs".into(),
                device: ME,
            },
            ConfigEdit::SetOption(OptionChange::ReconnectionIntervalS(0)),
            ConfigEdit::SetOption(OptionChange::ListenAddresses(vec![Address::Dynamic])),
            // All or none: the first part applies, the second is refused.
            ConfigEdit::Several(vec![
                ConfigEdit::PauseFolder {
                    folder: "docs".into(),
                    paused: true,
                },
                ConfigEdit::RemoveFolder("nope".into()),
            ]),
        ] {
            let mut c = before.clone();
            let shown = format!("{edit:?}");
            assert!(edit.apply(&mut c, ME).is_err(), "{shown}");
            assert_eq!(c, before, "{shown}");
        }
    }

    #[test]
    fn edits_travel_as_text() {
        let edit = ConfigEdit::Several(vec![
            ConfigEdit::PauseDevices {
                device: Some(PEER),
                paused: true,
            },
            ConfigEdit::SetOption(OptionChange::ListenAddresses(vec![Address::quic(
                "0.0.0.0", 1,
            )])),
        ]);
        let text = toml::to_string(&Wrapper { edit: edit.clone() }).unwrap();
        let back: Wrapper = toml::from_str(&text).unwrap();
        assert_eq!(back.edit, edit);
    }

    #[derive(Serialize, Deserialize)]
    struct Wrapper {
        edit: ConfigEdit,
    }
}
