//! The local control socket, `HOME/daemon.sock` (mode 0600): a client writes one request
//! line and reads one JSON document back. Requests:
//! - `status` (also what an empty request means): folders and devices, as `peerfold status`
//!   shows them;
//! - `api`: where the REST API listens, `{"address": "HOST:PORT"}`;
//! - `override FOLDER`, `revert FOLDER`: `{"folder": ID, "changed": N}`;
//! - `edit JSON`: one configuration change (a `ConfigEdit` as JSON), `{"ok": true}`.
//!
//! A refused request is answered `{"error": "..."}`.
//!
//! Who wakes me: clients connecting (the CLI). Whom I wake: the engine, through its
//! operations (configuration changes, folder actions); I only read the rest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use peerfold_engine::Engine;
use peerfold_engine::config::{ConfigEdit, Home};
use peerfold_engine::events::ConnectionKind;
use peerfold_engine::folder::{FolderHandle, FolderState};
use peerfold_engine::model::rewrite::FolderAction;
use peerfold_protocol::DeviceId;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::api::events::connection_type;

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

/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line (an edit may carry a whole folder's or device's settings).
const REQUEST_MAX: u64 = 1 << 20;

/// Answers requests until `stop`; then removes the socket and returns once the answers
/// under way are written.
pub(crate) async fn serve(
    engine: Engine,
    listener: UnixListener,
    path: PathBuf,
    api_address: SocketAddr,
    stop: CancellationToken,
) {
    let answers = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "control socket");
                    // Out of file descriptors, for example: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        answers.spawn(answer(engine.clone(), stream, api_address, stop.clone()));
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    answers.close();
    answers.wait().await;
}

/// Reads one request and writes its answer. A stop before the request is complete drops
/// the connection; an answer under way is finished.
async fn answer(
    engine: Engine,
    stream: UnixStream,
    api_address: SocketAddr,
    stop: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(REQUEST_MAX);
    tokio::select! {
        biased;
        () = stop.cancelled() => return,
        read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)) => {
            if let Ok(Err(e)) = read {
                debug!(error = %e, "control socket request");
            }
        }
    }
    let response = if line.len() as u64 >= REQUEST_MAX && !line.ends_with('\n') {
        json!({ "error": format!("requests are at most {REQUEST_MAX} bytes long") })
    } else {
        respond(&engine, &line, api_address).await
    };
    let _ = write.write_all(response.to_string().as_bytes()).await;
    let _ = write.shutdown().await;
}

async fn respond(engine: &Engine, line: &str, api_address: SocketAddr) -> Value {
    // Folder IDs may hold spaces: the verb ends at the first one.
    let request = line.trim_end_matches(['\r', '\n']);
    let (verb, argument) = request.split_once(' ').unwrap_or((request, ""));
    match (verb, argument) {
        ("" | "status", "") => report(engine, api_address).await,
        ("api", "") => json!({ "address": api_address.to_string() }),
        ("override", folder) if !folder.is_empty() => {
            folder_action(engine, FolderAction::Override, folder).await
        }
        ("revert", folder) if !folder.is_empty() => {
            folder_action(engine, FolderAction::Revert, folder).await
        }
        ("edit", edit) if !edit.is_empty() => change_config(engine, edit).await,
        _ => {
            let shown: String = line.trim().chars().take(200).collect();
            json!({ "error": format!("unknown request {shown:?}") })
        }
    }
}

