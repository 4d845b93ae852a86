//! Configuration changes in Syncthing's JSON: each request becomes one typed
//! [`ConfigEdit`] (parsed against the configuration as it stands), which the engine
//! checks, saves and applies. Unknown fields are ignored; a setting peerfold would drop is
//! refused instead.

use axum::extract::{Path, State};
use peerfold_engine::config::{
    Address, Config, ConfigEdit, DeviceConfig, IgnoredDevice, IgnoredFolder, OptionChange,
};
use peerfold_protocol::DeviceId;
use serde_json::{Value, json};
use tracing::warn;

use super::config_json::{
    defaults_json, device_json, fixed_options_json, folder_json, gui_json, new_device, options_json,
};
use super::folder_edit::folder_from_json;
use super::syncthing_settings as settings;
use super::{ApiError, ApiResult, AppState};
use crate::options;

/// Applies one edit; a refused one is the client's fault (400).
async fn change(api: &super::Api, edit: ConfigEdit) -> Result<std::sync::Arc<Config>, ApiError> {
    Ok(api.engine.change_config(edit).await?)
}

/// The request body as JSON (axum's own rejection would answer in plain text).
/// A request body as JSON, or a 400 that says why not.
pub(super) fn body_json(body: &axum::body::Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

pub(super) fn string_field(value: &Value, name: &str) -> Result<Option<String>, String> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{name:?} must be a string, not {other}")),
    }
}

pub(super) fn bool_field(value: &Value, name: &str) -> Result<Option<bool>, String> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{name:?} must be true or false, not {other}")),
    }
}

/// A rate limit in KiB/s; 0 or less (Syncthing's way) is none.
fn kib_per_second(value: &Value, name: &str) -> Result<Option<u64>, String> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) => Ok(Some(u64::try_from(n).unwrap_or(0))),
            None => Err(format!("{name} must be a whole number of KiB/s, not {v}")),
        },
    }
}

pub(super) fn device_id_field(value: &Value) -> Result<DeviceId, String> {
    let text = string_field(value, "deviceID")?.ok_or("\"deviceID\" is missing")?;
    text.parse().map_err(|e| format!("deviceID {text:?}: {e}"))
}

/// A device object; fields it lacks keep `base`'s values (or the defaults).
/// A device address as Syncthing's clients send it: an empty entry (stman sends `[""]`) is
/// no address; `tcp://` (and `tcp4://`, `tcp6://`, `quic4://`, `quic6://`) is taken as
/// `quic://` at the same host and port, with a warning in the log (peerfold dials QUIC
/// only, and a Syncthing device listens for QUIC on its TCP port too).
fn syncthing_address(text: &str) -> Result<Option<Address>, String> {
    let address = syncthing_address_quiet(text)?;
    let text = text.trim();
    if let Some(quic) = &address
        && text.starts_with("tcp")
    {
        warn!(address = %text, as_quic = %quic, "peerfold dials QUIC only: a TCP address is taken as QUIC at the same host and port");
    }
    Ok(address)
}

/// [`syncthing_address`] without the log line.
fn syncthing_address_quiet(text: &str) -> Result<Option<Address>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mut owned = text.to_owned();
    for scheme in ["tcp://", "tcp4://", "tcp6://", "quic4://", "quic6://"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            owned = format!("quic://{rest}");
            break;
        }
    }
    owned
        .parse::<Address>()
        .map(Some)
        .map_err(|e| format!("{e} (peerfold speaks QUIC: quic://HOST:PORT or dynamic)"))
}

/// Where a device's addresses are kept as a client wrote them.
pub(super) const WRITTEN_ADDRESSES: &str = "addresses";

/// The addresses of `device` as a client wrote them, while they still stand for the ones
/// peerfold dials (a `tcp://` address it takes as `quic://`).
pub(super) fn written_addresses(device: &DeviceConfig) -> Option<Vec<String>> {
    let text = device.unused_syncthing_settings.get(WRITTEN_ADDRESSES)?;
    let written: Vec<String> = serde_json::from_str(text).ok()?;
    let mapped: Vec<Address> = written
        .iter()
        .filter_map(|a| syncthing_address_quiet(a).ok().flatten())
        .collect();
    (mapped == device.addresses).then_some(written)
}

