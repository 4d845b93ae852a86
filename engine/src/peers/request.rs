//! Asking a peer for one block: every request is its own stream, so requests never wait
//! behind each other or behind index traffic.

use bytes::Bytes;
use peerfold_protocol::wire::{self, message::Body};

use super::link::Link;
use super::{BlockError, BlockRequest};

/// Asks the peer on `link` for one block. The caller checks the data's hash.
pub(super) async fn request_block(
    link: &dyn Link,
    request: &BlockRequest,
) -> Result<Bytes, BlockError> {
    let mut stream = link.open().await?;
    let message = wire::Message {
        body: Some(Body::Request(wire::Request {
            id: 0,
            folder: request.folder.clone(),
            name: request.name.clone(),
            offset: request.block.offset,
            size: request.block.size,
            hash: request.block.hash.as_bytes().to_vec(),
        })),
    };
    stream.send.send(&message).await?;
    // The request is out; a failure to mark its end shows in the answer.
    let _ = stream.send.finish().await;
    match stream.recv.next().await? {
        Some(wire::Message {
            body: Some(Body::Response(response)),
        }) if response.code == wire::ErrorCode::None as i32 => Ok(response.data),
        Some(wire::Message {
            body: Some(Body::Response(response)),
        }) => Err(BlockError::Refused(response.code)),
        _ => Err(BlockError::Unexpected),
    }
}
