//! `/rest/db/*` and `/rest/folder/errors`: a folder's counts, needs, entries and actions.

use axum::extract::State;
use peerfold_engine::folder::{FileInfo, FolderActionError, FolderState};
use peerfold_engine::model::counts::{Counts, FolderSummary};
use peerfold_engine::model::entry::{FileEntry, FileKind};
use peerfold_engine::model::rewrite::FolderAction;
use peerfold_protocol::DeviceId;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Params, events, folder, number};

/// Syncthing's default page size.
const DEFAULT_PER_PAGE: u64 = 65536;

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

pub(super) async fn status(State(api): AppState, params: Params) -> ApiResult {
    let id = super::required(&params, "folder")?;
    let since = api.engine.started().to_string();
    if api.engine.config().folder(id).is_some_and(|f| f.paused) {
        // Not running: its counts are not kept up to date and read 0, in the shape
        // clients parse.
        let summary = FolderSummary::default();
        return Ok(axum::Json(status_json(
            &summary, "paused", "", 0, 0, &since,
        )));
    }
    let folder = folder(&api, &params)?;
    let summary = folder.summary().await?;
    let sequence = folder.sequence().await?;
    let errors = folder.errors();
    let state = folder.state();
    let error = match &state {
        FolderState::Error(e) => e.clone(),
        _ => String::new(),
    };
    let name = events::state_name(state.name());
    Ok(axum::Json(status_json(
        &summary,
        name,
        &error,
        errors.len(),
        sequence,
        &folder.state_changed().to_string(),
    )))
}

/// Syncthing's folder status object.
pub(super) fn status_json(
    summary: &FolderSummary,
    state: &str,
    error: &str,
    errors: usize,
    sequence: u64,
    state_changed: &str,
) -> Value {
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
    out.insert("pullErrors".into(), json!(errors));
    out.insert("errors".into(), json!(errors));
    out.insert("state".into(), json!(state));
    out.insert("stateChanged".into(), json!(state_changed));
    out.insert("error".into(), json!(error));
    out.insert("sequence".into(), json!(sequence));
    out.insert("version".into(), json!(sequence));
    out.insert("ignorePatterns".into(), json!(false));
    out.insert("watchError".into(), json!(""));
    Value::Object(out)
}

pub(super) async fn completion(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let me = api.engine.device_id();
    let device = match params.get("device").filter(|d| !d.is_empty()) {
        None => me,
        Some(text) => text
            .parse::<DeviceId>()
            .map_err(|e| ApiError::bad_request(format!("device ID {text:?}: {e}")))?,
    };
    let remote_state = if device == me {
        "valid"
    } else if folder.shares_with(device) {
        events::remote_state_name(api.engine.remote_state(device))
    } else if api.engine.config().devices.iter().any(|d| d.id == device) {
        "notSharing"
    } else {
        "unknown"
    };
    let summary = folder.summaries(&[device]).await?.remove(0);
    let sequence = folder.sequence().await?;
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

pub(super) async fn scan(State(api): AppState, params: Params) -> ApiResult {
    // Without `folder`, every running folder is scanned, as Syncthing does.
    if !params.contains_key("folder") {
        return scan_all(&api).await;
    }
    let folder = folder(&api, &params)?;
    // The whole folder is scanned, but a `sub` that could not be inside it is refused.
    if let Some(sub) = params.get("sub").filter(|s| !s.is_empty()) {
        peerfold_engine::model::names::validate(sub.trim_end_matches('/'))
            .map_err(|e| ApiError::bad_request(format!("query parameter \"sub\": {e}")))?;
    }
    // Like Syncthing, the call returns when the scan is done.
    let changed = folder
        .scan()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(
        json!({ "folder": folder.id(), "changed": changed }),
    ))
}

