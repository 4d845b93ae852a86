//! Asking a peer for one block: every request is its own stream, so requests never wait
//! behind each other or behind index traffic. A request waits for room in the peer's
//! window first (peers/flow), and gives up when the peer is too slow.

use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::wire::{self, message::Body};
use tokio::time::Instant;

use super::flow::{PeerFlow, Verdict};
use super::link::Link;
use super::{BlockData, BlockError, BlockRequest};

/// A response frame holds the block and a few bytes of envelope.
const RESPONSE_OVERHEAD: usize = 1024;
/// How often a request in flight looks at its peer's pace.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Asks the peer on `link` for one block. The caller checks the data's hash; the data
/// holds its room in the windows until it is dropped. A request that got its room only
/// after `link` lost its place to another (`still_current` says) is not sent: it fails
/// as [`BlockError::Moved`], to be asked on the new link (else the requests queued behind
/// a relay's window all went through the relay after a direct path was punched).
pub(super) async fn request_block(
    link: &dyn Link,
    flow: &Arc<PeerFlow>,
    request: &BlockRequest,
    still_current: impl Fn() -> bool,
) -> Result<BlockData, BlockError> {
    let size = request.block.size;
    // What the peer owes: the block past what the request skips (a peer that predates
    // `skip` sends it all, which the frame limit allows).
    let owed_bytes = size - request.skip.min(size);
    let held = flow.reserve(owed_bytes).await;
    if !still_current() {
        return Err(BlockError::Moved);
    }
    let mut stream = link.open().await?;
    stream.recv.limit(size as usize + RESPONSE_OVERHEAD);
    stream.recv.count_into(flow.delivered.clone());
    let owed = flow.begin(owed_bytes);
    let message = wire::Message {
        body: Some(Body::Request(wire::Request {
            id: 0,
            folder: request.folder.clone(),
            name: request.name.clone(),
            offset: request.block.offset,
            size,
            hash: request.block.hash.as_bytes().to_vec(),
            skip: request.skip,
        })),
    };
    stream.send.send(&message).await?;
    // The request is out; a failure to mark its end shows in the answer.
    let _ = stream.send.finish().await;
    let answer = stream.recv.next();
    tokio::pin!(answer);
    let mut looks = tokio::time::interval_at(Instant::now() + LOOK_EVERY, LOOK_EVERY);
    let answer = loop {
        tokio::select! {
            answer = &mut answer => break answer?,
            _ = looks.tick() => match owed.verdict(Instant::now(), link.receive_limited()) {
                Verdict::Wait => {}
                Verdict::Slow => return Err(BlockError::Slow),
                Verdict::Overdue => return Err(BlockError::Overdue),
            },
        }
    };
    match answer {
        Some(wire::Message {
            body: Some(Body::Response(response)),
        }) if response.code == wire::ErrorCode::None as i32 => {
            Ok(BlockData::held(response.data, held))
        }
        Some(wire::Message {
            body: Some(Body::Response(response)),
        }) => Err(BlockError::Refused(response.code)),
        _ => Err(BlockError::Unexpected),
    }
}
