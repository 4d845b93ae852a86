//! The configuration in Syncthing's JSON shape (`/rest/config` and the legacy
//! `/rest/system/config`, which `syncthing cli` reads before every command). Fields peerfold
//! has no use for carry Syncthing's defaults, so Syncthing's clients parse it unchanged.

use axum::extract::{Path, State};
use peerfold_engine::config::{Address, Config, DeviceConfig, FolderConfig, VersioningType};
use peerfold_engine::disk::scanner::MARKER_DIR;
use peerfold_protocol::DeviceId;
use serde_json::{Value, json};

use super::syncthing_settings::with_kept;
use super::{ApiError, ApiResult, AppState};
use crate::options;

/// Syncthing's configuration version whose shape `/rest/config` follows.
pub(super) const CONFIG_VERSION: u32 = 35;

pub(super) async fn whole(State(api): AppState) -> ApiResult {
    Ok(axum::Json(config_json(
        &api.engine.config(),
        api.engine.device_id(),
    )))
}

pub(super) async fn devices(State(api): AppState) -> ApiResult {
    Ok(axum::Json(devices_json(
        &api.engine.config(),
        api.engine.device_id(),
    )))
}

pub(super) async fn device(State(api): AppState, Path(id): Path<String>) -> ApiResult {
    let wanted: DeviceId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {id:?}: {e}")))?;
    devices_json(&api.engine.config(), api.engine.device_id())
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|d| d["deviceID"] == wanted.to_string())
                .cloned()
        })
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no device {wanted}")))
}

pub(super) async fn folders(State(api): AppState) -> ApiResult {
    Ok(axum::Json(Value::Array(
        api.engine
            .config()
            .folders
            .iter()
            .map(|f| folder_json(f, api.engine.device_id()))
            .collect(),
    )))
}

pub(super) async fn folder(State(api): AppState, Path(id): Path<String>) -> ApiResult {
    api.engine
        .config()
        .folder(&id)
        .map(|f| axum::Json(folder_json(f, api.engine.device_id())))
        .ok_or_else(|| ApiError::not_found(format!("no folder {id:?}")))
}

pub(super) async fn options(State(api): AppState) -> ApiResult {
    Ok(axum::Json(options_json(&api.engine.config())))
}

pub(super) async fn default_folder(State(api): AppState) -> ApiResult {
    Ok(axum::Json(
        defaults_json(&api.engine.config(), api.engine.device_id())["folder"].clone(),
    ))
}

pub(super) async fn default_device(State(api): AppState) -> ApiResult {
    Ok(axum::Json(
        defaults_json(&api.engine.config(), api.engine.device_id())["device"].clone(),
    ))
}

pub(super) async fn default_ignores(State(api): AppState) -> ApiResult {
    Ok(axum::Json(
        defaults_json(&api.engine.config(), api.engine.device_id())["ignores"].clone(),
    ))
}

pub(super) async fn gui(State(api): AppState) -> ApiResult {
    Ok(axum::Json(gui_json(&api.engine.config())))
}

pub(super) async fn restart_required(State(api): AppState) -> ApiResult {
    let required = api.engine.restart_required();
    Ok(axum::Json(json!({ "requiresRestart": required })))
}

pub(super) fn config_json(config: &Config, me: DeviceId) -> Value {
    json!({
        "version": CONFIG_VERSION,
        "folders": config.folders.iter().map(|f| folder_json(f, me)).collect::<Vec<_>>(),
        "devices": devices_json(config, me),
        "gui": gui_json(config),
        "ldap": {},
        "options": options_json(config),
        "remoteIgnoredDevices": config.ignored_devices.iter().map(|d| json!({
            "deviceID": d.id.to_string(),
            "name": d.name,
            "address": d.address,
            "time": d.time,
        })).collect::<Vec<_>>(),
        "defaults": defaults_json(config, me),
    })
}

/// The device a new one starts as, with ID `id`.
pub(super) fn new_device(config: &Config, id: DeviceId) -> DeviceConfig {
    config
        .defaults
        .new_device(id)
        .unwrap_or_else(|| DeviceConfig::new(id, String::new(), vec![Address::Dynamic]))
}

/// Syncthing's `defaults`: what a new folder and a new device get.
pub(super) fn defaults_json(config: &Config, me: DeviceId) -> Value {
    let folder = config.defaults.new_folder(
        String::new(),
        String::new(),
        std::path::PathBuf::from(&config.defaults.folder_path),
    );
    json!({
        "folder": folder_json(&folder, me),
        "device": device_json(&new_device(config, me)),
        "ignores": { "lines": config.defaults.ignores },
    })
}