/// Scans every running folder at once; returns when all are done, with what each changed.
async fn scan_all(api: &super::Api) -> ApiResult {
    let folders = api.engine.folders();
    let scans = folders.iter().map(|f| f.scan());
    let results = futures_util::future::join_all(scans).await;
    let mut changed = serde_json::Map::new();
    for (folder, result) in folders.iter().zip(results) {
        let count = result.map_err(|e| ApiError::internal(format!("{}: {e}", folder.id())))?;
        changed.insert(folder.id().to_owned(), json!(count));
    }
    Ok(axum::Json(json!({ "changed": changed })))
}

pub(super) async fn override_changes(State(api): AppState, params: Params) -> ApiResult {
    folder_action(&api, &params, FolderAction::Override).await
}

pub(super) async fn revert_changes(State(api): AppState, params: Params) -> ApiResult {
    folder_action(&api, &params, FolderAction::Revert).await
}

async fn folder_action(api: &super::Api, params: &Params, action: FolderAction) -> ApiResult {
    let folder = folder(api, params)?;
    let changed = match folder.run_action(action).await {
        Ok(changed) => changed,
        // Syncthing answers 200 and does nothing for a folder of another type; its
        // clients count on that (the CLI says why instead).
        Err(e @ FolderActionError::WrongType { .. }) => {
            tracing::info!(reason = %e, "folder action does not apply; nothing done");
            0
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    Ok(axum::Json(
        json!({ "folder": folder.id(), "changed": changed }),
    ))
}

/// An entry in Syncthing's file-info shape.
pub(super) fn entry_json(entry: &FileEntry) -> Value {
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

pub(super) async fn file(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let name = super::required(&params, "file")?;
    let info = folder
        .file_info(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no file {name:?} in the folder")))?;
    Ok(axum::Json(file_json(&info)))
}

/// `/rest/db/file`'s answer for one name (the debug endpoint adds to it).
pub(super) fn file_json(info: &FileInfo) -> Value {
    let availability: Vec<Value> = info
        .availability
        .iter()
        .map(|d| json!({ "id": d.to_string(), "fromTemporary": false }))
        .collect();
    json!({
        "availability": availability,
        "global": info.global.as_ref().map(entry_json),
        "local": info.local.as_ref().map(entry_json),
    })
}

/// `page=` (from 1) and `perpage=` of a paged list.
#[derive(Clone, Copy, Debug)]
pub(super) struct Page {
    pub(super) page: u64,
    pub(super) per_page: u64,
    start: usize,
}

impl Page {
    pub(super) fn of(params: &Params) -> Result<Self, ApiError> {
        let page = number(params, "page", 1)?.max(1);
        let per_page = number(params, "perpage", DEFAULT_PER_PAGE)?.max(1);
        let start = (page - 1).checked_mul(per_page).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameters \"page\" ({page}) and \"perpage\" ({per_page}) are out of range"
            ))
        })?;
        Ok(Self {
            page,
            per_page,
            start: usize::try_from(start).unwrap_or(usize::MAX),
        })
    }

    /// This page's items of `all`.
    pub(super) fn of_items<T>(&self, all: impl IntoIterator<Item = T>) -> impl Iterator<Item = T> {
        all.into_iter()
            .skip(self.start)
            .take(usize::try_from(self.per_page).unwrap_or(usize::MAX))
    }
}

pub(super) async fn need(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let page = Page::of(&params)?;
    let needed: Vec<Value> = page
        .of_items(&folder.needed().await?)
        .map(entry_json)
        .collect();
    Ok(axum::Json(json!({
        "progress": [],
        "queued": [],
        "rest": needed,
        "page": page.page,
        "perpage": page.per_page,
    })))
}

pub(super) async fn errors(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let page = Page::of(&params)?;
    let errors: Vec<Value> = page
        .of_items(folder.errors())
        .map(|(path, error)| json!({ "path": path, "error": error }))
        .collect();
    Ok(axum::Json(json!({
        "folder": folder.id(),
        "errors": errors,
        "page": page.page,
        "perpage": page.per_page,
    })))
}