/// What fields a device object leaves out keep: the device's own, or, for a new one, the
/// default device's (`defaults.device`).
fn device_base(config: &Config, id: DeviceId) -> Option<DeviceConfig> {
    config
        .devices
        .iter()
        .find(|d| d.id == id)
        .cloned()
        .or_else(|| config.defaults.new_device(id))
}

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
            base.map_or_else(|| vec![Address::Dynamic], |b| b.addresses.clone())
        }
        Some(Value::Array(list)) => {
            let mut addresses = Vec::new();
            for a in list {
                let text = a
                    .as_str()
                    .ok_or_else(|| format!("addresses must be strings, not {a}"))?;
                if let Some(address) = syncthing_address(text)? {
                    addresses.push(address);
                }
            }
            // Syncthing's rule: no address at all means "find it".
            if addresses.is_empty() {
                addresses.push(Address::Dynamic);
            }
            addresses
        }
        Some(other) => return Err(format!("\"addresses\" must be a list, not {other}")),
    };
    let fresh = DeviceConfig::new(id, String::new(), vec![Address::Dynamic]);
    let mut unused_syncthing_settings = settings::take(
        &settings::DEVICE,
        value,
        &device_json(base.unwrap_or(&fresh)),
        &device_json(&fresh),
        &base
            .map(|b| b.unused_syncthing_settings.clone())
            .unwrap_or_default(),
    )?;
    // Addresses written in Syncthing's forms (`tcp://...`) are kept as written too, so a
    // client reads back, and can remove, what it wrote (see `written_addresses`).
    if let Some(Value::Array(list)) = value.get("addresses") {
        let written: Vec<&str> = list
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let ours: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        if written.is_empty() || written == ours {
            unused_syncthing_settings.remove(WRITTEN_ADDRESSES);
        } else {
            unused_syncthing_settings.insert(WRITTEN_ADDRESSES.into(), json!(written).to_string());
        }
    }
    Ok(DeviceConfig {
        id,
        name,
        addresses,
        paused: bool_field(value, "paused")?.unwrap_or(base.is_some_and(|b| b.paused)),
        auto_accept_folders: bool_field(value, "autoAcceptFolders")?
            .unwrap_or(base.is_some_and(|b| b.auto_accept_folders)),
        introducer: bool_field(value, "introducer")?.unwrap_or(base.is_some_and(|b| b.introducer)),
        skip_introduction_removals: bool_field(value, "skipIntroductionRemovals")?
            .unwrap_or(base.is_some_and(|b| b.skip_introduction_removals)),
        introduced_by: match string_field(value, "introducedBy")? {
            None => base.and_then(|b| b.introduced_by),
            Some(text) if text.is_empty() => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|e| format!("introducedBy {text:?}: {e}"))?,
            ),
        },
        allowed_networks: match value.get("allowedNetworks") {
            None => base.map(|b| b.allowed_networks.clone()).unwrap_or_default(),
            Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("allowedNetworks must be strings, not {n}"))
                })
                .collect::<Result<_, String>>()?,
            Some(other) => return Err(format!("allowedNetworks must be a list, not {other}")),
        },
        ignored_folders: match value.get("ignoredFolders") {
            None => base.map(|b| b.ignored_folders.clone()).unwrap_or_default(),
            Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|f| {
                    Ok(IgnoredFolder {
                        id: string_field(f, "id")?.ok_or("an ignored folder needs its \"id\"")?,
                        label: string_field(f, "label")?.unwrap_or_default(),
                        time: string_field(f, "time")?.unwrap_or_default(),
                    })
                })
                .collect::<Result<_, String>>()?,
            Some(other) => return Err(format!("ignoredFolders must be a list, not {other}")),
        },
        max_send_kbps: kib_per_second(value, "maxSendKbps")?
            .unwrap_or(base.map_or(0, |b| b.max_send_kbps)),
        max_recv_kbps: kib_per_second(value, "maxRecvKbps")?
            .unwrap_or(base.map_or(0, |b| b.max_recv_kbps)),
        unused_syncthing_settings,
    })
}

