//! The configuration in Syncthing's JSON shape (`/rest/config` and the legacy
//! `/rest/system/config`, which `syncthing cli` reads before every command). Fields peerfold
//! has no use for carry Syncthing's defaults, so Syncthing's clients parse it unchanged.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, ApiResult};
use crate::daemon::Shared;
use crate::live_config::{self, ConfigChangeError};
use crate::options;
use peerfold_engine::config::{Config, DeviceConfig, FolderConfig, FolderType};
use peerfold_engine::disk::scanner::MARKER_DIR;

use super::CONFIG_VERSION;

pub(super) async fn whole(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(config_json(&shared.config(), shared.me)))
}

pub(super) async fn devices(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(devices_json(&shared.config(), shared.me)))
}

pub(super) async fn device(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let wanted: peerfold_protocol::DeviceId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {id:?}: {e}")))?;
    devices_json(&shared.config(), shared.me)
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
            .config()
            .folders
            .iter()
            .map(|f| folder_json(f, shared.me))
            .collect(),
    )))
}

pub(super) async fn folder(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    shared
        .config()
        .folder(&id)
        .map(|f| axum::Json(folder_json(f, shared.me)))
        .ok_or_else(|| ApiError::not_found(format!("no folder {id:?}")))
}

pub(super) async fn options(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(options_json(&shared.config())))
}

pub(super) async fn default_folder(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(
        defaults_json(&shared.config(), shared.me)["folder"].clone(),
    ))
}

pub(super) async fn default_device(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(
        defaults_json(&shared.config(), shared.me)["device"].clone(),
    ))
}

/// PUT or PATCH of the default folder: peerfold keeps its `path`.
pub(super) async fn put_default_folder(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let value = body_json(&body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let new = live_config::change(&shared, |config| {
        apply_defaults(config, &json!({ "folder": value }))
    })
    .await?;
    Ok(axum::Json(defaults_json(&new, shared.me)["folder"].clone()))
}

pub(super) async fn gui(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(axum::Json(gui_json(&shared.config())))
}

pub(super) async fn restart_required(State(shared): State<Arc<Shared>>) -> ApiResult {
    let required = shared
        .restart_required
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(axum::Json(json!({ "requiresRestart": required })))
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
        "defaults": defaults_json(config, me),
    })
}

/// Syncthing's `defaults`: what a new folder and a new device get.
fn defaults_json(config: &Config, me: peerfold_protocol::DeviceId) -> Value {
    let folder = FolderConfig::new(
        String::new(),
        String::new(),
        std::path::PathBuf::from(&config.defaults.folder_path),
    );
    json!({
        "folder": folder_json(&folder, me),
        "device": device_json(&DeviceConfig::new(me, String::new(), vec!["dynamic".into()])),
        "ignores": { "lines": [] },
    })
}

/// Every device, this one first (Syncthing lists itself among the devices).
fn devices_json(config: &Config, me: peerfold_protocol::DeviceId) -> Value {
    let this = DeviceConfig::new(me, config.device_name.clone(), vec!["dynamic".into()]);
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
        "paused": device.paused,
        "allowedNetworks": [],
        "autoAcceptFolders": device.auto_accept_folders,
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

/// Syncthing's options object: the ones peerfold keeps (see `options`), and Syncthing's
/// defaults for the rest.
fn options_json(config: &Config) -> Value {
    let mut all = fixed_options_json();
    for setting in options::SETTINGS {
        all[setting.name] = options::get(config, setting);
    }
    all
}

/// Options peerfold does not use, as Syncthing's defaults (clients expect every field).
fn fixed_options_json() -> Value {
    json!({
        "localAnnouncePort": 21027,
        "localAnnounceMCAddr": "[ff12::8384]:21027",
        "maxSendKbps": 0,
        "maxRecvKbps": 0,
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

// ---- Changes: Syncthing's JSON in, our configuration out. Unknown fields are ignored. ----

impl From<ConfigChangeError> for ApiError {
    fn from(e: ConfigChangeError) -> Self {
        match e {
            ConfigChangeError::Invalid(m) => ApiError::bad_request(m),
            ConfigChangeError::Failed(m) => ApiError::internal(m),
        }
    }
}

/// The request body as JSON (axum's own rejection would answer in plain text).
fn body_json(body: &axum::body::Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

fn string_field(value: &Value, name: &str) -> Result<Option<String>, String> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{name:?} must be a string, not {other}")),
    }
}

fn bool_field(value: &Value, name: &str) -> Result<Option<bool>, String> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{name:?} must be true or false, not {other}")),
    }
}

fn device_id_field(value: &Value) -> Result<peerfold_protocol::DeviceId, String> {
    let text = string_field(value, "deviceID")?.ok_or("\"deviceID\" is missing")?;
    text.parse().map_err(|e| format!("deviceID {text:?}: {e}"))
}

/// A device object; fields it lacks keep `base`'s values (or the defaults).
fn device_from_json(value: &Value, base: Option<&DeviceConfig>) -> Result<DeviceConfig, String> {
    if !value.is_object() {
        return Err(format!("a device must be a JSON object, not {value}"));
    }
    let id = device_id_field(value)?;
    let name = string_field(value, "name")?
        .or_else(|| base.map(|b| b.name.clone()))
        .unwrap_or_default();
    let addresses = match value.get("addresses") {
        None | Some(Value::Null) => {
            base.map_or_else(|| vec!["dynamic".to_owned()], |b| b.addresses.clone())
        }
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("addresses must be strings, not {a}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("\"addresses\" must be a list, not {other}")),
    };
    for address in &addresses {
        peerfold_engine::config::check_address(address)
            .map_err(|e| format!("{e} (peerfold speaks QUIC: quic://HOST:PORT or dynamic)"))?;
    }
    Ok(DeviceConfig {
        id,
        name,
        addresses,
        paused: bool_field(value, "paused")?.unwrap_or(base.is_some_and(|b| b.paused)),
        auto_accept_folders: bool_field(value, "autoAcceptFolders")?
            .unwrap_or(base.is_some_and(|b| b.auto_accept_folders)),
    })
}

