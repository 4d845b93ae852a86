//! One authenticated connection: Hello and ClusterConfig on a control stream, index batches
//! both ways on it, and one QUIC stream per block request.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::{Block, MAX_BLOCK_SIZE};
use peerfold_protocol::wire::{self, message::Body};
use prost::Message as _;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::{FrameReader, StreamError, send};
use crate::auto_accept;
use crate::daemon::{Folder, PeerInfo, Shared};
use peerfold_engine::config::{self, FolderType};
use peerfold_engine::model::entry::FileEntry;
use peerfold_engine::model::names;

/// Entries per index batch, at most.
const BATCH_ENTRIES: usize = 1000;
/// Encoded bytes per index batch, at most (far below the control frame limit).
const BATCH_BYTES: usize = 1 << 20;
/// How often an index sender looks for new local entries when nothing woke it.
const INDEX_POLL: Duration = Duration::from_secs(1);
/// Block requests served at once per connection.
const SERVING_CONCURRENCY: usize = 256;
/// Invalid block requests (see `is_invalid_request`) a peer may make per connection.
const MAX_INVALID_REQUESTS: usize = 100;
/// Folder offers recorded as pending per ClusterConfig, at most.
const MAX_PENDING_OFFERS: usize = 256;
/// How long the peer has for its Hello and ClusterConfig.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("peer did not complete the handshake in time")]
    Timeout,
}

/// Runs the session until the connection closes or the daemon stops.
pub(super) async fn run(
    shared: &Arc<Shared>,
    peer: DeviceId,
    connection: &quinn::Connection,
    dialed: bool,
) -> Result<(), SessionError> {
    let (mut control_send, control_recv) = if dialed {
        connection.open_bi().await?
    } else {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| SessionError::Timeout)??
    };
    send(&mut control_send, &hello(shared)).await?;
    send(&mut control_send, &cluster_config(shared, peer)).await?;

    let mut reader = FrameReader::new(control_recv);
    let (their_hello, their_config) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let hello = match reader.next().await? {
            Some(wire::Message {
                body: Some(Body::Hello(h)),
            }) => h,
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected Hello, got {other:?}"
                )));
            }
        };
        let config = match reader.next().await? {
            Some(wire::Message {
                body: Some(Body::ClusterConfig(c)),
            }) => c,
            other => {
                return Err(SessionError::Protocol(format!(
                    "expected ClusterConfig, got {other:?}"
                )));
            }
        };
        Ok((hello, config))
    })
    .await
    .map_err(|_| SessionError::Timeout)??;
    debug!(device = %peer.short(), name = %their_hello.device_name, client = %their_hello.client_name, "hello");
    shared.set_peer_info(
        peer,
        Some(PeerInfo {
            started_at: jiff::Timestamp::now(),
            dialed,
            client_version: their_hello.client_version.clone(),
        }),
    );
    shared.events.emit(
        "DeviceConnected",
        json!({
            "id": peer.to_string(),
            "deviceName": their_hello.device_name,
            "addr": connection.remote_address().to_string(),
            "clientName": their_hello.client_name,
            "clientVersion": their_hello.client_version,
            "type": if dialed { "quic-client" } else { "quic-server" },
        }),
    );

    // Outgoing control messages go through one writer.
    let (outbox, mut outgoing) = mpsc::channel::<wire::Message>(16);
    let writer = async move {
        while let Some(message) = outgoing.recv().await {
            send(&mut control_send, &message).await?;
        }
        let _ = control_send.finish();
        Ok::<(), SessionError>(())
    };

    // Where each shared folder's index stands on the peer, and the peer's own index IDs.
    let mut their_index_ids = HashMap::new();
    let mut offers_taken = 0;
    let auto_accept = shared
        .config()
        .devices
        .iter()
        .any(|d| d.id == peer && d.auto_accept_folders);
    let mut to_accept = Vec::new();
    for offered in &their_config.folders {
        let shared_here = shared
            .folder(&offered.id)
            .filter(|folder| folder.shares_with(peer));
        let paused_here = || {
            shared
                .config()
                .folder(&offered.id)
                .is_some_and(|f| f.paused && f.devices.contains(&peer))
        };
        let Some(folder) = shared_here else {
            if paused_here() {
                continue;
            }
            // A peer cannot fill the database (or the configuration) with offers: a few
            // hundred is plenty.
            if offers_taken < MAX_PENDING_OFFERS && config::check_folder_id(&offered.id).is_ok() {
                offers_taken += 1;
                let offer = auto_accept::Offer {
                    id: offered.id.clone(),
                    label: offered.label.clone(),
                };
                if auto_accept {
                    to_accept.push(offer);
                } else {
                    auto_accept::record_pending(shared, peer, &offer);
                }
            }
            continue;
        };
        // Shared now: an earlier offer is settled.
        let _ = shared
            .store()
            .forget_pending_folder(&offered.id, Some(peer));
        let mut start = 0;
        for device in &offered.devices {
            let Ok(id) = DeviceId::try_from(device.id.as_slice()) else {
                continue;
            };
            if id == shared.me {
                let ours = shared.store().index_id(folder.idx).unwrap_or(0);
                if device.index_id == ours {
                    start = device.max_sequence;
                }
            } else if id == peer {
                their_index_ids.insert(offered.id.clone(), device.index_id);
            }
        }
        // Each sender ends when the writer is gone, i.e. when this session ends.
        shared.tasks.spawn(send_index(
            shared.clone(),
            folder.id.clone(),
            start,
            outbox.clone(),
        ));
    }
    if !to_accept.is_empty() {
        // Accepting changes the configuration, which reconnects this peer: the next
        // session shares the new folders.
        shared
            .tasks
            .spawn(auto_accept::accept(shared.clone(), peer, to_accept));
    }
    // The session keeps one sender itself: with no folder shared (yet), the writer must
    // not see its channel close and end a session that pairing just established.
    let _keep_writer_open = outbox;

    let serving = serve_requests(shared.clone(), peer, connection.clone());
    let receiving = receive(shared, peer, &mut reader, &their_index_ids);

    tokio::select! {
        biased;
        () = shared.cancel.cancelled() => Ok(()),
        result = receiving => result,
        result = writer => result,
        result = serving => result,
    }
}

