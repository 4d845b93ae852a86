//! `peerfold status` without the REST API: the daemon answers on a Unix socket in its home
//! (`HOME/daemon.sock`, mode 0600) with one JSON document per connection.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tracing::debug;

use crate::daemon::{FolderState, Shared};
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
        let shared2 = shared.clone();
        let report = tokio::task::spawn_blocking(move || report(&shared2)).await;
        let mut stream = stream;
        if let Ok(report) = report {
            let _ = stream.write_all(report.to_string().as_bytes()).await;
        }
        let _ = stream.shutdown().await;
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