async fn folder_action(engine: &Engine, action: FolderAction, folder_id: &str) -> Value {
    let folder = match engine.folder(folder_id) {
        Ok(folder) => folder,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    match folder.run_action(action).await {
        Ok(changed) => json!({ "folder": folder_id, "changed": changed }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

async fn change_config(engine: &Engine, edit: &str) -> Value {
    let edit: ConfigEdit = match serde_json::from_str(edit) {
        Ok(edit) => edit,
        Err(e) => return json!({ "error": format!("not a configuration edit: {e}") }),
    };
    match engine.change_config(edit).await {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// The daemon's state: folders (state, local/global/need counts, scan progress, pull
/// errors) and devices (connection, traffic, and how complete their copy of the shared
/// folders is).
async fn report(engine: &Engine, api_address: SocketAddr) -> Value {
    let me = engine.device_id();
    let mut folders = Vec::new();
    // Per device: global and needed bytes over the folders shared with it.
    let mut device_bytes: HashMap<DeviceId, (u64, u64)> = HashMap::new();
    for folder in engine.folders() {
        let mut devices = vec![me];
        devices.extend(folder.config().devices);
        let walked = folder.summaries(&devices).await;
        if let Ok(all) = &walked {
            for (device, s) in devices.iter().zip(all).skip(1) {
                let entry = device_bytes.entry(*device).or_default();
                entry.0 += s.global.bytes;
                entry.1 += s.need.bytes;
            }
        }
        folders.push(folder_report(&folder, walked.map(|all| all[0])));
    }
    // Paused folders do not run: no counts are claimed for them.
    let config = engine.config();
    for paused in config.folders.iter().filter(|f| f.paused) {
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
    let devices: Vec<Value> = config
        .devices
        .iter()
        .map(|device| {
            let peer = engine.peer(device.id);
            let (global, need) = device_bytes.get(&device.id).copied().unwrap_or_default();
            json!({
                "id": device.id.to_string(),
                "name": device.name,
                "connected": peer.is_some(),
                "paused": device.paused,
                "address": peer.as_ref().map(|p| p.address.clone()),
                "type": peer.as_ref().map(|p| connection_type(ConnectionKind::of(p.path, p.dialed))),
                "holePunched": peer.as_ref().is_some_and(|p| p.punched),
                "inBytes": peer.as_ref().map_or(0, |p| p.stats.rx_bytes),
                "outBytes": peer.as_ref().map_or(0, |p| p.stats.tx_bytes),
                "globalBytes": global,
                "needBytes": need,
            })
        })
        .collect();
    json!({
        "id": me.to_string(),
        "apiAddress": api_address.to_string(),
        "startTime": engine.started().to_string(),
        "folders": folders,
        "devices": devices,
    })
}

/// One running folder: its state, this device's counts (or why they are missing), the
/// running scan's progress and the names it cannot sync.
fn folder_report<E: std::fmt::Display>(
    folder: &FolderHandle,
    counts: Result<peerfold_engine::model::counts::FolderSummary, E>,
) -> Value {
    let (state, error) = match (folder.state(), &counts) {
        (_, Err(e)) => ("error", e.to_string()),
        (FolderState::Idle, Ok(c)) if c.need.items() > 0 => ("syncing", String::new()),
        (FolderState::Idle, _) => ("idle", String::new()),
        (FolderState::Scanning, _) => ("scanning", String::new()),
        (FolderState::Syncing, _) => ("syncing", String::new()),
        (FolderState::Error(e), _) => ("error", e),
    };
    let counts = counts.unwrap_or_default();
    let scan = folder
        .scan_progress()
        .map(|p| json!({ "walked": p.walked, "toHash": p.to_hash, "hashed": p.hashed }));
    let config = folder.config();
    json!({
        "id": folder.id(),
        "label": config.label,
        "path": config.path,
        "state": state,
        "error": error,
        "scan": scan,
        "local": { "files": counts.local.items(), "bytes": counts.local.bytes },
        "global": { "files": counts.global.items(), "bytes": counts.global.bytes },
        "need": { "files": counts.need.items(), "bytes": counts.need.bytes },
        // Syncthing's folder-error shape (`/rest/folder/errors`).
        "errors": folder
            .errors()
            .into_iter()
            .map(|(path, error)| json!({ "path": path, "error": error }))
            .collect::<Vec<_>>(),
    })
}