fn hello(shared: &Shared) -> wire::Message {
    wire::Message {
        body: Some(Body::Hello(wire::Hello {
            device_name: shared.device_name.clone(),
            client_name: "peerfold".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
        })),
    }
}

/// The folders shared with `peer`, with what we hold of each device's index.
fn cluster_config(shared: &Shared, peer: DeviceId) -> wire::Message {
    let store = shared.store();
    let folders = shared
        .folders_shared_with(peer)
        .into_iter()
        .map(|folder| {
            let mut devices = vec![wire::FolderDevice {
                id: shared.me.as_bytes().to_vec(),
                name: shared.device_name.clone(),
                addresses: Vec::new(),
                index_id: store.index_id(folder.idx).unwrap_or(0),
                max_sequence: store.sequence(folder.idx).unwrap_or(0),
            }];
            for device in &folder.config().devices {
                let (index_id, max_sequence) = store
                    .remote_index_state(folder.idx, *device)
                    .ok()
                    .flatten()
                    .unwrap_or((0, 0));
                devices.push(wire::FolderDevice {
                    id: device.as_bytes().to_vec(),
                    name: String::new(),
                    addresses: Vec::new(),
                    index_id,
                    max_sequence,
                });
            }
            wire::Folder {
                id: folder.id.clone(),
                label: folder.config().label,
                r#type: match folder.folder_type() {
                    FolderType::SendReceive => wire::FolderType::SendReceive,
                    FolderType::SendOnly => wire::FolderType::SendOnly,
                    FolderType::ReceiveOnly => wire::FolderType::ReceiveOnly,
                } as i32,
                paused: false,
                devices,
            }
        })
        .collect();
    wire::Message {
        body: Some(Body::ClusterConfig(wire::ClusterConfig { folders })),
    }
}

