//! `/rest/svc/report`: the usage report Syncthing would send to its usage-reporting server,
//! in its shape (version 3), so clients that show it have something to show. peerfold
//! collects nothing and sends it nowhere. `/rest/system/browse`: directory completion for
//! a path being typed (the GUI's folder path field).

use std::path::{Path, PathBuf};

use axum::extract::State;
use peerfold_engine::config::Address;
use serde_json::json;

use super::{ApiError, ApiResult, AppState, Params};

/// Directories offered for one prefix, at most.
const MAX_COMPLETIONS: usize = 1000;

pub(super) async fn report(State(api): AppState) -> ApiResult {
    let config = api.engine.config();
    let (mut files, mut bytes, mut max_files, mut max_bytes) = (0u64, 0u64, 0u64, 0u64);
    for folder in api.engine.folders() {
        let summary = folder.summary().await?;
        files += summary.local.files;
        bytes += summary.local.bytes;
        max_files = max_files.max(summary.local.files);
        max_bytes = max_bytes.max(summary.local.bytes);
    }
    let mib = |b: u64| b >> 20;
    let count = |f: &dyn Fn(&peerfold_engine::config::FolderConfig) -> bool| {
        config.folders.iter().filter(|x| f(x)).count()
    };
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    Ok(axum::Json(json!({
        "urVersion": 3,
        "uniqueID": "",
        "version": version,
        "longVersion": format!("peerfold {version} (never sent anywhere)"),
        "platform": format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        "numFolders": config.folders.len(),
        "numDevices": config.devices.len(),
        "totFiles": files,
        "folderMaxFiles": max_files,
        "totMiB": mib(bytes),
        "folderMaxMiB": mib(max_bytes),
        "memoryUsageMiB": mib(super::system::resident_bytes()),
        "numCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "folderUses": {
            "sendonly": count(&|f| f.folder_type.as_str() == "sendonly"),
            "receiveonly": count(&|f| f.folder_type.as_str() == "receiveonly"),
            "ignorePerms": count(&|f| f.ignore_permissions),
            "ignoreDelete": count(&|f| f.ignore_delete),
            "autoNormalize": config.folders.len(),
            "simpleVersioning": 0,
            "externalVersioning": 0,
            "staggeredVersioning": 0,
            "trashcanVersioning": count(&|f| f.versioning),
            "fsWatcherEnabled": count(&|f| f.watch),
        },
        "deviceUses": {
            "introducer": config.devices.iter().filter(|d| d.introducer).count(),
            "customCertName": 0,
            "compressAlways": 0,
            "compressMetadata": config.devices.len(),
            "compressNever": 0,
            "dynamicAddr": config.devices.iter().filter(|d| d.addresses.contains(&Address::Dynamic)).count(),
            "staticAddr": config.devices.iter().filter(|d| d.addresses.iter().any(|a| *a != Address::Dynamic)).count(),
        },
        "announce": {
            "globalEnabled": config.options.global_announce_enabled,
            "localEnabled": config.options.local_announce_enabled,
            "defaultServersDNS": 0,
            "defaultServersIP": 0,
            "otherServers": config.options.global_announce_servers.len(),
        },
        "relays": { "enabled": config.options.relays_enabled, "defaultServers": 0, "otherServers": 0 },
        "usesRateLimit": config.options.max_send_kbps > 0 || config.options.max_recv_kbps > 0,
        "upgradeAllowedManual": false,
        "upgradeAllowedAuto": false,
    })))
}

pub(super) async fn browse(params: Params) -> ApiResult {
    let current = params.get("current").cloned().unwrap_or_default();
    let found = tokio::task::spawn_blocking(move || completions(&current))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(json!(found)))
}

/// Directories whose path starts with `current` (`~` is the home directory; empty: the
/// home directory's), each with a trailing `/`, in name order.
fn completions(current: &str) -> Vec<String> {
    let home = || dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"));
    let expanded = match current.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home().display())
        }
        _ if current.is_empty() => format!("{}/", home().display()),
        _ => current.to_owned(),
    };
    let (dir, start) = match expanded.rfind('/') {
        Some(i) => (&expanded[..=i], &expanded[i + 1..]),
        None => return Vec::new(),
    };
    let Ok(entries) = std::fs::read_dir(Path::new(dir)) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(start))
        .map(|name| format!("{dir}{name}"))
        .filter(|path| Path::new(path).is_dir())
        .map(|path| format!("{path}/"))
        .take(MAX_COMPLETIONS)
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_complete_a_prefix() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["photos", "photos-2024", "music"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("photo.txt"), b"a file").unwrap();
        let base = root.path().display().to_string();
        assert_eq!(
            completions(&format!("{base}/pho")),
            vec![format!("{base}/photos-2024/"), format!("{base}/photos/")]
        );
        assert_eq!(completions(&format!("{base}/")).len(), 3);
        assert!(completions(&format!("{base}/nothing")).is_empty());
        assert!(completions("relative").is_empty());
    }
}
