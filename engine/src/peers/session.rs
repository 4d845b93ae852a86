//! One authenticated link: Hello and ClusterConfig on a control stream, index batches both
//! ways on it, and one stream per block request. Protocol only: what the folders make of
//! a ClusterConfig is `folder::offers`, what is announced of an entry is `model::announce`.
//!
//! Who wakes me: the link (frames), the index senders' wake-ups (`local_changed`). Whom I
//! wake: the puller and the summary task of a folder whose remote index changed.

mod deltas;
mod index;
mod serve;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::framing::MAX_CONTROL_FRAME_LEN;
use peerfold_protocol::wire::{self, message::Body};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Reason;
use super::link::{FrameReceiver, Link, LinkError};
use super::punch::HolePunching;
use super::registry::{Hello, PeerRegistry};
use crate::config::introduce::{IntroducedDevice, MAX_INTRODUCED_PER_FOLDER};
use crate::config::live::LiveConfig;
use crate::events::{ConnectionKind, Event, EventLog};
use crate::folder::offers::{Offer, OfferedFolder, Offers};
use crate::folder::registry::FolderRegistry;
use crate::life::Life;
use crate::model::FolderType;
use crate::store::{StoreError, StoreHandle};

/// How long the peer has for its Hello and ClusterConfig.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What sessions work with.
pub(crate) struct SessionContext {
    pub(crate) me: DeviceId,
    /// Bandwidth limits every link keeps to.
    pub(crate) rates: Arc<super::rate::RateLimits>,
    pub(crate) config: Arc<LiveConfig>,
    pub(crate) store: StoreHandle,
    pub(crate) folders: Arc<FolderRegistry>,
    pub(crate) offers: Arc<Offers>,
    pub(crate) registry: Arc<PeerRegistry>,
    pub(crate) events: Arc<EventLog>,
    pub(crate) punching: Arc<HolePunching>,
    pub(crate) life: Life,
}

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("peer did not complete the handshake in time")]
    Timeout,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not the peer's fault: this device's entry changed after the peer based a block list
    /// on it. The next session takes the peer's index again from that entry on.
    #[error(
        "the peer sent a block list as a change to an entry of ours that has changed since \
         (its sequence {sequence}); reconnecting to take the whole list"
    )]
    DeltaBaseGone { sequence: u64 },
}

/// Runs the session until the link closes or the engine stops. Once `retired` fires (a
/// better link took this one's place in the registry), the session stops exchanging
/// indexes (the new link's session does that), lets the requests under way on this link
/// finish, and closes it when it has gone quiet.
///
/// A link that lost to a live one before it was registered comes with `retired` already
/// fired: the peer may have taken it as its link to this device (the two sides see the two
/// links arrive in either order) and be asking for blocks over it, so it gets its handshake
/// and its answers like any retired link, and no index, event or offer.
pub(crate) async fn run(
    context: &SessionContext,
    link: Arc<dyn Link>,
    peer: DeviceId,
    dialed: bool,
    retired: CancellationToken,
) -> Result<(), SessionError> {
    let lost = retired.is_cancelled();
    let control = if dialed {
        link.open().await?
    } else {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, link.accept())
            .await
            .map_err(|_| SessionError::Timeout)??
    };
    let (mut send, mut reader) = (control.send, control.recv);
    // Index batches and the handshake: never a block-sized frame.
    reader.limit(MAX_CONTROL_FRAME_LEN);
    send.send(&hello(context)).await?;
    send.send(&cluster_config(context, peer).await?).await?;
    let (their_hello, their_config) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut reader))
            .await
            .map_err(|_| SessionError::Timeout)??;
    // The peer's words, by size only; what is kept of them is cut short.
    debug!(
        name_bytes = their_hello.device_name.len(),
        client_bytes = their_hello.client_name.len(),
        version_bytes = their_hello.client_version.len(),
        "hello"
    );
    if lost {
        drain(context, &link, peer, Reason::Duplicate).await;
        return Ok(());
    }
    let their_hello = KeptHello::from(their_hello);
    context.registry.said_hello(
        peer,
        link.id(),
        Hello {
            client_name: their_hello.client_name.clone(),
            client_version: their_hello.client_version.clone(),
        },
    );
    context.events.emit(Event::DeviceConnected {
        device: peer,
        name: their_hello.device_name,
        address: link.remote_address(),
        client_name: their_hello.client_name,
        client_version: their_hello.client_version,
        kind: ConnectionKind::of(link.path(), dialed),
        punched: context
            .registry
            .status(peer)
            .is_some_and(|s| s.punched && s.address == link.remote_address()),
    });

    // Outgoing control messages go through one writer.
    let (outbox, mut outgoing) = mpsc::channel::<wire::Message>(16);
    let writer_retired = retired.clone();
    let writer = async move {
        loop {
            let message = tokio::select! {
                biased;
                // Retired: nothing more is sent, and the stream stays open (its end would
                // end the peer's session on this link before its requests are answered).
                () = writer_retired.cancelled() => std::future::pending().await,
                message = outgoing.recv() => message,
            };
            let Some(message) = message else { break };
            send.send(&message).await?;
        }
        let _ = send.finish().await;
        Ok::<(), SessionError>(())
    };
    tokio::pin!(writer);

    let offered = offered_folders(context.me, peer, &their_config);
    let starts = context.offers.on_cluster_config(peer, &offered).await?;
    let mut their_index_ids = HashMap::new();
    for start in starts {
        their_index_ids.insert(start.folder.id.clone(), start.their_index_id);
        // Bases for block lists as changes: the peer's entries of its current index.
        let deltas_to = their_config
            .block_list_deltas
            .then_some((peer, start.their_index_id));
        // Each sender ends when the writer is gone, i.e. when this session ends.
        context.life.spawn(index::send_index(
            start.folder,
            start.send_after,
            outbox.clone(),
            deltas_to,
        ));
    }
    // The session keeps one sender itself: with no folder shared (yet), the writer must
    // not see its channel close and end a session that pairing just established.
    let _keep_writer_open = outbox;

    let serving = serve::serve_requests(context, link.clone(), peer);
    tokio::pin!(serving);
    let receiving = index::receive(context, peer, &mut reader, &their_index_ids);
    tokio::select! {
        biased;
        () = context.life.cancelled() => return Ok(()),
        result = receiving => return result,
        result = &mut writer => return result,
        result = &mut serving => return result,
        () = retired.cancelled() => {}
    }
    debug!("replaced by a better connection; draining this one");
    tokio::select! {
        biased;
        () = context.life.cancelled() => {}
        _ = &mut writer => {}
        _ = &mut serving => {}
        () = quiet(&*link) => {}
    }
    link.close(&Reason::Replaced);
    Ok(())
}