/// Sends the folder's local entries with sequence numbers after `start`, then keeps sending
/// new ones as they appear.
async fn send_index(
    shared: Arc<Shared>,
    folder_id: String,
    start: u64,
    outbox: mpsc::Sender<wire::Message>,
) {
    let Some(folder) = shared.folder(&folder_id) else {
        return;
    };
    let mut after = start;
    let mut first = true;
    loop {
        let batch = match shared
            .store()
            .local_entries_since(folder.idx, after, BATCH_ENTRIES)
        {
            Ok(batch) => batch,
            Err(e) => {
                warn!(folder = %folder_id, error = %e, "cannot read the index");
                Vec::new()
            }
        };
        let mut files = Vec::new();
        let mut bytes = 0;
        let receive_only = folder.folder_type() == FolderType::ReceiveOnly;
        for entry in &batch {
            let mut info = entry.to_wire();
            // A receive-only folder's own changes are announced as invalid: peers never take
            // them as the truth (Syncthing's "local receive-only" flag does the same).
            if receive_only && entry.modified_by == shared.me.short() {
                info.invalid = true;
            }
            bytes += info.encoded_len();
            if bytes > BATCH_BYTES && !files.is_empty() {
                break;
            }
            after = entry.sequence;
            files.push(info);
        }
        if files.is_empty() {
            // Woken by this daemon's scans; the poll also catches entries recorded by
            // `peerfold scan` run beside the daemon.
            tokio::select! {
                biased;
                () = outbox.closed() => return,
                () = folder.local_changed.notified() => continue,
                () = tokio::time::sleep(INDEX_POLL) => continue,
            }
        }
        let body = if first && start == 0 {
            Body::Index(wire::Index {
                folder: folder_id.clone(),
                files,
            })
        } else {
            Body::IndexUpdate(wire::IndexUpdate {
                folder: folder_id.clone(),
                files,
            })
        };
        first = false;
        if outbox
            .send(wire::Message { body: Some(body) })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads the peer's control messages: index batches go to the store.
async fn receive(
    shared: &Arc<Shared>,
    peer: DeviceId,
    reader: &mut FrameReader,
    their_index_ids: &HashMap<String, u64>,
) -> Result<(), SessionError> {
    while let Some(message) = reader.next().await? {
        // A full index may replace what we held of the device: every name can change.
        let (folder_id, files, full) = match message.body {
            Some(Body::Index(index)) => (index.folder, index.files, true),
            Some(Body::IndexUpdate(update)) => (update.folder, update.files, false),
            Some(Body::Close(close)) => {
                debug!(device = %peer.short(), reason = %close.reason, "peer closed");
                return Ok(());
            }
            _ => continue,
        };
        let Some(folder) = shared.folder(&folder_id) else {
            return Err(SessionError::Protocol(format!(
                "index for folder {folder_id:?}, which is not configured here"
            )));
        };
        if !folder.shares_with(peer) {
            return Err(SessionError::Protocol(format!(
                "index for folder {folder_id:?}, which is not shared with this device"
            )));
        }
        let mut entries = Vec::with_capacity(files.len());
        for info in files {
            match FileEntry::from_wire(info) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    warn!(device = %peer.short(), folder = %folder_id, error = %e, "refused an index entry")
                }
            }
        }
        let index_id = their_index_ids.get(&folder_id).copied().unwrap_or(0);
        if let Err(e) = shared
            .store()
            .apply_remote_index(folder.idx, peer, index_id, &entries)
        {
            warn!(folder = %folder_id, error = %e, "cannot store the peer's index");
        }
        shared.events.emit(
            "RemoteIndexUpdated",
            json!({ "device": peer.to_string(), "folder": folder_id, "items": entries.len() }),
        );
        folder.counts_changed.notify_one();
        if full {
            folder.replan_everything();
        } else {
            folder.replan_names(entries.iter().map(|e| e.name.as_str()));
        }
        folder.pull.notify_one();
    }
    Ok(())
}

/// Answers block requests, each on its own stream.
async fn serve_requests(
    shared: Arc<Shared>,
    peer: DeviceId,
    connection: quinn::Connection,
) -> Result<(), SessionError> {
    let limit = Arc::new(Semaphore::new(SERVING_CONCURRENCY));
    let invalid = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut send_stream, recv_stream) = connection.accept_bi().await?;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let (shared, invalid, connection) = (shared.clone(), invalid.clone(), connection.clone());
        let tasks = shared.tasks.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut reader = FrameReader::new(recv_stream);
            let Ok(Some(wire::Message {
                body: Some(Body::Request(request)),
            })) = reader.next().await
            else {
                return;
            };
            let response = answer(&shared, peer, request).await;
            if is_invalid_request(&response)
                && invalid.fetch_add(1, Ordering::Relaxed) + 1 > MAX_INVALID_REQUESTS
            {
                warn!(device = %peer.short(), "too many invalid block requests; disconnecting");
                connection.close(
                    super::close::PROTOCOL.into(),
                    b"too many invalid block requests",
                );
                return;
            }
            if send(&mut send_stream, &response).await.is_ok() {
                let _ = send_stream.finish();
            }
        });
    }
}

