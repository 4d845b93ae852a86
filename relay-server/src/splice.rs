//! Copying a session's bytes both ways, verbatim.
//!
//! Each direction owns one 64 KiB buffer for its whole life (strelaysrv's
//! `-network-buffer`), so proxying allocates nothing per read. A direction that moves
//! nothing for the network timeout (reads nothing, or cannot write) ends the session, as
//! strelaysrv's read/write deadlines do; one watchdog per session looks at what each
//! direction moved a few times per timeout, rather than a timer armed around every read and
//! write (those timers cost a single relayed flow about 15% of its throughput:
//! bench/RESULTS.md). An end of stream is passed on as a half-close, so the other direction
//! may finish what it is sending. The rate limits are token buckets charged after each
//! read: the reader waits off its debt before writing.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::limits::ByteRate;
use crate::stats::Stats;

/// Bytes read (and written) at a time per direction.
const BUFFER: usize = 64 * 1024;

/// One session's two sockets and what bounds the copying.
#[derive(Debug)]
pub(crate) struct Splice<'a> {
    pub(crate) a: TcpStream,
    pub(crate) b: TcpStream,
    pub(crate) idle: Duration,
    /// Shared by both directions: the session's total.
    pub(crate) session_rate: Option<ByteRate>,
    pub(crate) global_rate: Option<&'a ByteRate>,
    pub(crate) stats: &'a Stats,
    pub(crate) cancel: &'a CancellationToken,
}

/// How a splice ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    /// Both sides closed their sending half.
    #[error("both sides finished")]
    Finished,
    /// A socket failed or a direction idled out.
    #[error("{0}")]
    Failed(io::Error),
    /// The relay or one of the session's devices went away.
    #[error("cancelled")]
    Cancelled,
}

/// Copies until both directions finish, one fails, or `cancel` fires. The sockets close
/// when this returns.
pub(crate) async fn splice(splice: Splice<'_>) -> Ended {
    let _ = splice.a.set_nodelay(true);
    let _ = splice.b.set_nodelay(true);
    let (a_read, a_write) = splice.a.into_split();
    let (b_read, b_write) = splice.b.into_split();
    let rates: Vec<&ByteRate> = splice
        .session_rate
        .iter()
        .chain(splice.global_rate)
        .collect();
    let moved = [Progress::default(), Progress::default()];
    let one = pump(a_read, b_write, &moved[0], &rates, splice.stats);
    let two = pump(b_read, a_write, &moved[1], &rates, splice.stats);
    tokio::select! {
        () = splice.cancel.cancelled() => Ended::Cancelled,
        error = watch_idle(&moved, splice.idle) => Ended::Failed(error),
        result = async { tokio::try_join!(one, two) } => match result {
            Ok(_) => Ended::Finished,
            Err(error) => Ended::Failed(error),
        },
    }
}

/// What one direction has moved, for the idle watchdog.
#[derive(Debug, Default)]
struct Progress {
    bytes: AtomicU64,
    /// The direction ended (its source closed): it is idle by right.
    done: AtomicBool,
}

/// Resolves with a timeout error once a direction that has not ended has moved nothing for
/// `idle` (checked four times per `idle`, so within 1.25 times of it).
async fn watch_idle(moved: &[Progress; 2], idle: Duration) -> io::Error {
    let tick = (idle / 4).max(Duration::from_millis(1));
    let mut last = [0u64; 2];
    let mut still = [Duration::ZERO; 2];
    loop {
        tokio::time::sleep(tick).await;
        for (i, progress) in moved.iter().enumerate() {
            let bytes = progress.bytes.load(Ordering::Relaxed);
            if bytes != last[i] || progress.done.load(Ordering::Relaxed) {
                last[i] = bytes;
                still[i] = Duration::ZERO;
            } else {
                still[i] += tick;
                if still[i] >= idle {
                    return io::Error::new(io::ErrorKind::TimedOut, "idle for the network timeout");
                }
            }
        }
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    moved: &Progress,
    rates: &[&ByteRate],
    stats: &Stats,
) -> io::Result<()> {
    let mut buf = vec![0; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            moved.done.store(true, Ordering::Relaxed);
            to.shutdown().await?;
            return Ok(());
        }
        let now = Instant::now();
        let wait = rates
            .iter()
            .map(|rate| rate.reserve(n, now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        to.write_all(&buf[..n]).await?;
        moved.bytes.fetch_add(n as u64, Ordering::Relaxed);
        stats.proxied(n);
    }
}
