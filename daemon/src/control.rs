//! The local control socket, `HOME/daemon.sock` (mode 0600): a client writes one request
//! line and reads one JSON document back. Requests: `status` (also what an empty request
//! means), `api` (where the REST API listens), `override FOLDER` and `revert FOLDER`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tracing::debug;

use crate::daemon::{FolderState, Shared};
use crate::folder_actions::{self, FolderAction};
use crate::summary;
use peerfold_engine::config::Home;

/// The socket's path in a home.
pub(crate) fn socket_path(home: &Home) -> PathBuf {
    home.dir().join("daemon.sock")
}

/// Binds the socket, replacing one left by a daemon that died.
pub(crate) fn bind(home: &Home) -> std::io::Result<UnixListener> {
    let path = socket_path(home);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another daemon is running on this home",
        ));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers status requests until shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, listener: UnixListener, path: PathBuf) {
    loop {
        let stream = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => {
                let _ = std::fs::remove_file(&path);
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "status socket");
                    continue;
                }
            },
        };
        shared.tasks.spawn(answer(shared.clone(), stream));
    }
}

/// How long a client has to send its request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn answer(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(4096);
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    // Folder IDs may hold spaces: the verb ends at the first one.
    let request = line.trim_end_matches(['\r', '\n']);
    let (verb, argument) = request.split_once(' ').unwrap_or((request, ""));
    let response = match (verb, argument) {
        ("" | "status", "") => {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || report(&shared))
                .await
                .unwrap_or_else(|e| json!({ "error": e.to_string() }))
        }
        ("api", "") => json!({ "address": shared.api_address().map(|a| a.to_string()) }),
        (action @ ("override" | "revert"), folder_id) if !folder_id.is_empty() => {
            folder_action(&shared, action, folder_id).await
        }
        _ => json!({ "error": format!("unknown request {:?}", line.trim()) }),
    };
    let _ = write.write_all(response.to_string().as_bytes()).await;
    let _ = write.shutdown().await;
}

async fn folder_action(shared: &Arc<Shared>, action: &str, folder_id: &str) -> Value {
    let action = if action == "override" {
        FolderAction::Override
    } else {
        FolderAction::Revert
    };
    match folder_actions::run(shared, folder_id, action).await {
        Ok(changed) => json!({ "folder": folder_id, "changed": changed }),
        Err(e) => json!({ "error": e }),
    }
}

/// The daemon's state: folders (state, local/global/need counts, scan progress) and
/// devices (connection, traffic, and how complete their copy of the shared folders is).
fn report(shared: &Shared) -> Value {
    let mut folders = Vec::new();
    // Per device: global and needed bytes over the folders shared with it.
    let mut device_bytes: HashMap<DeviceId, (u64, u64)> = HashMap::new();
    for folder in shared.folders() {
        let mut devices = vec![shared.me];
        devices.extend(folder.config().devices);
        let walked = summary::device_summaries(shared, &folder, &devices);
        let counts = walked.as_ref().map(|all| all[0]).unwrap_or_default();
        if let Ok(all) = &walked {
            for (device, s) in devices.iter().zip(all).skip(1) {
                let entry = device_bytes.entry(*device).or_default();
                entry.0 += s.global.bytes;
                entry.1 += s.need.bytes;
            }
        }
        let (state, error) = match (folder.state(), walked) {
            (_, Err(e)) => ("error", e.to_string()),
            (FolderState::Idle, _) if counts.need.items() > 0 => ("syncing", String::new()),
            (FolderState::Idle, _) => ("idle", String::new()),
            (FolderState::Scanning, _) => ("scanning", String::new()),
            (FolderState::Syncing, _) => ("syncing", String::new()),
            (FolderState::Error(e), _) => ("error", e),
        };
        let scan = folder
            .scan_progress()
            .map(|p| json!({ "walked": p.walked, "toHash": p.to_hash, "hashed": p.hashed }));
        folders.push(json!({
            "id": folder.id,
            "label": folder.config().label,
            "path": folder.path(),
            "state": state,
            "error": error,
            "scan": scan,
            "local": { "files": counts.local.items(), "bytes": counts.local.bytes },
            "global": { "files": counts.global.items(), "bytes": counts.global.bytes },
            "need": { "files": counts.need.items(), "bytes": counts.need.bytes },
            // Syncthing's folder-error shape (`/rest/folder/errors`).
            "errors": folder
                .pull_errors()
                .into_iter()
                .map(|(path, error)| json!({ "path": path, "error": error }))
                .collect::<Vec<_>>(),
        }));
    }
    // Paused folders do not run: no counts are claimed for them.
    for paused in shared.config().folders.iter().filter(|f| f.paused) {
        folders.push(json!({
            "id": paused.id,
            "label": paused.label,
            "path": paused.path,
            "state": "paused",
            "error": "",
            "scan": null,
            "errors": [],
        }));
    }
    folders.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let devices: Vec<Value> = shared
        .config()
        .devices
        .iter()
        .map(|device| {
            let connection = shared.connection(device.id);
            let stats = connection.as_ref().map(quinn::Connection::stats);
            let (global, need) = device_bytes.get(&device.id).copied().unwrap_or_default();
            json!({
                "id": device.id.to_string(),
                "name": device.name,
                "connected": connection.is_some(),
                "paused": device.paused,
                "address": connection.as_ref().map(|c| c.remote_address().to_string()),
                "inBytes": stats.as_ref().map_or(0, |s| s.udp_rx.bytes),
                "outBytes": stats.as_ref().map_or(0, |s| s.udp_tx.bytes),
                "globalBytes": global,
                "needBytes": need,
            })
        })
        .collect();
    json!({
        "id": shared.me.to_string(),
        "apiAddress": shared.api_address().map(|a| a.to_string()),
        "startTime": shared.started.to_string(),
        "folders": folders,
        "devices": devices,
    })
}
