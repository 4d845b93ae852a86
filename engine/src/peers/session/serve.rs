//! Answering the peer's block requests, each on its own stream. A request is answered
//! only for a block the local index says the file holds; the requester checks the hash.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::{Block, MAX_BLOCK_SIZE};
use peerfold_protocol::wire::{self, message::Body};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{SessionContext, SessionError};
use crate::model::names;
use crate::peers::Reason;
use crate::peers::link::Link;

/// Block requests served at once per connection.
const SERVING_CONCURRENCY: usize = 256;
/// Invalid block requests (see `is_invalid_request`) a peer may make per connection.
const MAX_INVALID_REQUESTS: usize = 100;

/// Answers block requests until the link closes.
pub(super) async fn serve_requests(
    context: &SessionContext,
    link: Arc<dyn Link>,
    peer: DeviceId,
) -> Result<(), SessionError> {
    let limit = Arc::new(Semaphore::new(SERVING_CONCURRENCY));
    let invalid = Arc::new(AtomicUsize::new(0));
    loop {
        let mut stream = link.accept().await?;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let (invalid, link) = (invalid.clone(), link.clone());
        let (folders, store) = (context.folders.clone(), context.store.clone());
        context.life.spawn(async move {
            let _permit = permit;
            let Ok(Some(wire::Message {
                body: Some(Body::Request(request)),
            })) = stream.recv.next().await
            else {
                return;
            };
            let response = answer(&folders, &store, peer, request).await;
            if is_invalid_request(&response)
                && invalid.fetch_add(1, Ordering::Relaxed) + 1 > MAX_INVALID_REQUESTS
            {
                warn!("too many invalid block requests; disconnecting");
                link.close(&Reason::Protocol("too many invalid block requests".into()));
                return;
            }
            if stream.send.send(&response).await.is_ok() {
                let _ = stream.send.finish().await;
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

async fn answer(
    folders: &crate::folder::registry::FolderRegistry,
    store: &crate::store::StoreHandle,
    peer: DeviceId,
    request: wire::Request,
) -> wire::Message {
    let id = request.id;
    let refuse = |code: wire::ErrorCode| wire::Message {
        body: Some(Body::Response(wire::Response {
            id,
            data: Default::default(),
            code: code as i32,
        })),
    };
    let Some(folder) = folders.get(&request.folder) else {
        return refuse(wire::ErrorCode::Generic);
    };
    if !folder.shares_with(peer)
        || names::validate(&request.name).is_err()
        || request.size == 0
        || request.size > MAX_BLOCK_SIZE
    {
        return refuse(wire::ErrorCode::InvalidFile);
    }
    let Ok(hash) = <[u8; 32]>::try_from(request.hash.as_slice()) else {
        return refuse(wire::ErrorCode::InvalidFile);
    };
    // Serve only files in the index (never ignored or unindexed ones), and only data that
    // hashes to what was asked: a peer cannot read what it does not already know the hash of.
    let (idx, name) = (folder.idx, request.name.clone());
    if !store
        .read(move |r| r.has_local_file(idx, &name))
        .await
        .unwrap_or(false)
    {
        return refuse(wire::ErrorCode::NoSuchFile);
    }
    let block = Block {
        offset: request.offset,
        size: request.size,
        hash: blake3::Hash::from_bytes(hash),
    };
    let Ok(path) = names::join(&folder.path(), &request.name) else {
        return refuse(wire::ErrorCode::InvalidFile);
    };
    let data = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path).ok()?;
        let mut data = vec![0u8; block.size as usize];
        file.read_exact_at(&mut data, block.offset).ok()?;
        Some(data).filter(|data| blake3::hash(data) == block.hash)
    })
    .await
    .ok()
    .flatten();
    match data {
        Some(data) => {
            debug!(offset = block.offset, "served block");
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
