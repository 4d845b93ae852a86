//! A folder object in Syncthing's JSON, as `config_edit` takes it: the settings peerfold
//! uses parsed into a `FolderConfig` (fields left out keep their values), the others kept
//! or refused (`syncthing_settings`).

use peerfold_engine::config::{FolderConfig, FolderType, MinDiskFree, VersioningType};
use peerfold_engine::model::UnknownPullOrder;
use peerfold_protocol::DeviceId;
use serde_json::Value;

use super::config_edit::{bool_field, device_id_field, string_field};
use super::config_json::folder_json;
use super::syncthing_settings as settings;

/// A folder object; fields it lacks keep `base`'s values (or the defaults).
/// A new folder (no `base`) starts from `template`, the default folder's settings.
pub(super) fn folder_from_json(
    value: &Value,
    base: Option<&FolderConfig>,
    template: &FolderConfig,
    me: DeviceId,
) -> Result<FolderConfig, String> {
    if !value.is_object() {
        return Err(format!("a folder must be a JSON object, not {value}"));
    }
    let id = string_field(value, "id")?
        .or_else(|| base.map(|b| b.id.clone()))
        .ok_or("\"id\" is missing")?;
    peerfold_engine::config::check_folder_id(&id).map_err(|e| e.to_string())?;
    let path = match string_field(value, "path")? {
        Some(p) if p.starts_with("~/") => dirs::home_dir()
            .ok_or("no home directory to expand ~ in")?
            .join(&p[2..]),
        Some(p) => std::path::PathBuf::from(p),
        None => base.map(|b| b.path.clone()).ok_or("\"path\" is missing")?,
    };
    // From here on every setting a new folder does not set comes from the template.
    let start = base.unwrap_or(template);
    let folder_type = match string_field(value, "type")? {
        None => start.folder_type,
        Some(text) => text.parse::<FolderType>().map_err(|e| e.to_string())?,
    };
    let devices = match value.get("devices") {
        None | Some(Value::Null) => start.devices.clone(),
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
        None | Some(Value::Null) => start.rescan_interval_s,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("rescanIntervalS must be a whole number, not {v}"))?,
    };
    let versioning = match value.get("versioning") {
        None | Some(Value::Null) => Versioning::of(start),
        Some(v) => Versioning::from_json(v, Versioning::of(start))?,
    };
    let fresh = FolderConfig::new(id.clone(), String::new(), path.clone());
    let reported = folder_json(start, me);
    let unused_syncthing_settings = settings::take(
        &settings::FOLDER,
        value,
        &reported,
        &folder_json(&fresh, me),
        &start.unused_syncthing_settings,
    )?;
    Ok(FolderConfig {
        label: string_field(value, "label")?.unwrap_or_else(|| start.label.clone()),
        folder_type,
        devices,
        rescan_interval_s,
        versioning: versioning.on,
        versions_max_age_days: versioning.max_age_days,
        versioning_type: versioning.kind,
        versions_keep: versioning.keep,
        paused: bool_field(value, "paused")?.unwrap_or(start.paused),
        watch: bool_field(value, "fsWatcherEnabled")?.unwrap_or(start.watch),
        watch_delay_s: watch_delay(value, &reported, start.watch_delay_s)?,
        ignore_delete: bool_field(value, "ignoreDelete")?.unwrap_or(start.ignore_delete),
        pull_order: match string_field(value, "order")? {
            Some(text) => text.parse().map_err(|e: UnknownPullOrder| e.to_string())?,
            None => start.pull_order,
        },
        max_conflicts: match value.get("maxConflicts") {
            None | Some(Value::Null) => start.max_conflicts,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| format!("maxConflicts must be a whole number, not {v}"))?,
        },
        min_disk_free: match (value.get("minDiskFree"), value.get("minDiskFreePct")) {
            // The legacy percentage (older clients, stman) counts unless minDiskFree itself
            // changed.
            (sent, Some(pct))
                if sent.is_none_or(|s| settings::same(s, &reported["minDiskFree"])) =>
            {
                let value = pct
                    .as_f64()
                    .ok_or_else(|| format!("minDiskFreePct must be a number, not {pct}"))?;
                MinDiskFree {
                    value,
                    unit: "%".into(),
                }
            }
            (None | Some(Value::Null), _) => start.min_disk_free.clone(),
            (Some(v), _) => min_disk_free(v)?,
        },
        unused_syncthing_settings,
        ignore_permissions: bool_field(value, "ignorePerms")?.unwrap_or(start.ignore_permissions),
        id,
        path,
    })
}

