//! `/rest/db/*` and `/rest/folder/errors`: a folder's counts, needs, entries and actions.

use std::sync::Arc;

use axum::extract::State;
use peerfold_protocol::DeviceId;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Params, folder, number};
use crate::daemon::Shared;
use crate::folder_actions::{self, FolderAction};
use crate::summary::{self, Counts, FolderSummary};
use peerfold_engine::model::entry::{FileEntry, FileKind};

/// Syncthing's default page size.
const DEFAULT_PER_PAGE: u64 = 65536;

/// Runs a blocking store walk off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, peerfold_engine::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn counts_json(prefix: &str, counts: &Counts, out: &mut serde_json::Map<String, Value>) {
    out.insert(format!("{prefix}Files"), json!(counts.files));
    out.insert(format!("{prefix}Directories"), json!(counts.directories));
    out.insert(format!("{prefix}Symlinks"), json!(counts.symlinks));
    out.insert(format!("{prefix}Deleted"), json!(counts.deleted));
    out.insert(format!("{prefix}Bytes"), json!(counts.bytes));
    out.insert(
        format!("{prefix}TotalItems"),
        json!(counts.items() + counts.deleted),
    );
}

pub(super) async fn status(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let id = super::required(&params, "folder")?;
    if shared.config().folder(id).is_some_and(|f| f.paused) {
        // Not running: its counts are not kept up to date, so none are claimed.
        return Ok(axum::Json(
            json!({ "state": "paused", "error": "", "pullErrors": 0 }),
        ));
    }
    let folder = folder(&shared, &params)?;
    let (shared2, folder2) = (shared.clone(), folder.clone());
    let summary = blocking(move || summary::folder_summary(&shared2, &folder2)).await?;
    let sequence = shared.store().sequence(folder.idx).unwrap_or(0);
    let errors = folder.pull_errors();
    let state = folder.state();
    let error = match &state {
        crate::daemon::FolderState::Error(e) => e.clone(),
        _ => String::new(),
    };
    let mut out = serde_json::Map::new();
    counts_json("global", &summary.global, &mut out);
    counts_json("local", &summary.local, &mut out);
    counts_json("need", &summary.need, &mut out);
    out.insert("needDeletes".into(), json!(summary.need.deleted));
    out.insert(
        "inSyncFiles".into(),
        json!(summary.global.items().saturating_sub(summary.need.items())),
    );
    out.insert(
        "inSyncBytes".into(),
        json!(summary.global.bytes.saturating_sub(summary.need.bytes)),
    );
    for key in [
        "receiveOnlyChangedFiles",
        "receiveOnlyChangedDirectories",
        "receiveOnlyChangedSymlinks",
        "receiveOnlyChangedDeletes",
        "receiveOnlyChangedBytes",
        "receiveOnlyTotalItems",
    ] {
        out.insert(key.into(), json!(0));
    }
    out.insert("pullErrors".into(), json!(errors.len()));
    out.insert("errors".into(), json!(errors.len()));
    out.insert("state".into(), json!(state.name()));
    out.insert("stateChanged".into(), json!(shared.started.to_string()));
    out.insert("error".into(), json!(error));
    out.insert("sequence".into(), json!(sequence));
    out.insert("version".into(), json!(sequence));
    out.insert("ignorePatterns".into(), json!(false));
    out.insert("watchError".into(), json!(""));
    Ok(axum::Json(Value::Object(out)))
}

pub(super) async fn completion(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let device = match params.get("device").filter(|d| !d.is_empty()) {
        None => shared.me,
        Some(text) => text
            .parse::<DeviceId>()
            .map_err(|e| ApiError::bad_request(format!("device ID {text:?}: {e}")))?,
    };
    let remote_state = if device == shared.me {
        "valid"
    } else if folder.shares_with(device) {
        summary::remote_state(&shared, device)
    } else if shared.is_known(device) {
        "notSharing"
    } else {
        "unknown"
    };
    let (shared2, folder2) = (shared.clone(), folder.clone());
    let summary: FolderSummary =
        blocking(move || summary::device_summary(&shared2, &folder2, device)).await?;
    let sequence = shared.store().sequence(folder.idx).unwrap_or(0);
    Ok(axum::Json(json!({
        "completion": summary.completion(),
        "globalBytes": summary.global.bytes,
        "needBytes": summary.need.bytes,
        "globalItems": summary.global.items(),
        "needItems": summary.need.items(),
        "needDeletes": summary.need.deleted,
        "remoteState": remote_state,
        "sequence": sequence,
    })))
}

pub(super) async fn scan(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let id = folder(&shared, &params)?.id.clone();
    // The whole folder is scanned, but a `sub` that could not be inside it is refused.
    if let Some(sub) = params.get("sub").filter(|s| !s.is_empty()) {
        peerfold_engine::model::names::validate(sub.trim_end_matches('/'))
            .map_err(|e| ApiError::bad_request(format!("query parameter \"sub\": {e}")))?;
    }
    // Like Syncthing, the call returns when the scan is done.
    let changed = crate::daemon::scan(&shared, &id)
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(json!({ "folder": id, "changed": changed })))
}

