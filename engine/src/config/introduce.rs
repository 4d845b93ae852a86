//! Introducer devices (Syncthing's `introducer`). A device marked so lists, in its
//! ClusterConfig, every device it shares each folder with; for the folders it shares with
//! this device, those devices are added here (their `introduced_by` names the introducer,
//! their name and addresses as it knows them) and the folders shared with them. When the
//! introducer no longer lists a device it introduced for a folder (or no longer shares the
//! folder), the folder stops being shared with that device, and an introduced device left
//! with no folder is removed, unless the introducer is marked
//! `skip_introduction_removals`. Devices the user added are never removed.
//!
//! Pure: a configuration and what the introducer said in, the new configuration out.

use std::collections::HashMap;

use peerfold_protocol::DeviceId;

use super::{Address, Config, DeviceConfig};

/// Devices taken from one folder of an introducer's ClusterConfig, at most.
pub(crate) const MAX_INTRODUCED_PER_FOLDER: usize = 256;

/// A device as an introducer described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IntroducedDevice {
    pub(crate) id: DeviceId,
    pub(crate) name: String,
    pub(crate) addresses: Vec<String>,
}

/// One folder of an introducer's ClusterConfig: who else it is shared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IntroducedFolder {
    pub(crate) id: String,
    pub(crate) devices: Vec<IntroducedDevice>,
}

/// What an introducer said, as one configuration change (the engine makes it; clients
/// cannot send it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    pub(crate) introducer: DeviceId,
    pub(crate) folders: Vec<IntroducedFolder>,
}

/// `config` after `introducer` (this device is `me`) said who shares its folders; `None`
/// when nothing changes or `introducer` is not one.
pub(crate) fn introduce(
    config: &Config,
    me: DeviceId,
    introducer: DeviceId,
    folders: &[IntroducedFolder],
) -> Option<Config> {
    let marked = config
        .devices
        .iter()
        .find(|d| d.id == introducer && d.introducer)?;
    let removals = !marked.skip_introduction_removals;
    let mut new = config.clone();
    let listed: HashMap<&str, &[IntroducedDevice]> = folders
        .iter()
        .map(|f| (f.id.as_str(), f.devices.as_slice()))
        .collect();
    for folder in &mut new.folders {
        if !folder.devices.contains(&introducer) {
            continue;
        }
        let others = listed.get(folder.id.as_str()).copied().unwrap_or_default();
        for device in others
            .iter()
            .filter(|d| d.id != me && d.id != introducer)
            .take(MAX_INTRODUCED_PER_FOLDER)
        {
            if !new.devices.iter().any(|d| d.id == device.id) {
                let added = introduced(&new.defaults, device, introducer);
                new.devices.push(added);
            }
            if !folder.devices.contains(&device.id) {
                folder.devices.push(device.id);
            }
        }
    }
    if removals {
        let by_introducer = |id: &DeviceId| {
            new.devices
                .iter()
                .any(|d| d.id == *id && d.introduced_by == Some(introducer))
        };
        let mut unshared = Vec::new();
        for folder in &new.folders {
            if !folder.devices.contains(&introducer) {
                continue;
            }
            let others = listed.get(folder.id.as_str()).copied().unwrap_or_default();
            for device in &folder.devices {
                if by_introducer(device) && !others.iter().any(|o| o.id == *device) {
                    unshared.push((folder.id.clone(), *device));
                }
            }
        }
        for (folder, device) in unshared {
            if let Some(folder) = new.folders.iter_mut().find(|f| f.id == folder) {
                folder.devices.retain(|d| *d != device);
            }
        }
        let still_shared = |id: DeviceId| new.folders.iter().any(|f| f.devices.contains(&id));
        let gone: Vec<DeviceId> = new
            .devices
            .iter()
            .filter(|d| d.introduced_by == Some(introducer) && !still_shared(d.id))
            .map(|d| d.id)
            .collect();
        new.devices.retain(|d| !gone.contains(&d.id));
    }
    (new != *config).then_some(new)
}