/// Every device, this one first (Syncthing lists itself among the devices).
pub(super) fn devices_json(config: &Config, me: DeviceId) -> Value {
    let this = DeviceConfig::new(me, config.device_name.clone(), vec![Address::Dynamic]);
    Value::Array(
        std::iter::once(&this)
            .chain(config.devices.iter())
            .map(device_json)
            .collect(),
    )
}

pub(super) fn device_json(device: &DeviceConfig) -> Value {
    let reported = json!({
        "deviceID": device.id.to_string(),
        "name": device.name,
        "addresses": device.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "compression": "metadata",
        "certName": "",
        "introducer": device.introducer,
        "skipIntroductionRemovals": device.skip_introduction_removals,
        "introducedBy": device.introduced_by.map(|id| id.to_string()).unwrap_or_default(),
        "paused": device.paused,
        "allowedNetworks": device.allowed_networks,
        "autoAcceptFolders": device.auto_accept_folders,
        "maxSendKbps": device.max_send_kbps,
        "maxRecvKbps": device.max_recv_kbps,
        "ignoredFolders": device.ignored_folders.iter().map(|f| json!({
            "id": f.id,
            "label": f.label,
            "time": f.time,
        })).collect::<Vec<_>>(),
        "maxRequestKiB": 0,
        "untrusted": false,
        "remoteGUIPort": 0,
    });
    // The addresses as written live among the kept settings; they count only while they
    // still stand for the ones dialed.
    let mut kept = device.unused_syncthing_settings.clone();
    kept.remove(super::config_edit::WRITTEN_ADDRESSES);
    let mut out = with_kept(reported, &kept);
    if let Some(written) = super::config_edit::written_addresses(device) {
        out["addresses"] = json!(written);
    }
    out
}

pub(super) fn folder_json(folder: &FolderConfig, me: DeviceId) -> Value {
    let devices: Vec<Value> = std::iter::once(me)
        .chain(folder.devices.iter().copied())
        .map(|id| json!({ "deviceID": id.to_string(), "introducedBy": "", "encryptionPassword": "" }))
        .collect();
    let params = match folder.versioning_type {
        _ if !folder.versioning => json!({}),
        VersioningType::Trashcan => {
            json!({ "cleanoutDays": folder.versions_max_age_days.to_string() })
        }
        VersioningType::Simple => json!({
            "keep": folder.versions_keep.to_string(),
            "cleanoutDays": folder.versions_max_age_days.to_string(),
        }),
        VersioningType::Staggered => json!({
            "maxAge": (folder.versions_max_age_days * 86_400).to_string(),
            "cleanInterval": "3600",
            "versionsPath": "",
        }),
    };
    let kind = if folder.versioning {
        folder.versioning_type.as_str()
    } else {
        ""
    };
    let versioning = json!({
        "type": kind,
        "params": params,
        "cleanupIntervalS": 3600,
        "fsPath": "",
        "fsType": "basic",
    });
    // Syncthing 1.19's clients read whole seconds; 2.x's take fractions.
    let watch_delay = folder.watch_delay_s.map_or(json!(1), whole_or_fraction);
    let reported = json!({
        "id": folder.id,
        "label": folder.label,
        "filesystemType": "basic",
        "path": folder.path,
        "type": folder.folder_type.as_str(),
        "devices": devices,
        "rescanIntervalS": folder.rescan_interval_s,
        "fsWatcherEnabled": folder.watch,
        "fsWatcherDelayS": watch_delay,
        "ignorePerms": folder.ignore_permissions,
        "autoNormalize": true,
        "minDiskFree": { "value": whole_or_fraction(folder.min_disk_free.value), "unit": folder.min_disk_free.unit },
        "versioning": versioning,
        "copiers": 0,
        "pullerMaxPendingKiB": 0,
        "hashers": 0,
        "order": folder.pull_order.as_str(),
        "ignoreDelete": folder.ignore_delete,
        "scanProgressIntervalS": 0,
        "pullerPauseS": 0,
        "maxConflicts": folder.max_conflicts,
        "disableSparseFiles": false,
        "disableTempIndexes": false,
        "paused": folder.paused,
        "weakHashThresholdPct": 25,
        "markerName": MARKER_DIR,
        "copyOwnershipFromParent": false,
        "modTimeWindowS": 0,
        "maxConcurrentWrites": 2,
        "disableFsync": false,
        "blockPullOrder": "standard",
        "copyRangeMethod": "standard",
        "caseSensitiveFS": true,
        "junctionsAsDirs": false,
    });
    with_kept(reported, &folder.unused_syncthing_settings)
}

