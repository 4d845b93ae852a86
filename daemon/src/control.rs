//! The local control socket, `HOME/daemon.sock` (mode 0600): a client writes one request
//! line and reads one JSON document back. Requests: `status` (also what an empty request
//! means), `override FOLDER` and `revert FOLDER`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tracing::{debug, info};

use crate::config::FolderType;
use crate::daemon::{FolderState, Shared};
use crate::folder_actions;
use crate::home::Home;
use crate::planner::{self, Announced};

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
        (action @ ("override" | "revert"), folder_id) if !folder_id.is_empty() => {
            folder_action(&shared, action, folder_id).await
        }
        _ => json!({ "error": format!("unknown request {:?}", line.trim()) }),
    };
    let _ = write.write_all(response.to_string().as_bytes()).await;
    let _ = write.shutdown().await;
}

/// Runs an override or revert on a folder, between its scans and pulls.
async fn folder_action(shared: &Arc<Shared>, action: &str, folder_id: &str) -> Value {
    let Some(folder) = shared.folders.get(folder_id) else {
        return json!({ "error": format!("no folder {folder_id:?}") });
    };
    let wanted = if action == "override" {
        FolderType::SendOnly
    } else {
        FolderType::ReceiveOnly
    };
    if folder.config.folder_type != wanted {
        return json!({
            "error": format!(
                "{action} applies to {} folders; {folder_id:?} is {}",
                wanted.as_str(),
                folder.config.folder_type.as_str()
            )
        });
    }
    let _busy = folder.busy.lock().await;
    let (shared2, id, is_override) = (shared.clone(), folder_id.to_owned(), action == "override");
    let result = tokio::task::spawn_blocking(move || {
        let folder = &shared2.folders[&id];
        let mut store = shared2.store();
        if is_override {
            folder_actions::override_changes(&mut store, folder, shared2.me)
        } else {
            folder_actions::revert_changes(&mut store, folder, shared2.me)
        }
    })
    .await;
    match result {
        Ok(Ok(changed)) => {
            info!(folder = %folder_id, action, changed, "folder action");
            folder.local_changed.notify_waiters();
            folder.replan_everything();
            folder.pull.notify_one();
            json!({ "folder": folder_id, "action": action, "changed": changed })
        }
        Ok(Err(e)) => json!({ "error": e.to_string() }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// The daemon's state: folders (state, local/global/need counts) and devices.
fn report(shared: &Shared) -> Value {
    let mut folders = Vec::new();
    for folder in shared.folders.values() {
        let (mut local, mut global, mut need) = ([0u64; 2], [0u64; 2], [0u64; 2]);
        // A read-only connection of its own: the walk must not hold up the writer.
        let reader = shared.store().reader();
        let walked = reader.and_then(|reader| {
            reader.for_each_name(folder.idx, shared.me, |entries| {
                let mine = entries
                    .iter()
                    .find(|(d, _)| *d == shared.me)
                    .map(|(_, e)| e);
                if let Some(e) = mine.filter(|e| !e.deleted && !e.invalid) {
                    local[0] += 1;
                    local[1] += e.size;
                }
                let candidates: Vec<Announced<'_>> = entries
                    .iter()
                    .map(|(device, entry)| Announced {
                        device: *device,
                        entry,
                    })
                    .collect();
                if let Some(g) = planner::global(&candidates).filter(|g| !g.entry.deleted) {
                    global[0] += 1;
                    global[1] += g.entry.size;
                    if mine.is_none_or(|m| m.version != g.entry.version) {
                        need[0] += 1;
                        need[1] += g.entry.size;
                    }
                }
                Ok::<(), crate::store::StoreError>(())
            })
        });
        let (state, error) = match (folder.state(), walked) {
            (_, Err(e)) => ("error", e.to_string()),
            (FolderState::Idle, _) if need[0] > 0 => ("syncing", String::new()),
            (FolderState::Idle, _) => ("idle", String::new()),
            (FolderState::Scanning, _) => ("scanning", String::new()),
            (FolderState::Syncing, _) => ("syncing", String::new()),
            (FolderState::Error(e), _) => ("error", e),
        };
        folders.push(json!({
            "id": folder.config.id,
            "label": folder.config.label,
            "path": folder.config.path,
            "state": state,
            "error": error,
            "local": { "files": local[0], "bytes": local[1] },
            "global": { "files": global[0], "bytes": global[1] },
            "need": { "files": need[0], "bytes": need[1] },
            // Syncthing's folder-error shape (`/rest/folder/errors`).
            "errors": folder
                .pull_errors()
                .into_iter()
                .map(|(path, error)| json!({ "path": path, "error": error }))
                .collect::<Vec<_>>(),
        }));
    }
    folders.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let devices: Vec<Value> = shared
        .config
        .devices
        .iter()
        .map(|device| {
            let connection = shared.connection(device.id);
            let stats = connection.as_ref().map(quinn::Connection::stats);
            json!({
                "id": device.id.to_string(),
                "name": device.name,
                "connected": connection.is_some(),
                "address": connection.as_ref().map(|c| c.remote_address().to_string()),
                "inBytes": stats.as_ref().map_or(0, |s| s.udp_rx.bytes),
                "outBytes": stats.as_ref().map_or(0, |s| s.udp_tx.bytes),
            })
        })
        .collect();
    json!({ "id": shared.me.to_string(), "folders": folders, "devices": devices })
}
