//! The configuration in Syncthing's JSON shape (`/rest/config` and the legacy
//! `/rest/system/config`, which `syncthing cli` reads before every command). Fields peerfold
//! has no use for carry Syncthing's defaults, so Syncthing's clients parse it unchanged.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, ApiResult};
use crate::config::{Config, DeviceConfig, FolderConfig};
use crate::daemon::Shared;
use crate::scanner::MARKER_DIR;

/// Syncthing's configuration version whose shape this follows.
const CONFIG_VERSION: u32 = 35;

pub(super) async fn whole(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(config_json(&shared.config, shared.me)))
}

pub(super) async fn devices(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(devices_json(&shared.config, shared.me)))
}

pub(super) async fn device(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let wanted: peerfold_protocol::DeviceId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {id:?}: {e}")))?;
    devices_json(&shared.config, shared.me)
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|d| d["deviceID"] == wanted.to_string())
                .cloned()
        })
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no device {wanted}")))
}

pub(super) async fn folders(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(Value::Array(
        shared
            .config
            .folders
            .iter()
            .map(|f| folder_json(f, shared.me))
            .collect(),
    )))
}

pub(super) async fn folder(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    shared
        .config
        .folder(&id)
        .map(|f| axum::Json(folder_json(f, shared.me)))
        .ok_or_else(|| ApiError::not_found(format!("no folder {id:?}")))
}

pub(super) async fn options(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(options_json(&shared.config)))
}

pub(super) async fn gui(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(gui_json(&shared.config)))
}

pub(super) async fn restart_required() -> ApiResult {
    Ok(axum::Json(json!({ "requiresRestart": false })))
}

fn config_json(config: &Config, me: peerfold_protocol::DeviceId) -> Value {
    json!({
        "version": CONFIG_VERSION,
        "folders": config.folders.iter().map(|f| folder_json(f, me)).collect::<Vec<_>>(),
        "devices": devices_json(config, me),
        "gui": gui_json(config),
        "ldap": {},
        "options": options_json(config),
        "remoteIgnoredDevices": [],
        "defaults": {},
    })
}

/// Every device, this one first (Syncthing lists itself among the devices).
fn devices_json(config: &Config, me: peerfold_protocol::DeviceId) -> Value {
    let this = DeviceConfig {
        id: me,
        name: config.device_name.clone(),
        addresses: vec!["dynamic".into()],
    };
    Value::Array(
        std::iter::once(&this)
            .chain(config.devices.iter())
            .map(device_json)
            .collect(),
    )
}

fn device_json(device: &DeviceConfig) -> Value {
    json!({
        "deviceID": device.id.to_string(),
        "name": device.name,
        "addresses": device.addresses,
        "compression": "metadata",
        "certName": "",
        "introducer": false,
        "skipIntroductionRemovals": false,
        "introducedBy": "",
        "paused": false,
        "allowedNetworks": [],
        "autoAcceptFolders": false,
        "maxSendKbps": 0,
        "maxRecvKbps": 0,
        "ignoredFolders": [],
        "maxRequestKiB": 0,
        "untrusted": false,
        "remoteGUIPort": 0,
    })
}

fn folder_json(folder: &FolderConfig, me: peerfold_protocol::DeviceId) -> Value {
    let devices: Vec<Value> = std::iter::once(me)
        .chain(folder.devices.iter().copied())
        .map(|id| json!({ "deviceID": id.to_string(), "introducedBy": "", "encryptionPassword": "" }))
        .collect();
    let versioning = if folder.versioning {
        json!({
            "type": "trashcan",
            "params": { "cleanoutDays": folder.versions_max_age_days.to_string() },
            "cleanupIntervalS": 3600,
            "fsPath": "",
            "fsType": "basic",
        })
    } else {
        json!({ "type": "", "params": {}, "cleanupIntervalS": 3600, "fsPath": "", "fsType": "basic" })
    };
    json!({
        "id": folder.id,
        "label": folder.label,
        "filesystemType": "basic",
        "path": folder.path,
        "type": folder.folder_type.as_str(),
        "devices": devices,
        "rescanIntervalS": folder.rescan_interval_s,
        "fsWatcherEnabled": true,
        "fsWatcherDelayS": 1,
        "ignorePerms": false,
        "autoNormalize": true,
        "minDiskFree": { "value": 1, "unit": "%" },
        "versioning": versioning,
        "copiers": 0,
        "pullerMaxPendingKiB": 0,
        "hashers": 0,
        "order": "random",
        "ignoreDelete": false,
        "scanProgressIntervalS": 0,
        "pullerPauseS": 0,
        "maxConflicts": -1,
        "disableSparseFiles": false,
        "disableTempIndexes": false,
        "paused": false,
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
    })
}

fn gui_json(config: &Config) -> Value {
    json!({
        "enabled": true,
        "address": config.api.address,
        "unixSocketPermissions": "",
        "user": "",
        "password": "",
        "authMode": "static",
        "useTLS": false,
        "apiKey": config.api.key,
        "insecureAdminAccess": false,
        "theme": "default",
        "debugging": false,
        "insecureSkipHostcheck": false,
        "insecureAllowFrameLoading": false,
    })
}

fn options_json(config: &Config) -> Value {
    json!({
        "listenAddresses": config.listen,
        "globalAnnounceServers": [],
        "globalAnnounceEnabled": false,
        "localAnnounceEnabled": false,
        "localAnnouncePort": 21027,
        "localAnnounceMCAddr": "[ff12::8384]:21027",
        "maxSendKbps": 0,
        "maxRecvKbps": 0,
        "reconnectionIntervalS": 60,
        "relaysEnabled": false,
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
        "limitBandwidthInLan": false,
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
