//! What a saved configuration change means for the running engine: the difference between
//! the old and the new configuration as a list of commands, which `Engine::change_config`
//! carries out in order.
//!
//! - A device added is dialed, and its pending entry dropped; a device removed or paused
//!   is disconnected (and no longer dialed or accepted); a device resumed is dialed.
//! - A folder added or resumed starts; a folder removed or paused stops, leaving its files
//!   and index alone; a folder at a new root, or whose watching changed, starts over; a
//!   change of settings peerfold does not use does nothing.
//! - A folder whose sharing or type changed gets its new settings, and the devices
//!   concerned are disconnected, so they reconnect with a fresh ClusterConfig.
//! - A device or a folder offer newly ignored leaves the pending lists.

use std::collections::BTreeSet;

use peerfold_protocol::DeviceId;

use super::{Config, FolderConfig};

/// Why a device is disconnected after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// It is paused now.
    Paused,
    /// It is no longer configured.
    Removed,
    /// What it is told about the folders changed.
    Reconfigured,
}

/// One thing the engine does after a change.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    /// The listen or API address changed: it takes effect at the next start.
    RestartRequired,
    /// A device was accepted: forget that it knocked.
    ForgetPendingDevice(DeviceId),
    /// Make sure a dial loop runs for the device (new or resumed).
    Dial(DeviceId),
    /// Close the device's connection.
    Disconnect(DeviceId, Why),
    /// Stop a running folder (its files and index stay).
    StopFolder(String),
    /// Start a folder (stopping it first if it runs).
    StartFolder(FolderConfig),
    /// New settings for a running folder, then a rescan.
    UpdateFolder(FolderConfig),
    /// The folder is shared with the device now: its offer is settled.
    ForgetPendingFolder(String, DeviceId),
}