/// The changes an options object makes. Options peerfold uses are checked and set; the
/// others are kept without effect or refused unless unchanged (see `syncthing_settings`):
/// none is dropped in silence.
fn option_changes(options: &Value, current: &Config) -> Result<Vec<OptionChange>, String> {
    let Some(fields) = options.as_object() else {
        return Err(format!("options must be a JSON object, not {options}"));
    };
    let fixed = fixed_options_json();
    let mut changes = Vec::new();
    for (name, value) in fields {
        if let Ok(setting) = options::setting(name) {
            changes.push(options::change(setting, value)?);
        }
    }
    let before = &current.options.unused_syncthing_settings;
    let kept = settings::take(
        &settings::OPTIONS,
        options,
        &options_json(current),
        &fixed,
        before,
    )?;
    if kept != *before {
        changes.push(OptionChange::UnusedSyncthingSettings(kept));
    }
    Ok(changes)
}

/// The default folder path in a `defaults` object, if it sets one.
fn default_folder_path(defaults: &Value) -> Result<Option<String>, String> {
    if !defaults.is_object() {
        return Err(format!("defaults must be a JSON object, not {defaults}"));
    }
    if let Some(folder) = defaults.get("folder").filter(|f| !f.is_object()) {
        return Err(format!(
            "defaults.folder must be a JSON object, not {folder}"
        ));
    }
    match defaults.get("folder") {
        Some(folder) => string_field(folder, "path"),
        None => Ok(None),
    }
}

/// `config` with a `defaults` object applied: the default folder's settings (and its path,
/// where auto-accepted folders go), the default device's settings, the default ignore
/// patterns.
fn apply_defaults(config: &mut Config, defaults: &Value, me: DeviceId) -> Result<(), String> {
    if let Some(device) = defaults.get("device") {
        // Parsed as a device with this device's ID as a stand-in: it is no default's.
        let mut sent = device.clone();
        sent["deviceID"] = json!(me.to_string());
        let current = new_device(config, me);
        let template = device_from_json(&sent, Some(&current))?;
        config.defaults.device = (template
            != DeviceConfig::new(me, String::new(), vec![Address::Dynamic]))
        .then_some(template);
    }
    if let Some(path) = default_folder_path(defaults)? {
        config.defaults.folder_path = path;
    }
    if let Some(folder) = defaults.get("folder") {
        // Parsed as a folder with a stand-in ID and path: neither is a default's.
        let mut sent = folder.clone();
        sent["id"] = json!("default-folder");
        sent["path"] = json!("/");
        let current =
            config
                .defaults
                .new_folder("default-folder".into(), String::new(), "/".into());
        let mut template = folder_from_json(&sent, Some(&current), &current, me)?;
        template.id = String::new();
        template.path = std::path::PathBuf::new();
        config.defaults.folder = Some(template);
    }
    if let Some(ignores) = defaults.get("ignores") {
        config.defaults.ignores = ignore_lines(ignores)?;
    }
    Ok(())
}

/// `{"lines": [...]}`: ignore patterns, one per line.
fn ignore_lines(value: &Value) -> Result<Vec<String>, String> {
    let lines = value
        .get("lines")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("ignores must be {{\"lines\": [...]}}, not {value}"))?;
    lines
        .iter()
        .map(|l| {
            l.as_str()
                .filter(|l| !l.contains(['\n', '\r', '\0']))
                .map(str::to_owned)
                .ok_or_else(|| format!("an ignore pattern must be one line of text, not {l}"))
        })
        .collect()
}