/// A folder's versioning as Syncthing's `versioning` object sets it.
#[derive(Clone, Copy, Debug)]
struct Versioning {
    on: bool,
    kind: VersioningType,
    max_age_days: u64,
    keep: u32,
}

impl Versioning {
    fn of(folder: &FolderConfig) -> Self {
        Self {
            on: folder.versioning,
            kind: folder.versioning_type,
            max_age_days: folder.versions_max_age_days,
            keep: folder.versions_keep,
        }
    }

    /// `{"type": "trashcan" | "simple" | "staggered" | "" | "none", "params": {...}}`;
    /// parameters left out keep `base`'s values. Syncthing writes numbers as strings.
    fn from_json(value: &Value, base: Self) -> Result<Self, String> {
        if !value.is_object() {
            return Err(format!("\"versioning\" must be a JSON object, not {value}"));
        }
        let params = value.get("params").cloned().unwrap_or(Value::Null);
        let number = |name: &str| -> Result<Option<u64>, String> {
            let Some(v) = params.get(name).filter(|v| !v.is_null()) else {
                return Ok(None);
            };
            let text = v
                .as_str()
                .map(str::to_owned)
                .or_else(|| v.as_u64().map(|n| n.to_string()))
                .unwrap_or_default();
            text.parse::<u64>()
                .map(Some)
                .map_err(|_| format!("versioning parameter {name} must be a whole number, not {v}"))
        };
        if params
            .get("versionsPath")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty())
            || value
                .get("fsPath")
                .and_then(Value::as_str)
                .is_some_and(|p| !p.is_empty())
        {
            return Err(
                "a versions path is not supported: peerfold keeps versions in the folder's .peerfold/versions"
                    .into(),
            );
        }
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        let mut out = Self { on: true, ..base };
        match kind {
            "" | "none" => out.on = false,
            "trashcan" => {
                out.kind = VersioningType::Trashcan;
                out.max_age_days = number("cleanoutDays")?.unwrap_or(30);
            }
            "simple" => {
                out.kind = VersioningType::Simple;
                out.keep = u32::try_from(number("keep")?.unwrap_or(5))
                    .map_err(|_| "versioning parameter keep is too large".to_owned())?;
                out.max_age_days = number("cleanoutDays")?.unwrap_or(0);
            }
            "staggered" => {
                out.kind = VersioningType::Staggered;
                // Seconds in Syncthing, days here (rounded up); 0: no maximum.
                out.max_age_days = number("maxAge")?.unwrap_or(31_536_000).div_ceil(86_400);
            }
            "external" => {
                return Err(
                    "versioning type \"external\" is not supported: peerfold runs no external commands (trashcan, simple, staggered or none)"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "versioning type {other:?} is not supported (trashcan, simple, staggered or none)"
                ));
            }
        }
        Ok(out)
    }
}

/// `fsWatcherDelayS`: seconds, whole (Syncthing 1.x) or not (2.x). Peerfold's own quarter
/// second is reported as 1, so a 1 sent back unchanged keeps it.
fn watch_delay(
    value: &Value,
    reported: &Value,
    current: Option<f64>,
) -> Result<Option<f64>, String> {
    match value.get("fsWatcherDelayS") {
        None | Some(Value::Null) => Ok(current),
        Some(v)
            if reported
                .get("fsWatcherDelayS")
                .is_some_and(|r| settings::same(r, v)) =>
        {
            Ok(current)
        }
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("fsWatcherDelayS must be a number of seconds, not {v}")),
    }
}

/// `minDiskFree`: `{"value": 1, "unit": "%"}` (units %, kB, MB, GB, TB).
fn min_disk_free(value: &Value) -> Result<MinDiskFree, String> {
    let amount = value.get("value").and_then(Value::as_f64).ok_or_else(|| {
        format!("minDiskFree must be {{\"value\": NUMBER, \"unit\": \"%\"}}, not {value}")
    })?;
    let unit = string_field(value, "unit")?.unwrap_or_else(|| "%".to_owned());
    Ok(MinDiskFree {
        value: amount,
        unit,
    })
}