/// The commands that take the engine from `old` to `new`.
pub(crate) fn diff(old: &Config, new: &Config) -> Vec<Command> {
    let mut commands = Vec::new();
    if old.listen != new.listen || old.api.address != new.api.address {
        commands.push(Command::RestartRequired);
    }
    let new_devices: BTreeSet<DeviceId> = new.devices.iter().map(|d| d.id).collect();
    for device in &new.devices {
        let before = old.devices.iter().find(|d| d.id == device.id);
        if before.is_none() {
            commands.push(Command::ForgetPendingDevice(device.id));
        }
        if device.paused {
            if before.is_some_and(|b| !b.paused) {
                commands.push(Command::Disconnect(device.id, Why::Paused));
            }
        } else {
            // New or resumed; a running dial loop picks up any other change itself.
            commands.push(Command::Dial(device.id));
            // Where it may connect from changed: its connection is checked again.
            if before.is_some_and(|b| b.allowed_networks != device.allowed_networks) {
                commands.push(Command::Disconnect(device.id, Why::Reconfigured));
            }
        }
    }
    // Ignoring a device or a folder it offers settles what it knocked with.
    for ignored in &new.ignored_devices {
        if !old.ignored_devices.iter().any(|d| d.id == ignored.id) {
            commands.push(Command::ForgetPendingDevice(ignored.id));
        }
    }
    for device in &new.devices {
        let before = old.devices.iter().find(|d| d.id == device.id);
        for folder in &device.ignored_folders {
            if before.is_none_or(|b| !b.ignored_folders.iter().any(|f| f.id == folder.id)) {
                commands.push(Command::ForgetPendingFolder(folder.id.clone(), device.id));
            }
        }
    }
    for removed in old.devices.iter().filter(|d| !new_devices.contains(&d.id)) {
        commands.push(Command::Disconnect(removed.id, Why::Removed));
    }
    let mut reconnect = BTreeSet::new();
    for folder in &old.folders {
        if new.folder(&folder.id).is_none() {
            commands.push(Command::StopFolder(folder.id.clone()));
            reconnect.extend(folder.devices.iter().copied());
        }
    }
    for folder in &new.folders {
        let before = old.folder(&folder.id);
        if before.is_none_or(|b| b.differs_in_effect(folder)) {
            let was_running = before.is_some_and(|b| !b.paused);
            let restart = before.is_some_and(|b| {
                b.path != folder.path
                    || b.watch != folder.watch
                    || b.watch_delay_s != folder.watch_delay_s
            });
            if folder.paused {
                commands.push(Command::StopFolder(folder.id.clone()));
            } else if !was_running || restart {
                // New, resumed, at a new root (a different folder on disk), or watched
                // differently: start over.
                commands.push(Command::StartFolder(folder.clone()));
            } else {
                commands.push(Command::UpdateFolder(folder.clone()));
            }
            let announced_changed = before.is_none_or(|b| {
                b.devices != folder.devices
                    || b.folder_type != folder.folder_type
                    || b.path != folder.path
                    || b.paused != folder.paused
            });
            if announced_changed {
                reconnect.extend(before.iter().flat_map(|b| b.devices.iter().copied()));
                reconnect.extend(folder.devices.iter().copied());
            }
        }
        for device in &folder.devices {
            commands.push(Command::ForgetPendingFolder(folder.id.clone(), *device));
        }
    }
    for device in reconnect.intersection(&new_devices) {
        commands.push(Command::Disconnect(*device, Why::Reconfigured));
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Address, DeviceConfig};

    const A: DeviceId = DeviceId::from_bytes([2; 32]);
    const B: DeviceId = DeviceId::from_bytes([3; 32]);

    fn base() -> Config {
        let mut config = Config::new("me".into(), "k".into());
        for id in [A, B] {
            config
                .devices
                .push(DeviceConfig::new(id, String::new(), vec![Address::Dynamic]));
        }
        let mut docs = FolderConfig::new("docs".into(), String::new(), "/d".into());
        docs.devices.push(A);
        config.folders.push(docs);
        config
    }

    fn without_routine(commands: Vec<Command>) -> Vec<Command> {
        // Dials and settled offers are repeated on every change; they are idempotent.
        commands
            .into_iter()
            .filter(|c| !matches!(c, Command::Dial(_) | Command::ForgetPendingFolder(..)))
            .collect()
    }

    #[test]
    fn no_change_touches_nothing() {
        assert_eq!(without_routine(diff(&base(), &base())), vec![]);
    }

    #[test]
    fn sharing_a_folder_reconnects_the_devices_concerned_only() {
        let old = base();
        let mut new = old.clone();
        new.folders[0].devices.push(B);
        let expected_update = Command::UpdateFolder(new.folders[0].clone());
        assert_eq!(
            without_routine(diff(&old, &new)),
            vec![
                expected_update,
                Command::Disconnect(A, Why::Reconfigured),
                Command::Disconnect(B, Why::Reconfigured),
            ]
        );
    }

    #[test]
    fn pausing_and_removing() {
        let old = base();
        let mut new = old.clone();
        new.devices[0].paused = true;
        new.devices.remove(1);
        new.folders[0].paused = true;
        assert_eq!(
            without_routine(diff(&old, &new)),
            vec![
                Command::Disconnect(A, Why::Paused),
                Command::Disconnect(B, Why::Removed),
                Command::StopFolder("docs".into()),
                Command::Disconnect(A, Why::Reconfigured),
            ]
        );
        // Resuming starts the folder and dials the device again.
        let back = diff(&new, &old);
        assert!(back.contains(&Command::StartFolder(old.folders[0].clone())));
        assert!(back.contains(&Command::Dial(A)));
        assert!(back.contains(&Command::ForgetPendingDevice(B)));
    }

    #[test]
    fn ignoring_a_device_or_an_offer_settles_it() {
        let old = base();
        let mut new = old.clone();
        let stranger = DeviceId::from_bytes([9; 32]);
        new.ignored_devices.push(crate::config::IgnoredDevice {
            id: stranger,
            name: String::new(),
            address: String::new(),
            time: String::new(),
        });
        new.devices[1]
            .ignored_folders
            .push(crate::config::IgnoredFolder {
                id: "photos".into(),
                label: String::new(),
                time: String::new(),
            });
        let commands = diff(&old, &new);
        assert!(commands.contains(&Command::ForgetPendingDevice(stranger)));
        assert!(commands.contains(&Command::ForgetPendingFolder("photos".into(), B)));
    }

    #[test]
    fn a_new_root_starts_the_folder_over_and_addresses_need_a_restart() {
        let old = base();
        let mut new = old.clone();
        new.folders[0].path = "/elsewhere".into();
        new.listen = vec![Address::quic("127.0.0.1", 1)];
        let commands = without_routine(diff(&old, &new));
        assert_eq!(commands[0], Command::RestartRequired);
        assert_eq!(commands[1], Command::StartFolder(new.folders[0].clone()));
    }
}