pub(super) async fn override_changes(
    State(shared): State<Arc<Shared>>,
    params: Params,
) -> ApiResult {
    folder_action(&shared, &params, FolderAction::Override).await
}

pub(super) async fn revert_changes(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    folder_action(&shared, &params, FolderAction::Revert).await
}

async fn folder_action(shared: &Arc<Shared>, params: &Params, action: FolderAction) -> ApiResult {
    let id = folder(shared, params)?.id.clone();
    let changed = folder_actions::run(shared, &id, action)
        .await
        .map_err(ApiError::bad_request)?;
    Ok(axum::Json(json!({ "folder": id, "changed": changed })))
}

/// An entry in Syncthing's file-info shape.
fn entry_json(entry: &FileEntry) -> Value {
    json!({
        "name": entry.name,
        "type": match entry.kind {
            FileKind::File => "FILE_INFO_TYPE_FILE",
            FileKind::Directory => "FILE_INFO_TYPE_DIRECTORY",
            FileKind::Symlink => "FILE_INFO_TYPE_SYMLINK",
        },
        "size": entry.size,
        "permissions": format!("{:04o}", entry.permissions),
        "modified": entry.modified.to_rfc3339(),
        "modifiedBy": entry.modified_by.to_string(),
        "deleted": entry.deleted,
        "invalid": entry.invalid,
        "ignored": entry.invalid,
        "noPermissions": false,
        "sequence": entry.sequence,
        "numBlocks": entry.blocks.len(),
        "version": entry
            .version
            .counters()
            .map(|(id, value)| format!("{id}:{value}"))
            .collect::<Vec<_>>(),
        "localFlags": 0,
        "mustRescan": false,
        "platform": {},
    })
}

pub(super) async fn file(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let name = super::required(&params, "file")?.to_owned();
    let (idx, me) = (folder.idx, shared.me);
    let shared2 = shared.clone();
    let name2 = name.clone();
    let entries = blocking(move || {
        let mut found = Vec::new();
        shared2
            .store()
            .for_names(idx, [name2.as_str()], me, |entries| {
                found = entries;
                Ok::<(), peerfold_engine::store::StoreError>(())
            })?;
        Ok(found)
    })
    .await?;
    if entries.is_empty() {
        return Err(ApiError::not_found(format!(
            "no file {name:?} in the folder"
        )));
    }
    let local = entries.iter().find(|(d, _)| *d == me).map(|(_, e)| e);
    let candidates: Vec<peerfold_engine::model::planner::Announced<'_>> = entries
        .iter()
        .map(
            |(device, entry)| peerfold_engine::model::planner::Announced {
                device: *device,
                entry,
            },
        )
        .collect();
    let global = peerfold_engine::model::planner::global(&candidates);
    let availability: Vec<Value> = global
        .map(|g| {
            entries
                .iter()
                .filter(|(d, e)| *d != me && e.version == g.entry.version)
                .map(|(d, _)| json!({ "id": d.to_string(), "fromTemporary": false }))
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(json!({
        "availability": availability,
        "global": global.map(|g| entry_json(g.entry)),
        "local": local.map(entry_json),
    })))
}

/// How many entries come before page `page` (from 1) of `per_page`.
fn page_start(page: u64, per_page: u64) -> Result<usize, ApiError> {
    let start = (page - 1).checked_mul(per_page).ok_or_else(|| {
        ApiError::bad_request(format!(
            "query parameters \"page\" ({page}) and \"perpage\" ({per_page}) are out of range"
        ))
    })?;
    Ok(usize::try_from(start).unwrap_or(usize::MAX))
}

pub(super) async fn need(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let page = number(&params, "page", 1)?.max(1);
    let per_page = number(&params, "perpage", DEFAULT_PER_PAGE)?.max(1);
    let start = page_start(page, per_page)?;
    let (idx, me, folder_type) = (folder.idx, shared.me, folder.folder_type());
    let shared2 = shared.clone();
    let actions = blocking(move || {
        let reader = shared2.store().reader()?;
        peerfold_engine::folder::needs::needed_actions(&reader, idx, folder_type, me)
    })
    .await?;
    let needed: Vec<Value> = actions
        .iter()
        .filter_map(|a| a.target())
        .skip(start)
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
        .map(entry_json)
        .collect();
    Ok(axum::Json(json!({
        "progress": [],
        "queued": [],
        "rest": needed,
        "page": page,
        "perpage": per_page,
    })))
}

pub(super) async fn errors(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let page = number(&params, "page", 1)?.max(1);
    let per_page = number(&params, "perpage", DEFAULT_PER_PAGE)?.max(1);
    let start = page_start(page, per_page)?;
    let errors: Vec<Value> = folder
        .pull_errors()
        .into_iter()
        .skip(start)
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
        .map(|(path, error)| json!({ "path": path, "error": error }))
        .collect();
    Ok(axum::Json(json!({
        "folder": folder.id,
        "errors": errors,
        "page": page,
        "perpage": per_page,
    })))
}
