//! Peers: which link serves each device (the registry), the session run on each link,
//! and the dialer that keeps configured devices connected.
//!
//! The folder side reaches the network only through the `Peers` port; sessions run over
//! a `Link`; addresses come from an `AddressSource`.

pub(crate) mod address_book;
pub(crate) mod addresses;
pub(crate) mod connection;
pub(crate) mod dialer;
pub(crate) mod flow;
pub(crate) mod link;
pub(crate) mod punch;
pub(crate) mod rate;
mod registry;
mod request;
pub(crate) mod session;

use bytes::Bytes;
use peerfold_protocol::DeviceId;
use peerfold_protocol::chunking::Block;

pub use link::{LinkStats, PathKind};
pub(crate) use registry::PeerRegistry;
pub use registry::PeerStatus;

/// One block a folder wants from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockRequest {
    /// The folder's ID.
    pub(crate) folder: String,
    /// The file's name.
    pub(crate) name: String,
    /// Where the block lies and what it hashes to.
    pub(crate) block: Block,
    /// Bytes at the block's start the requester holds already: only the rest is asked
    /// for (`wire::Request::skip`). 0: all of it.
    pub(crate) skip: u32,
}

/// A block's data as a peer sent it; while it lives it holds its room in the peer's
/// window (so data received but not yet written counts against the bound too).
pub(crate) struct BlockData {
    pub(crate) data: Bytes,
    _held: Option<flow::Held>,
}

impl BlockData {
    fn held(data: Bytes, held: flow::Held) -> Self {
        Self {
            data,
            _held: Some(held),
        }
    }
}

/// Data that holds no window (fake peers in tests).
impl From<Bytes> for BlockData {
    fn from(data: Bytes) -> Self {
        Self { data, _held: None }
    }
}

/// Why a peer gave no block.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlockError {
    /// The device is not connected (or went away during the request).
    #[error("not connected")]
    PeerGone,
    /// The peer answered with an error code (it does not have the block).
    #[error("the peer refused (error code {0})")]
    Refused(i32),
    /// The request's stream failed.
    #[error(transparent)]
    Stream(#[from] link::LinkError),
    /// The peer answered something other than a response.
    #[error("the peer answered with something other than a block")]
    Unexpected,
    /// The peer delivered less than the floor rate while it owed data.
    #[error("the peer sends too slowly")]
    Slow,
    /// The peer took longer over this request than its pace allows.
    #[error("the peer did not answer in time")]
    Overdue,
    /// The request waited on a link that lost its place to a better one meanwhile: ask
    /// again (the new link serves the device now).
    #[error("the connection moved while the request waited")]
    Moved,
}

/// Why a link is closed, as the peer is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// This device stops.
    Shutdown,
    /// Another link to the same device is kept.
    Duplicate,
    /// The link stopped answering and a new one from the same device replaces it.
    Silent,
    /// A better link to the same device took this one's place, and this one drained.
    Replaced,
    /// The peer is not a configured device here.
    UnknownDevice,
    /// The peer connected from outside its allowed networks.
    NotAllowedNetwork,
    /// The peer is paused here (it tried to connect).
    Paused,
    /// The user paused the peer just now.
    PausedNow,
    /// The peer was removed from the configuration.
    Removed,
    /// What the peer is told about the folders changed: it reconnects for a fresh
    /// ClusterConfig.
    Reconfigured,
    /// The peer kept block requests waiting (peers/flow).
    TooSlow,
    /// The peer broke the protocol.
    Protocol(String),
}

impl Reason {
    /// The QUIC application close code (0 normal, 1 unknown device, 2 protocol, 3 paused).
    pub(crate) fn code(&self) -> u32 {
        match self {
            Self::Shutdown
            | Self::Duplicate
            | Self::Silent
            | Self::Replaced
            | Self::PausedNow
            | Self::Removed
            | Self::Reconfigured => 0,
            Self::UnknownDevice | Self::NotAllowedNetwork => 1,
            Self::Protocol(_) | Self::TooSlow => 2,
            Self::Paused => 3,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => f.write_str("peerfold is shutting down"),
            Self::Duplicate => f.write_str("duplicate connection"),
            Self::Silent => f.write_str("no answer; replaced by a new connection"),
            Self::Replaced => f.write_str("replaced by a better connection"),
            Self::UnknownDevice => {
                f.write_str("this device is not accepted here: ask its owner to add your device ID")
            }
            Self::NotAllowedNetwork => {
                f.write_str("this device is not accepted from this network here")
            }
            Self::Paused => f.write_str("this device is paused here"),
            Self::PausedNow => f.write_str("paused"),
            Self::Removed => f.write_str("removed from the configuration"),
            Self::Reconfigured => f.write_str("configuration changed; reconnect"),
            Self::TooSlow => f.write_str("block requests answered too slowly, or not at all"),
            Self::Protocol(why) => f.write_str(why),
        }
    }
}

/// The network as the folder side sees it. Implemented by [`PeerRegistry`], and by fakes
/// in tests.
#[async_trait::async_trait]
pub(crate) trait Peers: Send + Sync {
    /// Asks `device` for one block. The caller checks the data's hash.
    async fn request_block(
        &self,
        device: DeviceId,
        request: &BlockRequest,
    ) -> Result<BlockData, BlockError>;
    /// Whether `device` is connected now.
    fn is_connected(&self, device: DeviceId) -> bool;
    /// Closes the link to `device`, if any, telling it why.
    fn disconnect(&self, device: DeviceId, reason: Reason);
}