/// A refusal no well-behaved peer provokes: an unknown or unshared folder, a malformed
/// name, size or hash. (Missing files are not counted: a file can change under a pull.)
fn is_invalid_request(response: &wire::Message) -> bool {
    matches!(
        &response.body,
        Some(Body::Response(r)) if r.code == wire::ErrorCode::InvalidFile as i32
            || r.code == wire::ErrorCode::Generic as i32
    )
}

async fn answer(shared: &Arc<Shared>, peer: DeviceId, request: wire::Request) -> wire::Message {
    let id = request.id;
    let refuse = |code: wire::ErrorCode| wire::Message {
        body: Some(Body::Response(wire::Response {
            id,
            data: Default::default(),
            code: code as i32,
        })),
    };
    let Some(folder) = shared.folder(&request.folder) else {
        return refuse(wire::ErrorCode::Generic);
    };
    if !folder.shares_with(peer)
        || names::validate(&request.name).is_err()
        || request.size == 0
        || request.size > MAX_BLOCK_SIZE
    {
        return refuse(wire::ErrorCode::InvalidFile);
    }
    // Serve only files in the index (never ignored or unindexed ones), and only data that
    // hashes to what was asked: a peer cannot read what it does not already know the hash of.
    if !shared
        .store()
        .has_local_file(folder.idx, &request.name)
        .unwrap_or(false)
    {
        return refuse(wire::ErrorCode::NoSuchFile);
    }
    let Ok(hash) = <[u8; 32]>::try_from(request.hash.as_slice()) else {
        return refuse(wire::ErrorCode::InvalidFile);
    };
    let block = Block {
        offset: request.offset,
        size: request.size,
        hash: blake3::Hash::from_bytes(hash),
    };
    match read_block(&folder, &request.name, block)
        .await
        .filter(|data| blake3::hash(data) == block.hash)
    {
        Some(data) => {
            debug!(device = %peer.short(), name = %request.name, offset = block.offset, "served block");
            wire::Message {
                body: Some(Body::Response(wire::Response {
                    id,
                    data: data.into(),
                    code: wire::ErrorCode::None as i32,
                })),
            }
        }
        None => refuse(wire::ErrorCode::NoSuchFile),
    }
}

/// Reads one block of a local file (the requester verifies its hash).
pub(crate) async fn read_block(folder: &Folder, name: &str, block: Block) -> Option<Vec<u8>> {
    let path = names::join(&folder.path(), name).ok()?;
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path).ok()?;
        let mut data = vec![0u8; block.size as usize];
        file.read_exact_at(&mut data, block.offset).ok()?;
        Some(data)
    })
    .await
    .ok()
    .flatten()
}

/// Asks `connection`'s peer for one block of `name`.
pub(crate) async fn request_block(
    connection: &quinn::Connection,
    folder: &str,
    name: &str,
    block: Block,
) -> Result<bytes::Bytes, String> {
    let (mut send_stream, recv_stream) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let request = wire::Message {
        body: Some(Body::Request(wire::Request {
            id: 0,
            folder: folder.into(),
            name: name.into(),
            offset: block.offset,
            size: block.size,
            hash: block.hash.as_bytes().to_vec(),
        })),
    };
    send(&mut send_stream, &request)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send_stream.finish();
    match FrameReader::new(recv_stream).next().await {
        Ok(Some(wire::Message {
            body: Some(Body::Response(response)),
        })) if response.code == wire::ErrorCode::None as i32 => Ok(response.data),
        Ok(Some(wire::Message {
            body: Some(Body::Response(response)),
        })) => Err(format!("peer answered with error code {}", response.code)),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
