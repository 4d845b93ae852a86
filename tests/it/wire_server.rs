//! The block-serving side of a peer played by the test: answers the daemon's block
//! requests honestly, wrongly, slowly or never, as the test says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use peerfold_protocol::framing::FrameCodec;
use peerfold_protocol::wire::{self, message::Body};

use crate::wire_peer::{next, send};

/// How the test's peer answers one block request.
#[derive(Clone)]
pub(crate) enum Answer {
    /// The block.
    Data(Bytes),
    /// A refusal with this error code.
    Refuse(wire::ErrorCode),
    /// Nothing, ever (the stream stays open).
    Silent,
    /// The first `sent` bytes of a response carrying `size` bytes, then nothing.
    Stalls { size: usize, sent: usize },
}

/// Answers with the requested range of `files` (name -> content), or "no such file".
pub(crate) fn from_files(
    files: HashMap<String, Vec<u8>>,
) -> impl Fn(&wire::Request) -> Answer + Send + Sync + 'static {
    move |request| {
        let data = files.get(&request.name).and_then(|data| {
            let start = usize::try_from(request.offset).ok()?;
            data.get(start..start.checked_add(request.size as usize)?)
        });
        match data {
            Some(data) => Answer::Data(Bytes::copy_from_slice(data)),
            None => Answer::Refuse(wire::ErrorCode::NoSuchFile),
        }
    }
}

/// A running block server; stops when dropped.
pub(crate) struct BlockServer {
    /// The names asked for, in order.
    pub(crate) asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlockServer {
    /// Whether the daemon asked for `name`.
    pub(crate) fn was_asked(&self, name: &str) -> bool {
        self.asked.lock().unwrap().iter().any(|n| n == name)
    }

    /// How many requests came.
    pub(crate) fn requests(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

impl Drop for BlockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers block requests on `connection` as `answer` says, keeping unanswered streams
/// open, until the connection ends or the server is dropped.
pub(crate) fn serve_blocks(
    connection: quinn::Connection,
    answer: impl Fn(&wire::Request) -> Answer + Send + Sync + 'static,
) -> BlockServer {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let answer = Arc::new(answer);
    let task = tokio::spawn(async move {
        let held = Arc::new(Mutex::new(Vec::new()));
        let mut answering = tokio::task::JoinSet::new();
        while let Ok((mut tx, mut rx)) = connection.accept_bi().await {
            let (seen, answer, held) = (seen.clone(), answer.clone(), held.clone());
            answering.spawn(async move {
                let Some(wire::Message {
                    body: Some(Body::Request(request)),
                }) = next(&mut rx, &mut BytesMut::new()).await
                else {
                    return;
                };
                seen.lock().unwrap().push(request.name.clone());
                let response = |data: Bytes, code: wire::ErrorCode| {
                    Body::Response(wire::Response {
                        id: request.id,
                        data,
                        code: code as i32,
                    })
                };
                match answer(&request) {
                    Answer::Data(data) => {
                        send(&mut tx, response(data, wire::ErrorCode::None)).await;
                        let _ = tx.finish();
                    }
                    Answer::Refuse(code) => {
                        send(&mut tx, response(Bytes::new(), code)).await;
                        let _ = tx.finish();
                    }
                    Answer::Silent => held.lock().unwrap().push((tx, rx)),
                    Answer::Stalls { size, sent } => {
                        let mut frame = BytesMut::new();
                        let message = wire::Message {
                            body: Some(response(vec![0u8; size].into(), wire::ErrorCode::None)),
                        };
                        FrameCodec::default().encode(&message, &mut frame).unwrap();
                        let _ = tx.write_all(&frame[..sent.min(frame.len())]).await;
                        held.lock().unwrap().push((tx, rx));
                    }
                }
            });
        }
    });
    BlockServer { asked, task }
}