/// A folder object; fields it lacks keep `base`'s values (or the defaults).
fn folder_from_json(
    value: &Value,
    base: Option<&FolderConfig>,
    me: peerfold_protocol::DeviceId,
) -> Result<FolderConfig, String> {
    if !value.is_object() {
        return Err(format!("a folder must be a JSON object, not {value}"));
    }
    let id = string_field(value, "id")?
        .or_else(|| base.map(|b| b.id.clone()))
        .ok_or("\"id\" is missing")?;
    peerfold_engine::config::check_folder_id(&id)?;
    let path = match string_field(value, "path")? {
        Some(p) if p.starts_with("~/") => dirs::home_dir()
            .ok_or("no home directory to expand ~ in")?
            .join(&p[2..]),
        Some(p) => std::path::PathBuf::from(p),
        None => base.map(|b| b.path.clone()).ok_or("\"path\" is missing")?,
    };
    let folder_type = match string_field(value, "type")?.as_deref() {
        None => base.map_or(FolderType::SendReceive, |b| b.folder_type),
        Some("sendreceive") => FolderType::SendReceive,
        Some("sendonly") => FolderType::SendOnly,
        Some("receiveonly") => FolderType::ReceiveOnly,
        Some(other) => {
            return Err(format!(
                "folder type {other:?} is not supported (sendreceive, sendonly, receiveonly)"
            ));
        }
    };
    let devices = match value.get("devices") {
        None | Some(Value::Null) => base.map(|b| b.devices.clone()).unwrap_or_default(),
        Some(Value::Array(list)) => {
            let mut devices = Vec::new();
            for entry in list {
                let device = device_id_field(entry)?;
                // Syncthing lists the device itself among a folder's devices.
                if device != me && !devices.contains(&device) {
                    devices.push(device);
                }
            }
            devices
        }
        Some(other) => return Err(format!("\"devices\" must be a list, not {other}")),
    };
    let rescan_interval_s = match value.get("rescanIntervalS") {
        None | Some(Value::Null) => base.map_or(3600, |b| b.rescan_interval_s),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("rescanIntervalS must be a whole number, not {v}"))?,
    };
    let (versioning, versions_max_age_days) = match value.get("versioning") {
        None | Some(Value::Null) => {
            base.map_or((true, 30), |b| (b.versioning, b.versions_max_age_days))
        }
        Some(v) if !v.is_object() => {
            return Err(format!("\"versioning\" must be a JSON object, not {v}"));
        }
        Some(v) => match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "" | "none" => (false, base.map_or(30, |b| b.versions_max_age_days)),
            "trashcan" => {
                let days = v
                    .get("params")
                    .and_then(|p| p.get("cleanoutDays"))
                    .and_then(|d| {
                        d.as_str()
                            .map(str::to_owned)
                            .or_else(|| d.as_u64().map(|n| n.to_string()))
                    })
                    .map(|d| {
                        d.parse::<u64>()
                            .map_err(|_| format!("cleanoutDays must be a number, not {d:?}"))
                    })
                    .transpose()?
                    .unwrap_or(30);
                (true, days)
            }
            other => {
                return Err(format!(
                    "versioning type {other:?} is not supported (trashcan, or none)"
                ));
            }
        },
    };
    Ok(FolderConfig {
        id,
        label: string_field(value, "label")?
            .or_else(|| base.map(|b| b.label.clone()))
            .unwrap_or_default(),
        path,
        folder_type,
        devices,
        rescan_interval_s,
        versioning,
        versions_max_age_days,
        paused: bool_field(value, "paused")?.unwrap_or(base.is_some_and(|b| b.paused)),
    })
}

