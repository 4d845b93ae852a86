//! Answering the peer's block requests, each on its own stream. A request is answered only
//! for a block the local index lists (`answer`); the requester checks the hash. What one
//! connection may cost is bounded: requests served at once, bytes read and not yet sent,
//! the size of a request frame, how long a stream may stay silent or stall, and how many
//! refusals it may collect (`refusals`). A stream may also carry a peer's hole-punching
//! request (`peers::punch`) or a liveness probe.

mod answer;
mod lists;
mod refusals;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerfold_protocol::DeviceId;
use peerfold_protocol::wire::{self, message::Body};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{SessionContext, SessionError, kind_of};
use crate::folder::registry::FolderRegistry;
use crate::life::Life;
use crate::peers::Reason;
use crate::peers::flow::{Allowance, Windows};
use crate::peers::link::{FramedStream, Link, LinkError};
use crate::peers::punch::HolePunching;
use crate::store::StoreHandle;
use answer::Answer;
use lists::BlockLists;
use refusals::{Refusals, Verdict};

/// Block requests served at once per connection.
const SERVING_CONCURRENCY: usize = 256;
/// Block reads from disk at once per connection, each on a blocking thread: a peer asking
/// for hundreds of small blocks at once kept as many threads reading.
const DISK_READS: usize = 8;
/// The largest frame a request stream takes: a Request is its folder ID, name, hash and
/// three numbers.
const MAX_REQUEST_FRAME_LEN: usize = 64 << 10;
/// How long a new stream has to deliver its Request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may go without the peer taking any of it before it is dropped.
const SEND_STALL: Duration = Duration::from_secs(30);

/// Answers block requests until the link closes; every request task ends with it.
pub(super) async fn serve_requests(
    context: &SessionContext,
    link: Arc<dyn Link>,
    peer: DeviceId,
) -> Result<(), SessionError> {
    let ended = CancellationToken::new();
    let _end_requests = ended.clone().drop_guard();
    let serving = Arc::new(Serving {
        folders: context.folders.clone(),
        store: context.store.clone(),
        link: link.clone(),
        peer,
        // Bytes read for the peer and not yet taken by QUIC: as much as QUIC may hold
        // unacknowledged (a larger block takes all of it). Before, 256 requests of 16 MiB
        // each could be held at once.
        budget: Allowance::new(Windows::for_round_trip(link.round_trip()).send),
        disk_reads: Semaphore::new(DISK_READS),
        lists: BlockLists::default(),
        refusals: Mutex::new(Refusals::new(Instant::now())),
        punching: context.punching.clone(),
        life: context.life.clone(),
    });
    let limit = Arc::new(Semaphore::new(SERVING_CONCURRENCY));
    loop {
        let stream = link.accept().await?;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let (serving, ended) = (serving.clone(), ended.clone());
        context.life.spawn(async move {
            let _permit = permit;
            tokio::select! {
                biased;
                () = ended.cancelled() => {}
                () = serving.serve(stream) => {}
            }
        });
    }
}

/// What the request tasks of one connection share.
struct Serving {
    folders: Arc<FolderRegistry>,
    store: StoreHandle,
    link: Arc<dyn Link>,
    peer: DeviceId,
    budget: Allowance,
    disk_reads: Semaphore,
    lists: BlockLists,
    refusals: Mutex<Refusals>,
    punching: Arc<HolePunching>,
    life: Life,
}

impl Serving {
    /// Reads one Request from `stream` and answers it.
    async fn serve(&self, mut stream: FramedStream) {
        stream.recv.limit(MAX_REQUEST_FRAME_LEN);
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, stream.recv.next()).await {
            Ok(Ok(Some(wire::Message {
                body: Some(Body::Request(request)),
            }))) => request,
            // A liveness probe (`Link::answers`): the QUIC stack's acks are the answer.
            Ok(Ok(Some(wire::Message {
                body: Some(Body::Ping(_)),
            }))) => return,
            // The peer asks for a hole punch (peers/punch).
            Ok(Ok(Some(wire::Message {
                body: Some(Body::Punch(punch)),
            }))) => {
                self.punching
                    .answer(self.peer, stream, &punch, &self.life)
                    .await;
                return;
            }
            Ok(Ok(Some(other))) => {
                debug!(
                    kind = kind_of(Some(&other)),
                    "not a Request on a request stream"
                );
                self.judge(self.refusals().malformed());
                return;
            }
            Ok(Err(LinkError::Frame(e))) => {
                debug!(error = %e, "bad frame on a request stream");
                self.judge(self.refusals().malformed());
                return;
            }
            // Finished, reset or lost: nothing to answer.
            Ok(Ok(None) | Err(_)) => return,
            Err(_) => {
                debug!("no Request within the time allowed; stream dropped");
                return;
            }
        };
        let answer = answer::answer(
            &self.folders,
            &self.store,
            (&self.budget, &self.disk_reads),
            &self.lists,
            self.peer,
            &request,
        );
        let (data, code, held) = match answer.await {
            Answer::Data(data, held) => {
                self.refusals().served(Instant::now());
                (data, wire::ErrorCode::None, Some(held))
            }
            Answer::Malformed(code) => {
                if self.judge(self.refusals().malformed()) {
                    return;
                }
                (Vec::new(), code, None)
            }
            Answer::Missing => {
                if self.judge(self.refusals().refused(Instant::now())) {
                    return;
                }
                (Vec::new(), wire::ErrorCode::NoSuchFile, None)
            }
        };
        let size = data.len();
        let response = wire::Message {
            body: Some(Body::Response(wire::Response {
                id: request.id,
                data: data.into(),
                code: code as i32,
            })),
        };
        // A peer that stops reading holds its share of the budget for SEND_STALL at most;
        // dropping the stream then releases it (QUIC keeps only what it took already).
        match stream.send.send_unless_stalled(response, SEND_STALL).await {
            Ok(()) => {
                let _ = stream.send.finish().await;
                // Tests count "served block" lines.
                match code {
                    wire::ErrorCode::None => {
                        if let Some(folder) = self.folders.get(&request.folder) {
                            folder
                                .transfers
                                .served(self.peer, &request.name, size as u64);
                        }
                        debug!(size, "served block")
                    }
                    _ => debug!(code = code as i32, "refused a block request"),
                }
            }
            Err(e) => debug!(size, error = %e, "answer not taken; stream dropped"),
        }
        drop(held);
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, Refusals> {
        // Counters only: a panic elsewhere leaves them usable.
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Disconnects the peer when `verdict` says so; true then.
    fn judge(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Allowed => false,
            Verdict::Disconnect(why) => {
                warn!("{why}; disconnecting");
                self.link.close(&Reason::Protocol(why.into()));
                true
            }
        }
    }
}