/// A whole configuration in Syncthing's shape.
fn config_from_json(value: &Value, current: &Config, me: DeviceId) -> Result<Config, String> {
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
                device_from_json(d, device_base(current, id).as_ref())
            })
            .filter(|d| d.as_ref().map_or(true, |d| d.id != me))
            .collect::<Result<_, _>>()?;
        // This device's own entry names it (Syncthing's GUI renames a device so).
        let own = list
            .iter()
            .find(|d| device_id_field(d).is_ok_and(|id| id == me));
        if let Some(name) = own.and_then(|d| d.get("name")).and_then(Value::as_str) {
            config.device_name = name.to_owned();
        }
    }
    if let Some(folders) = value.get("folders") {
        let list = folders.as_array().ok_or("\"folders\" must be a list")?;
        config.folders = list
            .iter()
            .map(|f| {
                let id = f.get("id").and_then(Value::as_str).unwrap_or_default();
                let template = current.defaults.new_folder(
                    id.to_owned(),
                    String::new(),
                    std::path::PathBuf::new(),
                );
                folder_from_json(f, current.folder(id), &template, me)
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(options) = value.get("options") {
        for change in option_changes(options, current)? {
            ConfigEdit::SetOption(change)
                .apply(&mut config, me)
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(defaults) = value.get("defaults") {
        apply_defaults(&mut config, defaults, me)?;
    }
    match value.get("remoteIgnoredDevices") {
        None => {}
        Some(Value::Null) => config.ignored_devices.clear(),
        Some(Value::Array(list)) => {
            config.ignored_devices = list
                .iter()
                .map(|d| {
                    Ok(IgnoredDevice {
                        id: device_id_field(d)?,
                        name: string_field(d, "name")?.unwrap_or_default(),
                        address: string_field(d, "address")?.unwrap_or_default(),
                        time: string_field(d, "time")?.unwrap_or_default(),
                    })
                })
                .collect::<Result<_, String>>()?;
        }
        Some(other) => return Err(format!("remoteIgnoredDevices must be a list, not {other}")),
    }
    if let Some(gui) = value.get("gui") {
        if !gui.is_object() {
            return Err(format!("\"gui\" must be a JSON object, not {gui}"));
        }
        let fresh = Config::new(String::new(), String::new());
        config.api.unused_syncthing_settings = settings::take(
            &settings::GUI,
            gui,
            &gui_json(current),
            &gui_json(&fresh),
            &current.api.unused_syncthing_settings,
        )?;
        if let Some(address) = string_field(gui, "address")? {
            config.api.address = address;
        }
        if let Some(key) = string_field(gui, "apiKey")?.filter(|k| !k.is_empty()) {
            config.api.key = key;
        }
        if let Some(user) = string_field(gui, "user")? {
            config.api.user = user;
        }
        // Handlers pass passwords through `auth::hash_new_password` first: only a PHC
        // string (or nothing) arrives here.
        if let Some(hash) = string_field(gui, "password")? {
            config.api.password_hash = hash;
        }
        if let Some(on) = bool_field(gui, "debugging")? {
            config.api.debugging = on;
        }
    }
    Ok(config)
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

/// Applies one part of `defaults` (`folder`, `device` or `ignores`) from a request body;
/// answers with that part as it stands.
async fn put_default(api: &super::Api, part: &str, body: &axum::body::Bytes) -> ApiResult {
    let value = body_json(body)?;
    if part != "ignores" && !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let me = api.engine.device_id();
    let mut new = (*api.engine.config()).clone();
    apply_defaults(&mut new, &json!({ part: value }), me).map_err(ApiError::bad_request)?;
    let new = change(api, ConfigEdit::Replace(Box::new(new))).await?;
    Ok(axum::Json(defaults_json(&new, me)[part].clone()))
}

/// PUT or PATCH of the default folder (its settings and its path).
pub(super) async fn put_default_folder(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    put_default(&api, "folder", &body).await
}

/// PUT or PATCH of the default device: peerfold keeps none of its fields yet, so it may only
/// repeat what peerfold reports.
pub(super) async fn put_default_device(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    put_default(&api, "device", &body).await
}

/// PUT of the default ignore patterns (`{"lines": [...]}`).
pub(super) async fn put_default_ignores(
    State(api): AppState,
    body: axum::body::Bytes,
) -> ApiResult {
    put_default(&api, "ignores", &body).await
}

/// PUT or PATCH of the GUI settings (fields left out keep their values).
pub(super) async fn put_gui(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    let mut value = body_json(&body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let (current, me) = (api.engine.config(), api.engine.device_id());
    super::auth::hash_new_password(&mut value, &current.api.password_hash).await?;
    let new =
        config_from_json(&json!({ "gui": value }), &current, me).map_err(ApiError::bad_request)?;
    let new = change(&api, ConfigEdit::Replace(Box::new(new))).await?;
    Ok(axum::Json(gui_json(&new)))
}

pub(super) async fn put_whole(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    let mut value = body_json(&body)?;
    let (current, me) = (api.engine.config(), api.engine.device_id());
    if let Some(gui) = value.get_mut("gui") {
        super::auth::hash_new_password(gui, &current.api.password_hash).await?;
    }
    let new = config_from_json(&value, &current, me).map_err(ApiError::bad_request)?;
    let new = change(&api, ConfigEdit::Replace(Box::new(new))).await?;
    Ok(axum::Json(super::config_json::config_json(&new, me)))
}

/// A body of one object or a list of them.
fn one_or_many(value: Value) -> Vec<Value> {
    match value {
        Value::Array(list) => list,
        single => vec![single],
    }
}

/// Replaces a whole section (`devices` or `folders`) with the body's list.
async fn replace_section(api: &super::Api, body: &axum::body::Bytes, section: &str) -> ApiResult {
    let value = body_json(body)?;
    let me = api.engine.device_id();
    let new = config_from_json(&json!({ section: value }), &api.engine.config(), me)
        .map_err(ApiError::bad_request)?;
    let edit = if section == "devices" {
        ConfigEdit::SetDevices(new.devices)
    } else {
        ConfigEdit::SetFolders(new.folders)
    };
    change(api, edit).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn post_device(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    let items = one_or_many(body_json(&body)?);
    let current = api.engine.config();
    let mut edits = Vec::new();
    for item in &items {
        let id = device_id_field(item).map_err(ApiError::bad_request)?;
        if id == api.engine.device_id() {
            return Err(ApiError::bad_request("that is this device's own ID"));
        }
        let device = device_from_json(item, device_base(&current, id).as_ref())
            .map_err(ApiError::bad_request)?;
        edits.push(ConfigEdit::SetDevice(device));
    }
    change(&api, ConfigEdit::Several(edits)).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn put_devices(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    replace_section(&api, &body, "devices").await
}

pub(super) async fn put_device(
    State(api): AppState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_device(&api, &id, body_json(&body)?, false).await
}

pub(super) async fn patch_device(
    State(api): AppState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_device(&api, &id, body_json(&body)?, true).await
}

/// This device's own entry (Syncthing lists it among the devices): its `name` is this
/// device's name, which is how Syncthing's GUI renames a device; nothing else of it can
/// change.
async fn rename_self(api: &super::Api, value: &Value) -> ApiResult {
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let current = api.engine.config();
    let me = api.engine.device_id();
    let mut new = (*current).clone();
    if let Some(name) = string_field(value, "name").map_err(ApiError::bad_request)? {
        new.device_name = name;
    }
    let new = change(api, ConfigEdit::Replace(Box::new(new))).await?;
    let own = super::config_json::devices_json(&new, me)[0].clone();
    Ok(axum::Json(own))
}

fn device_path_id(id: &str) -> Result<DeviceId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {id:?}: {e}")))
}

async fn edit_device(api: &super::Api, id: &str, mut value: Value, patch: bool) -> ApiResult {
    let wanted = device_path_id(id)?;
    if wanted == api.engine.device_id() {
        return rename_self(api, &value).await;
    }
    let current = api.engine.config();
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
    let device = device_from_json(&value, existing).map_err(ApiError::bad_request)?;
    change(api, ConfigEdit::SetDevice(device)).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn delete_device(State(api): AppState, Path(id): Path<String>) -> ApiResult {
    let wanted = device_path_id(&id)?;
    if !api.engine.config().devices.iter().any(|d| d.id == wanted) {
        return Err(ApiError::not_found(format!("no device {wanted}")));
    }
    change(&api, ConfigEdit::RemoveDevice(wanted)).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn post_folder(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    let items = one_or_many(body_json(&body)?);
    let (current, me) = (api.engine.config(), api.engine.device_id());
    let mut edits = Vec::new();
    for item in &items {
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
        let template =
            current
                .defaults
                .new_folder(id.to_owned(), String::new(), std::path::PathBuf::new());
        let folder = folder_from_json(item, current.folder(id), &template, me)
            .map_err(ApiError::bad_request)?;
        edits.push(ConfigEdit::SetFolder(folder));
    }
    let added: Vec<String> = edits
        .iter()
        .filter_map(|e| match e {
            ConfigEdit::SetFolder(f) if current.folder(&f.id).is_none() => Some(f.id.clone()),
            _ => None,
        })
        .collect();
    change(&api, ConfigEdit::Several(edits)).await?;
    for id in added {
        start_with_default_ignores(&api, &id).await;
    }
    Ok(axum::Json(json!({})))
}

/// A folder just added gets the default ignore patterns, unless it has patterns of its own.
async fn start_with_default_ignores(api: &super::Api, id: &str) {
    let lines = api.engine.config().defaults.ignores.clone();
    let Ok(folder) = api.engine.folder(id) else {
        return;
    };
    if lines.is_empty() || !folder.ignores().await.is_ok_and(|own| own.is_empty()) {
        return;
    }
    if let Err(e) = folder.set_ignores(&lines).await {
        warn!(folder = %id, error = %e, "cannot write the default ignore patterns");
    }
}

pub(super) async fn put_folders(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    replace_section(&api, &body, "folders").await
}

pub(super) async fn put_folder(
    State(api): AppState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_folder(&api, &id, body_json(&body)?, false).await
}

pub(super) async fn patch_folder(
    State(api): AppState,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    edit_folder(&api, &id, body_json(&body)?, true).await
}

async fn edit_folder(api: &super::Api, id: &str, mut value: Value, patch: bool) -> ApiResult {
    let (current, me) = (api.engine.config(), api.engine.device_id());
    let existing = current.folder(id);
    if patch {
        let existing = existing.ok_or_else(|| ApiError::not_found(format!("no folder {id:?}")))?;
        value = merged(folder_json(existing, me), &value)?;
    }
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    value["id"] = json!(id);
    let template =
        current
            .defaults
            .new_folder(id.to_owned(), String::new(), std::path::PathBuf::new());
    let folder =
        folder_from_json(&value, existing, &template, me).map_err(ApiError::bad_request)?;
    change(api, ConfigEdit::SetFolder(folder)).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn delete_folder(State(api): AppState, Path(id): Path<String>) -> ApiResult {
    if api.engine.config().folder(&id).is_none() {
        return Err(ApiError::not_found(format!("no folder {id:?}")));
    }
    change(&api, ConfigEdit::RemoveFolder(id)).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn put_options(State(api): AppState, body: axum::body::Bytes) -> ApiResult {
    let value = body_json(&body)?;
    let changes = option_changes(&value, &api.engine.config()).map_err(ApiError::bad_request)?;
    let edit = ConfigEdit::Several(changes.into_iter().map(ConfigEdit::SetOption).collect());
    let new = change(&api, edit).await?;
    Ok(axum::Json(options_json(&new)))
}
