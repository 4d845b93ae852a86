//! A folder's own files as the API shows them: ignore patterns, kept versions, and
//! conflict copies.

use axum::extract::State;
use peerfold_engine::folder::{ConflictChoice, IgnoresError, RestoreError};
use serde_json::{Map, Value, json};

use super::config_edit::body_json;
use super::{ApiError, ApiResult, AppState, Params, folder};

/// The largest ignore file accepted.
const MAX_IGNORE_BYTES: usize = 1 << 20;

/// The file's name, for messages.
const IGNORE_FILE: &str = peerfold_engine::disk::scanner::IGNORE_FILE;

pub(super) async fn get_ignores(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let lines = folder
        .ignores()
        .await
        .map_err(|e| ApiError::internal(format!("{IGNORE_FILE}: {e}")))?;
    Ok(axum::Json(
        json!({ "ignore": lines, "expanded": lines, "error": null }),
    ))
}

/// Replaces the ignore patterns (`{"ignore": [...]}`) and rescans.
pub(super) async fn set_ignores(
    State(api): AppState,
    params: Params,
    body: axum::body::Bytes,
) -> ApiResult {
    let folder = folder(&api, &params)?;
    if body.len() > MAX_IGNORE_BYTES {
        return Err(ApiError::bad_request("ignore patterns over 1 MiB"));
    }
    let value = body_json(&body)?;
    let lines = value["ignore"]
        .as_array()
        .ok_or_else(|| ApiError::bad_request("the body must be {\"ignore\": [\"pattern\", ...]}"))?
        .iter()
        .map(|l| {
            l.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::bad_request(format!("patterns must be strings, not {l}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    folder.set_ignores(&lines).await.map_err(|e| match e {
        IgnoresError::NotOneLine => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other.to_string()),
    })?;
    Ok(axum::Json(
        json!({ "ignore": lines, "expanded": lines, "error": null }),
    ))
}

/// Kept versions: `{name: [{versionTime, modTime, size}]}`, oldest first (one per name
/// trash-can style, several for simple and staggered versioning).
pub(super) async fn versions(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let kept = folder
        .versions()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out: Map<String, Value> = Map::new();
    for v in kept {
        let modified = v.modified.map(|t| t.to_string()).unwrap_or_default();
        let version_time = v
            .kept_at
            .map_or_else(|| modified.clone(), |t| t.to_string());
        let entry = json!({ "versionTime": version_time, "modTime": modified, "size": v.size });
        match out.entry(v.name).or_insert_with(|| json!([])) {
            Value::Array(list) => list.push(entry),
            _ => unreachable!("every name holds a list"),
        }
    }
    Ok(axum::Json(Value::Object(out)))
}

/// Conflict copies with the name they are a copy of (our addition to Syncthing's API).
pub(super) async fn conflicts(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let copies: Vec<Value> = folder
        .conflicts()
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "name": c.entry.name,
                "original": c.original,
                "size": c.entry.size,
                "modified": c.entry.modified.to_rfc3339(),
                "modifiedBy": c.entry.modified_by.to_string(),
            })
        })
        .collect();
    Ok(axum::Json(
        json!({ "folder": folder.id(), "conflicts": copies }),
    ))
}

/// `POST /rest/folder/versions?folder=ID` with `{"NAME": "VERSION_TIME", ...}` (as
/// Syncthing): puts those kept versions back, keeping the files they replace as versions.
/// Answers `{}`, or `{"NAME": "why"}` for the ones that failed.
pub(super) async fn restore_versions(
    State(api): AppState,
    params: Params,
    body: axum::body::Bytes,
) -> ApiResult {
    let folder = folder(&api, &params)?;
    let value = body_json(&body)?;
    let wanted = value.as_object().ok_or_else(|| {
        ApiError::bad_request("the body must be {\"NAME\": \"VERSION_TIME\", ...}")
    })?;
    let mut failed = Map::new();
    for (name, time) in wanted {
        let Some(time) = time.as_str() else {
            failed.insert(
                name.clone(),
                json!(format!("the version time must be a string, not {time}")),
            );
            continue;
        };
        if let Err(e) = folder.restore_version(name, time).await {
            failed.insert(name.clone(), json!(e.to_string()));
        }
    }
    Ok(axum::Json(Value::Object(failed)))
}

/// `POST /rest/db/conflicts/resolve?folder=ID` with `{"conflict": COPY, "keep":
/// "original" | "conflict" | "both"}` (peerfold's own): the losing file goes to versions.
pub(super) async fn resolve_conflict(
    State(api): AppState,
    params: Params,
    body: axum::body::Bytes,
) -> ApiResult {
    let folder = folder(&api, &params)?;
    let value = body_json(&body)?;
    let usage =
        "the body must be {\"conflict\": NAME, \"keep\": \"original\" | \"conflict\" | \"both\"}";
    let copy = value["conflict"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request(usage))?;
    let choice = match value["keep"].as_str() {
        Some("original") => ConflictChoice::Original,
        Some("conflict") => ConflictChoice::Conflict,
        Some("both") => ConflictChoice::Both,
        _ => return Err(ApiError::bad_request(usage)),
    };
    let kept = folder
        .resolve_conflict(copy, choice)
        .await
        .map_err(|e| match e {
            RestoreError::NotAConflictCopy(_)
            | RestoreError::Missing(_)
            | RestoreError::NotAFile(_)
            | RestoreError::Name(_) => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        })?;
    Ok(axum::Json(
        json!({ "ok": format!("resolved: {kept} stays"), "kept": kept }),
    ))
}

/// `GET /rest/db/transfers[?folder=ID]` (peerfold's own, for the GUI's Transfers page):
/// files being downloaded, with their progress and sources, and files peers fetched from
/// this device in the last seconds, with the bytes sent.
pub(super) async fn transfers(State(api): AppState, params: Params) -> ApiResult {
    let folders = match params.get("folder") {
        Some(_) => vec![folder(&api, &params)?],
        None => api.engine.folders(),
    };
    let (mut downloads, mut uploads) = (Vec::new(), Vec::new());
    for folder in folders {
        let (down, up) = folder.transfers();
        downloads.extend(down.into_iter().map(|d| {
            json!({
                "folder": folder.id(),
                "name": d.name,
                "bytesTotal": d.bytes_total,
                "bytesDone": d.bytes_done,
                "devices": d.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "elapsedS": d.elapsed.as_secs_f64(),
            })
        }));
        uploads.extend(up.into_iter().map(|u| {
            json!({
                "folder": folder.id(),
                "name": u.name,
                "device": u.device.to_string(),
                "bytesSent": u.bytes_sent,
                "elapsedS": u.elapsed.as_secs_f64(),
            })
        }));
    }
    Ok(axum::Json(
        json!({ "downloads": downloads, "uploads": uploads }),
    ))
}
