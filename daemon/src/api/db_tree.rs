//! Syncthing's views of a folder's global tree and of what others need: `db/browse` (the
//! global tree under a prefix), `db/remoteneed` (what a device still lacks) and `db/prio`
//! (a file to the front of the pulls).

use std::collections::BTreeMap;

use axum::extract::State;
use peerfold_engine::model::entry::{FileEntry, FileKind};
use peerfold_protocol::DeviceId;
use serde_json::{Value, json};

use super::db::{Page, entry_json};
use super::{ApiError, ApiResult, AppState, Params, folder};

/// `levels=`: how deep below the prefix to go (-1, the default: all the way).
fn levels(params: &Params) -> Result<i64, ApiError> {
    match params.get("levels").filter(|v| !v.is_empty()) {
        None => Ok(-1),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter \"levels\" must be a number, not {v:?}"
            ))
        }),
    }
}

pub(super) async fn browse(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let prefix = params
        .get("prefix")
        .map(|p| p.trim_matches('/').to_owned())
        .unwrap_or_default();
    let levels = levels(&params)?;
    let dirs_only = params
        .get("dirsonly")
        .is_some_and(|v| v == "true" || v.is_empty());
    let entries = folder.global_under(&prefix).await?;
    let cut = if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    };
    let by_path: BTreeMap<&str, &FileEntry> = entries.iter().map(|e| (&e.name[cut..], e)).collect();
    Ok(axum::Json(Value::Array(children(
        &by_path, "", 0, levels, dirs_only,
    ))))
}

/// The entries directly in `dir` (relative to the prefix; "" for its top), each directory
/// with its own children down to `levels`.
fn children(
    all: &BTreeMap<&str, &FileEntry>,
    dir: &str,
    depth: i64,
    levels: i64,
    dirs_only: bool,
) -> Vec<Value> {
    let start = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    all.range(start.as_str()..)
        .take_while(|(path, _)| path.starts_with(&start))
        .filter(|(path, _)| !path.is_empty() && !path[start.len()..].contains('/'))
        .filter(|(_, e)| !dirs_only || e.kind == FileKind::Directory)
        .map(|(path, entry)| {
            let mut node = json!({
                "name": &path[start.len()..],
                "modTime": entry.modified.to_rfc3339(),
                "size": entry.size,
                "type": entry_json(entry)["type"],
            });
            if entry.kind == FileKind::Directory && (levels < 0 || depth < levels) {
                node["children"] = Value::Array(children(all, path, depth + 1, levels, dirs_only));
            }
            node
        })
        .collect()
}

pub(super) async fn remote_need(State(api): AppState, params: Params) -> ApiResult {
    let folder = folder(&api, &params)?;
    let text = super::required(&params, "device")?;
    let device: DeviceId = text
        .parse()
        .map_err(|e| ApiError::bad_request(format!("device ID {text:?}: {e}")))?;
    if !folder.shares_with(device) {
        return Err(ApiError::not_found(format!(
            "folder {:?} is not shared with {device}",
            folder.id()
        )));
    }
    let page = Page::of(&params)?;
    let files: Vec<Value> = page
        .of_items(&folder.needed_by(device).await?)
        .map(entry_json)
        .collect();
    Ok(axum::Json(
        json!({ "files": files, "page": page.page, "perpage": page.per_page }),
    ))
}

pub(super) async fn prio(state: AppState, params: Params) -> ApiResult {
    let folder = folder(&state.0, &params)?;
    let name = super::required(&params, "file")?;
    folder.bring_to_front(name);
    super::db::need(state, params).await
}