/// A new device as the introducer described it (its addresses that parse; `dynamic` if
/// none does), with the default device's other settings.
fn introduced(
    defaults: &super::Defaults,
    device: &IntroducedDevice,
    introducer: DeviceId,
) -> DeviceConfig {
    let mut addresses: Vec<Address> = device
        .addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .take(16)
        .collect();
    if addresses.is_empty() {
        addresses.push(Address::Dynamic);
    }
    let name: String = device.name.chars().take(64).collect();
    // The default device's settings (Syncthing's rule), with what the introducer said.
    let mut config = defaults
        .new_device(device.id)
        .unwrap_or_else(|| DeviceConfig::new(device.id, String::new(), Vec::new()));
    config.name = name;
    config.addresses = addresses;
    config.introduced_by = Some(introducer);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FolderConfig;

    const ME: DeviceId = DeviceId::from_bytes([1; 32]);
    const INTRODUCER: DeviceId = DeviceId::from_bytes([2; 32]);
    const OTHER: DeviceId = DeviceId::from_bytes([3; 32]);
    const MINE: DeviceId = DeviceId::from_bytes([4; 32]);

    fn base(introducer: bool) -> Config {
        let mut config = Config::new("me".into(), "k".into());
        let mut device = DeviceConfig::new(INTRODUCER, "hub".into(), vec![Address::Dynamic]);
        device.introducer = introducer;
        config.devices.push(device);
        config.devices.push(DeviceConfig::new(
            MINE,
            "mine".into(),
            vec![Address::Dynamic],
        ));
        let mut docs = FolderConfig::new("docs".into(), String::new(), "/d".into());
        docs.devices = vec![INTRODUCER, MINE];
        config.folders.push(docs);
        let mut private = FolderConfig::new("private".into(), String::new(), "/p".into());
        private.devices = vec![MINE];
        config.folders.push(private);
        config
    }

    fn said(folder: &str, devices: &[DeviceId]) -> Vec<IntroducedFolder> {
        vec![IntroducedFolder {
            id: folder.into(),
            devices: devices
                .iter()
                .map(|id| IntroducedDevice {
                    id: *id,
                    name: "other".into(),
                    addresses: vec!["quic://192.0.2.1:22100".into(), "nonsense".into()],
                })
                .collect(),
        }]
    }

    #[test]
    fn an_introducer_adds_the_devices_of_the_folders_it_shares() {
        let everyone = [ME, INTRODUCER, OTHER];
        assert_eq!(
            introduce(&base(false), ME, INTRODUCER, &said("docs", &everyone)),
            None
        );
        let new = introduce(&base(true), ME, INTRODUCER, &said("docs", &everyone)).unwrap();
        let other = new.devices.iter().find(|d| d.id == OTHER).unwrap();
        assert_eq!(other.introduced_by, Some(INTRODUCER));
        assert_eq!(other.addresses, vec![Address::quic("192.0.2.1", 22100)]);
        assert!(new.folder("docs").unwrap().devices.contains(&OTHER));
        assert!(!new.folder("private").unwrap().devices.contains(&OTHER));
        new.check().unwrap();
        // Said again: nothing more to do.
        assert_eq!(
            introduce(&new, ME, INTRODUCER, &said("docs", &everyone)),
            None
        );
        // A folder this device does not share with the introducer brings nobody.
        assert_eq!(
            introduce(&base(true), ME, INTRODUCER, &said("private", &everyone)),
            None
        );
    }

    #[test]
    fn devices_the_introducer_drops_go_unless_removals_are_skipped() {
        let everyone = [ME, INTRODUCER, OTHER];
        let introduced = introduce(&base(true), ME, INTRODUCER, &said("docs", &everyone)).unwrap();
        let dropped = introduce(
            &introduced,
            ME,
            INTRODUCER,
            &said("docs", &[ME, INTRODUCER]),
        )
        .unwrap();
        assert!(!dropped.devices.iter().any(|d| d.id == OTHER), "removed");
        assert!(!dropped.folder("docs").unwrap().devices.contains(&OTHER));
        assert!(
            dropped.devices.iter().any(|d| d.id == MINE),
            "the user's own stays"
        );
        assert!(dropped.folder("docs").unwrap().devices.contains(&MINE));
        dropped.check().unwrap();

        let mut skipping = introduced.clone();
        skipping.devices[0].skip_introduction_removals = true;
        assert_eq!(
            introduce(&skipping, ME, INTRODUCER, &said("docs", &[ME, INTRODUCER])),
            None
        );
    }
}