/// Applies an options object to `config`. Options peerfold keeps are checked and set;
/// the others may only repeat the value peerfold reports (clients send the whole object
/// back), so a setting peerfold would ignore is refused rather than dropped in silence.
fn apply_options(config: &mut Config, options: &Value) -> Result<(), String> {
    let Some(fields) = options.as_object() else {
        return Err(format!("options must be a JSON object, not {options}"));
    };
    let fixed = fixed_options_json();
    for (name, value) in fields {
        match options::setting(name) {
            Ok(setting) => options::set(config, setting, value)?,
            Err(_) if fixed.get(name).is_none_or(|ours| ours == value) => {}
            Err(_) => {
                return Err(format!(
                    "option {name:?} is not supported by peerfold (it keeps: {})",
                    options::SETTINGS
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Applies the `defaults` object's fields peerfold keeps.
fn apply_defaults(config: &mut Config, defaults: &Value) -> Result<(), String> {
    if !defaults.is_object() {
        return Err(format!("defaults must be a JSON object, not {defaults}"));
    }
    if let Some(folder) = defaults.get("folder").filter(|f| !f.is_object()) {
        return Err(format!(
            "defaults.folder must be a JSON object, not {folder}"
        ));
    }
    if let Some(folder) = defaults.get("folder")
        && let Some(path) = string_field(folder, "path")?
    {
        config.defaults.folder_path = path;
    }
    Ok(())
}

/// A whole configuration in Syncthing's shape.
fn config_from_json(
    value: &Value,
    current: &Config,
    me: peerfold_protocol::DeviceId,
) -> Result<Config, String> {
    if !value.is_object() {
        return Err("the configuration must be a JSON object".into());
    }
    let mut config = current.clone();
    if let Some(devices) = value.get("devices") {
        let list = devices.as_array().ok_or("\"devices\" must be a list")?;
        config.devices = list
            .iter()
            .map(|d| {
                let id = device_id_field(d)?;
                device_from_json(d, current.devices.iter().find(|c| c.id == id))
            })
            .filter(|d| d.as_ref().map_or(true, |d| d.id != me))
            .collect::<Result<_, _>>()?;
    }
    if let Some(folders) = value.get("folders") {
        let list = folders.as_array().ok_or("\"folders\" must be a list")?;
        config.folders = list
            .iter()
            .map(|f| {
                let id = f.get("id").and_then(Value::as_str).unwrap_or_default();
                folder_from_json(f, current.folder(id), me)
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(options) = value.get("options") {
        apply_options(&mut config, options)?;
    }
    if let Some(defaults) = value.get("defaults") {
        apply_defaults(&mut config, defaults)?;
    }
    if let Some(gui) = value.get("gui") {
        if !gui.is_object() {
            return Err(format!("\"gui\" must be a JSON object, not {gui}"));
        }
        if let Some(address) = string_field(gui, "address")? {
            config.api.address = address;
        }
        if let Some(key) = string_field(gui, "apiKey")?.filter(|k| !k.is_empty()) {
            config.api.key = key;
        }
    }
    Ok(config)
}

/// Replaces the item `same` picks out, or appends `item`.
fn upsert<T>(list: &mut Vec<T>, item: T, same: impl Fn(&T) -> bool) {
    match list.iter_mut().find(|x| same(x)) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

/// A body of one object or a list of them.
fn one_or_many(value: Value) -> Vec<Value> {
    match value {
        Value::Array(list) => list,
        single => vec![single],
    }
}

/// Replaces a whole section (`devices` or `folders`) with the body's list.
async fn replace_section(
    shared: &Arc<Shared>,
    body: &axum::body::Bytes,
    section: &str,
) -> ApiResult {
    let value = body_json(body)?;
    let me = shared.me;
    live_config::change(shared, |config| {
        *config = config_from_json(&json!({ section: value }), config, me)?;
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

/// Shallow merge of a PATCH body over the current object.
fn merged(mut current: Value, patch: &Value) -> Result<Value, ApiError> {
    let (Some(target), Some(fields)) = (current.as_object_mut(), patch.as_object()) else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    for (key, value) in fields {
        target.insert(key.clone(), value.clone());
    }
    Ok(current)
}

pub(super) async fn put_whole(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let value = body_json(&body)?;
    let me = shared.me;
    let new = live_config::change(&shared, |config| {
        *config = config_from_json(&value, config, me)?;
        Ok(())
    })
    .await?;
    Ok(axum::Json(config_json(&new, me)))
}

pub(super) async fn post_device(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let items = one_or_many(body_json(&body)?);
    let me = shared.me;
    live_config::change(&shared, |config| {
        for item in &items {
            let id = device_id_field(item)?;
            if id == me {
                return Err("that is this device's own ID".into());
            }
            let device = device_from_json(item, config.devices.iter().find(|d| d.id == id))?;
            upsert(&mut config.devices, device, |d| d.id == id);
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn put_devices(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    replace_section(&shared, &body, "devices").await
}

pub(super) async fn put_device(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_device(&shared, &id, body_json(&body)?, false).await
}

pub(super) async fn patch_device(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_device(&shared, &id, body_json(&body)?, true).await
}

async fn edit_device(shared: &Arc<Shared>, id: &str, mut value: Value, patch: bool) -> ApiResult {
    let wanted: peerfold_protocol::DeviceId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {id:?}: {e}")))?;
    if wanted == shared.me {
        return Err(ApiError::bad_request("that is this device's own ID"));
    }
    let current = shared.config();
    let existing = current.devices.iter().find(|d| d.id == wanted);
    if patch {
        let existing =
            existing.ok_or_else(|| ApiError::not_found(format!("no device {wanted}")))?;
        value = merged(device_json(existing), &value)?;
    }
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    value["deviceID"] = json!(wanted.to_string());
    live_config::change(shared, |config| {
        let base = config.devices.iter().find(|d| d.id == wanted);
        let device = device_from_json(&value, base)?;
        upsert(&mut config.devices, device, |d| d.id == wanted);
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn delete_device(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    let wanted: peerfold_protocol::DeviceId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {id:?}: {e}")))?;
    if !shared.is_known(wanted) {
        return Err(ApiError::not_found(format!("no device {wanted}")));
    }
    live_config::change(&shared, |config| {
        config.devices.retain(|d| d.id != wanted);
        // A removed device no longer shares anything.
        for folder in &mut config.folders {
            folder.devices.retain(|d| *d != wanted);
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn post_folder(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let items = one_or_many(body_json(&body)?);
    let me = shared.me;
    live_config::change(&shared, |config| {
        for item in &items {
            let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
            let folder = folder_from_json(item, config.folder(id), me)?;
            let id = folder.id.clone();
            upsert(&mut config.folders, folder, |f| f.id == id);
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn put_folders(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    replace_section(&shared, &body, "folders").await
}

pub(super) async fn put_folder(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_folder(&shared, &id, body_json(&body)?, false).await
}

pub(super) async fn patch_folder(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_folder(&shared, &id, body_json(&body)?, true).await
}

async fn edit_folder(shared: &Arc<Shared>, id: &str, mut value: Value, patch: bool) -> ApiResult {
    let current = shared.config();
    let existing = current.folder(id);
    if patch {
        let existing = existing.ok_or_else(|| ApiError::not_found(format!("no folder {id:?}")))?;
        value = merged(folder_json(existing, shared.me), &value)?;
    }
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    value["id"] = json!(id);
    let me = shared.me;
    live_config::change(shared, |config| {
        let folder = folder_from_json(&value, config.folder(id), me)?;
        upsert(&mut config.folders, folder, |f| f.id == id);
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn delete_folder(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    if shared.config().folder(&id).is_none() {
        return Err(ApiError::not_found(format!("no folder {id:?}")));
    }
    live_config::change(&shared, |config| {
        config.folders.retain(|f| f.id != id);
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn put_options(
    State(shared): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let value = body_json(&body)?;
    let new = live_config::change(&shared, |config| apply_options(config, &value)).await?;
    Ok(axum::Json(options_json(&new)))
}