/// A number as Go writes it: whole ones without a fraction (1.19's clients read some
/// settings into integers).
fn whole_or_fraction(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

pub(super) fn gui_json(config: &Config) -> Value {
    let reported = json!({
        "enabled": true,
        "address": config.api.address,
        "unixSocketPermissions": "",
        "user": config.api.user,
        "password": config.api.password_hash,
        "authMode": "static",
        "useTLS": false,
        "apiKey": config.api.key,
        "insecureAdminAccess": false,
        "theme": "default",
        "debugging": config.api.debugging,
        "insecureSkipHostcheck": false,
        "insecureAllowFrameLoading": false,
    });
    with_kept(reported, &config.api.unused_syncthing_settings)
}

/// Syncthing's options object: the ones peerfold keeps (see `options`), and Syncthing's
/// defaults for the rest.
pub(super) fn options_json(config: &Config) -> Value {
    let mut all = fixed_options_json();
    for setting in options::SETTINGS {
        all[setting.name] = options::get(config, setting);
    }
    with_kept(all, &config.options.unused_syncthing_settings)
}

/// Options peerfold does not use, as it reports them when none is kept (clients expect
/// every field).
pub(super) fn fixed_options_json() -> Value {
    json!({
        "localAnnouncePort": 21027,
        "localAnnounceMCAddr": "[ff12::8384]:21027",
        "relayReconnectIntervalM": 10,
        "startBrowser": false,
        "natEnabled": false,
        "natLeaseMinutes": 60,
        "natRenewalMinutes": 30,
        "natTimeoutSeconds": 10,
        "urAccepted": -1,
        "urSeen": 0,
        "urUniqueId": "",
        "urURL": "",
        "urPostInsecurely": false,
        "urInitialDelayS": 1800,
        "autoUpgradeIntervalH": 0,
        "upgradeToPreReleases": false,
        "keepTemporariesH": 24,
        "cacheIgnoredFiles": false,
        "progressUpdateIntervalS": 5,
        "minHomeDiskFree": { "value": 1, "unit": "%" },
        "releasesURL": "",
        "alwaysLocalNets": [],
        "overwriteRemoteDeviceNamesOnConnect": false,
        "tempIndexMinBlocks": 10,
        "unackedNotificationIDs": [],
        "trafficClass": 0,
        "setLowPriority": true,
        "maxFolderConcurrency": 0,
        "crURL": "",
        "crashReportingEnabled": false,
        "stunKeepaliveStartS": 180,
        "stunKeepaliveMinS": 20,
        "stunServers": [],
        "databaseTuning": "auto",
        "maxConcurrentIncomingRequestKiB": 0,
        "announceLANAddresses": true,
        "sendFullIndexOnUpgrade": false,
        "featureFlags": [],
        "connectionLimitEnough": 0,
        "connectionLimitMax": 0,
        "insecureAllowOldTLSVersions": false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::syncthing_settings::{DEVICE, FOLDER, GUI, OPTIONS, Section};
    use super::*;

    fn assert_covers(section: &Section, reported: &Value, used: &[&str]) {
        for name in reported.as_object().unwrap().keys() {
            let known = section.used.contains(&name.as_str())
                || used.contains(&name.as_str())
                || section.unused.contains(&name.as_str())
                || section.refused.iter().any(|(n, _)| n == name);
            assert!(
                known,
                "{} setting {name:?} is neither used, kept nor refused",
                section.name
            );
        }
    }

    #[test]
    fn every_reported_setting_is_used_kept_or_refused() {
        let me = DeviceId::from_bytes([1; 32]);
        let config = Config::new("me".into(), "key".into());
        let folder = FolderConfig::new("f".into(), String::new(), "/f".into());
        assert_covers(&FOLDER, &folder_json(&folder, me), &[]);
        let device = DeviceConfig::new(me, String::new(), vec![Address::Dynamic]);
        assert_covers(&DEVICE, &device_json(&device), &[]);
        assert_covers(&GUI, &gui_json(&config), &[]);
        let used: Vec<&str> = options::SETTINGS.iter().map(|s| s.name).collect();
        assert_covers(&OPTIONS, &options_json(&config), &used);
    }
}