/// A link that lost before its session began: answers the peer's block requests on it
/// until it is quiet, then closes it for `reason`. (Its control stream stays open
/// meanwhile: its end would end the peer's session on it, and the requests with it.)
async fn drain(context: &SessionContext, link: &Arc<dyn Link>, peer: DeviceId, reason: Reason) {
    debug!("another live connection is kept; answering requests on this one until it is quiet");
    tokio::select! {
        biased;
        () = context.life.cancelled() => {}
        _ = serve::serve_requests(context, link.clone(), peer) => {}
        () = quiet(&**link) => {}
    }
    link.close(&reason);
}

/// How long a retired link must carry nothing before it is closed, and the most it is
/// given to get there (a transfer under way on it moves to the new link meanwhile: new
/// requests go there).
const QUIET_FOR: Duration = Duration::from_secs(1);
const DRAIN_AT_MOST: Duration = Duration::from_secs(30);

/// Resolves once `link` has carried no bytes for [`QUIET_FOR`] (or after
/// [`DRAIN_AT_MOST`]).
async fn quiet(link: &dyn Link) {
    let poll = QUIET_FOR / 4;
    let drained = async {
        let mut last = link.stats();
        let mut still = Duration::ZERO;
        while still < QUIET_FOR {
            tokio::time::sleep(poll).await;
            let now = link.stats();
            if now == last {
                still += poll;
            } else {
                still = Duration::ZERO;
                last = now;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_AT_MOST, drained).await;
}

async fn handshake(
    reader: &mut FrameReceiver,
) -> Result<(wire::Hello, wire::ClusterConfig), SessionError> {
    let hello = match reader.next().await? {
        Some(wire::Message {
            body: Some(Body::Hello(h)),
        }) => h,
        other => return Err(unexpected("Hello", other.as_ref())),
    };
    let config = match reader.next().await? {
        Some(wire::Message {
            body: Some(Body::ClusterConfig(c)),
        }) => c,
        other => return Err(unexpected("ClusterConfig", other.as_ref())),
    };
    Ok((hello, config))
}

/// A protocol error naming what came instead (its kind, never its content).
fn unexpected(wanted: &str, got: Option<&wire::Message>) -> SessionError {
    SessionError::Protocol(format!("expected {wanted}, got {}", kind_of(got)))
}

/// What kind of message came (never its content), for errors and logs.
fn kind_of(message: Option<&wire::Message>) -> &'static str {
    match message.and_then(|m| m.body.as_ref()) {
        None if message.is_none() => "the end of the stream",
        None => "an empty message",
        Some(Body::Hello(_)) => "Hello",
        Some(Body::ClusterConfig(_)) => "ClusterConfig",
        Some(Body::Index(_)) => "Index",
        Some(Body::IndexUpdate(_)) => "IndexUpdate",
        Some(Body::Request(_)) => "Request",
        Some(Body::Response(_)) => "Response",
        Some(_) => "another message",
    }
}

/// Bytes kept of each name in a peer's Hello: it goes into the peer registry, events and
/// REST answers, where a line is all anyone reads of it (a peer sent 4 MB names).
const MAX_HELLO_FIELD_BYTES: usize = 64;

/// What is kept of a peer's Hello.
struct KeptHello {
    device_name: String,
    client_name: String,
    client_version: String,
}

impl From<wire::Hello> for KeptHello {
    fn from(hello: wire::Hello) -> Self {
        let cut = |mut text: String| {
            let mut end = text.len().min(MAX_HELLO_FIELD_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text
        };
        Self {
            device_name: cut(hello.device_name),
            client_name: cut(hello.client_name),
            client_version: cut(hello.client_version),
        }
    }
}

fn hello(context: &SessionContext) -> wire::Message {
    wire::Message {
        body: Some(Body::Hello(wire::Hello {
            device_name: context.config.get().device_name.clone(),
            client_name: "peerfold".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
        })),
    }
}

/// The folders shared with `peer`, with what we hold of each device's index.
async fn cluster_config(
    context: &SessionContext,
    peer: DeviceId,
) -> Result<wire::Message, SessionError> {
    let config = context.config.get();
    let (me, name) = (context.me, config.device_name.clone());
    // Each device's name and addresses as configured here: what an introducer passes on.
    let known: HashMap<DeviceId, (String, Vec<String>)> = config
        .devices
        .iter()
        .map(|d| {
            let addresses = d.addresses.iter().map(ToString::to_string).collect();
            (d.id, (d.name.clone(), addresses))
        })
        .collect();
    let shared = context.folders.shared_with(peer);
    let described: Vec<_> = shared
        .iter()
        .map(|f| (f.id.clone(), f.idx, f.config()))
        .collect();
    let folders = context
        .store
        .read(move |store| {
            let mut folders = Vec::new();
            for (id, idx, config) in described {
                let mut devices = vec![wire::FolderDevice {
                    id: me.as_bytes().to_vec(),
                    name: name.clone(),
                    addresses: Vec::new(),
                    index_id: store.index_id(idx)?,
                    max_sequence: store.sequence(idx)?,
                }];
                for device in &config.devices {
                    let (index_id, max_sequence) =
                        store.remote_index_state(idx, *device)?.unwrap_or((0, 0));
                    let (name, addresses) = known.get(device).cloned().unwrap_or_default();
                    devices.push(wire::FolderDevice {
                        id: device.as_bytes().to_vec(),
                        name,
                        addresses,
                        index_id,
                        max_sequence,
                    });
                }
                folders.push(wire::Folder {
                    id,
                    label: config.label,
                    r#type: match config.folder_type {
                        FolderType::SendReceive => wire::FolderType::SendReceive,
                        FolderType::SendOnly => wire::FolderType::SendOnly,
                        FolderType::ReceiveOnly => wire::FolderType::ReceiveOnly,
                    } as i32,
                    paused: false,
                    devices,
                });
            }
            Ok::<_, StoreError>(folders)
        })
        .await?;
    Ok(wire::Message {
        body: Some(Body::ClusterConfig(wire::ClusterConfig {
            folders,
            block_list_deltas: true,
        })),
    })
}

/// The peer's ClusterConfig as the folders read it.
fn offered_folders(
    me: DeviceId,
    peer: DeviceId,
    config: &wire::ClusterConfig,
) -> Vec<OfferedFolder> {
    config
        .folders
        .iter()
        .map(|folder| {
            let mut offered = OfferedFolder {
                offer: Offer {
                    id: folder.id.clone(),
                    label: folder.label.clone(),
                },
                others: Vec::new(),
                ours_held: None,
                their_index_id: 0,
            };
            for device in &folder.devices {
                match DeviceId::try_from(device.id.as_slice()) {
                    Ok(id) if id == me => {
                        offered.ours_held = Some((device.index_id, device.max_sequence));
                    }
                    Ok(id) if id == peer => offered.their_index_id = device.index_id,
                    Ok(id) if offered.others.len() < MAX_INTRODUCED_PER_FOLDER => {
                        offered.others.push(IntroducedDevice {
                            id,
                            name: device.name.clone(),
                            addresses: device.addresses.clone(),
                        });
                    }
                    _ => {}
                }
            }
            offered
        })
        .collect()
}

#[cfg(test)]
mod crossing_tests;
#[cfg(test)]
mod tests;
