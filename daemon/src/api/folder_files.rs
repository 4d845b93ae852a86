//! A folder's own files as the API shows them: ignore patterns, kept versions, and
//! conflict copies.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, Params, folder};
use crate::daemon::Shared;
use peerfold_engine::disk::scanner::{IGNORE_FILE, MARKER_DIR};

/// The largest ignore file accepted.
const MAX_IGNORE_BYTES: usize = 1 << 20;

pub(super) async fn get_ignores(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let text = match std::fs::read_to_string(folder.path().join(IGNORE_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ApiError::internal(format!("{IGNORE_FILE}: {e}"))),
    };
    let lines: Vec<&str> = text.lines().collect();
    Ok(axum::Json(
        json!({ "ignore": lines, "expanded": lines, "error": null }),
    ))
}

/// Replaces the ignore patterns (`{"ignore": [...]}`) and rescans.
pub(super) async fn set_ignores(
    State(shared): State<Arc<Shared>>,
    params: Params,
    body: axum::body::Bytes,
) -> ApiResult {
    let folder = folder(&shared, &params)?;
    if body.len() > MAX_IGNORE_BYTES {
        return Err(ApiError::bad_request("ignore patterns over 1 MiB"));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
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
    if lines.iter().any(|l| l.contains('\n') || l.contains('\0')) {
        return Err(ApiError::bad_request("a pattern must be one line"));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    peerfold_engine::disk::fsutil::write_atomic(
        &folder.path().join(IGNORE_FILE),
        text.as_bytes(),
        0o644,
    )
    .map_err(|e| ApiError::internal(format!("{IGNORE_FILE}: {e}")))?;
    crate::daemon::scan(&shared, &folder.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(
        json!({ "ignore": lines, "expanded": lines, "error": null }),
    ))
}

/// Kept versions: `{name: [{versionTime, modTime, size}]}` (one per name, trash-can style).
pub(super) async fn versions(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let root = folder
        .path()
        .join(MARKER_DIR)
        .join(crate::puller::VERSIONS_DIR);
    let found = tokio::task::spawn_blocking(move || walk_files(&root))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let out: Map<String, Value> = found
        .into_iter()
        .map(|(name, size, modified)| {
            (
                name,
                json!([{ "versionTime": modified, "modTime": modified, "size": size }]),
            )
        })
        .collect();
    Ok(axum::Json(Value::Object(out)))
}

/// Conflict copies with the name they are a copy of (our addition to Syncthing's API).
pub(super) async fn conflicts(State(shared): State<Arc<Shared>>, params: Params) -> ApiResult {
    let folder = folder(&shared, &params)?;
    let (idx, me) = (folder.idx, shared.me);
    let shared2 = shared.clone();
    let names = tokio::task::spawn_blocking(move || {
        let mut names = Vec::new();
        shared2
            .store()
            .reader()?
            .for_each_name(idx, me, |entries| {
                let local = entries.iter().find(|(d, _)| *d == me).map(|(_, e)| e);
                if let Some(entry) = local.filter(|e| !e.deleted && !e.invalid)
                    && let Some(original) = original_of(&entry.name)
                {
                    names.push(json!({
                        "name": entry.name,
                        "original": original,
                        "size": entry.size,
                        "modified": entry.modified.to_rfc3339(),
                        "modifiedBy": entry.modified_by.to_string(),
                    }));
                }
                Ok::<(), peerfold_engine::store::StoreError>(())
            })?;
        Ok::<_, peerfold_engine::store::StoreError>(names)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(
        json!({ "folder": folder.id, "conflicts": names }),
    ))
}

/// `dir/stem.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` -> `dir/stem.ext`.
fn original_of(name: &str) -> Option<String> {
    let (dir, base) = match name.rsplit_once('/') {
        Some((dir, base)) => (Some(dir), base),
        None => (None, name),
    };
    let at = base.find(".sync-conflict-")?;
    let rest = &base[at + ".sync-conflict-".len()..];
    // 8 date digits, '-', 6 time digits, '-', the 7-character short device ID.
    let stamp_len = 8 + 1 + 6 + 1 + 7;
    if rest.len() < stamp_len || !rest[..8].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let original = format!("{}{}", &base[..at], &rest[stamp_len..]);
    Some(match dir {
        Some(dir) => format!("{dir}/{original}"),
        None => original,
    })
}

/// Every file under `root`: (relative name, size, modification time).
fn walk_files(root: &Path) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|m| jiff::Timestamp::try_from(m).ok())
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                out.push((
                    relative.to_string_lossy().into_owned(),
                    meta.len(),
                    modified,
                ));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::original_of;

    #[test]
    fn conflict_copies_name_their_original() {
        assert_eq!(
            original_of("a/report.sync-conflict-20261130-101010-ABCDEFG.txt").as_deref(),
            Some("a/report.txt")
        );
        assert_eq!(
            original_of(".bashrc.sync-conflict-20261130-101010-ABCDEFG").as_deref(),
            Some(".bashrc")
        );
        assert_eq!(original_of("plain.txt"), None);
        assert_eq!(original_of("x.sync-conflict-short"), None);
    }
}
