//! The [`Server`]: binds its listener(s), then runs one task per accepted connection under a
//! root cancellation token and a task tracker, so [`Server::shutdown`] (or dropping the
//! handle) stops everything it started.
//!
//! Connection-level limits live here: at most `max_connections` at once (the rest are
//! closed on accept), a bounded TLS handshake, and a connection with no request in flight
//! that moves no bytes for `read_timeout` is closed (stdiscosrv's Go server has the same 5 s
//! read/idle timeout). hyper's header-read timeout cuts off clients that trickle headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use peerfold_protocol::DeviceId;
use peerfold_protocol::tls::{https_server_config, peer_device_id};
use peerfold_server_kit::{identity, stun};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::error::Error;
use crate::http::{App, MAX_HEADER_BYTES, Peer};
use crate::limits::{NotFoundTracker, RateLimiter};
use crate::metrics::Metrics;
use crate::store::{RedisStore, SqliteStore, Store};

/// Connections the `--metrics-listen` listener serves at once.
const METRICS_CONNECTIONS: usize = 64;
/// hyper's smallest HTTP/1 read buffer: it bounds the request head.
const HTTP1_BUFFER: usize = 8 * 1024;
/// Concurrent HTTP/2 streams per connection; a discovery client needs one or two.
const HTTP2_STREAMS: u32 = 16;

/// A running discovery server.
///
/// Start it with [`Server::bind`] (or [`Server::bind_with_clock`] in tests), read
/// [`Server::local_addr`], [`Server::device_id`] or [`Server::url`], and stop it with
/// [`Server::shutdown`], which finishes open requests and flushes the store. Dropping the
/// handle stops the tasks too, without waiting.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stun_addr: Option<SocketAddr>,
    device_id: DeviceId,
    http: bool,
    app: Arc<App>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Starts a server on the system clock.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        Self::bind_with_clock(config, Clock::system()).await
    }

    /// Starts a server that reads time from `clock`: expiry, `seen` and the sweep follow it.
    pub async fn bind_with_clock(config: Config, clock: Clock) -> Result<Self, Error> {
        let data = config.data.clone();
        let sqlite = match &config.store {
            StoreConfig::Sqlite(path) => Some(
                path.clone()
                    .unwrap_or_else(|| data.join("discovery.sqlite")),
            ),
            StoreConfig::Redis(_) => None,
        };
        // Files and SQLite block: do them off the runtime.
        let (identity, sqlite) = tokio::task::spawn_blocking(move || {
            let identity = identity::load_or_create(&data)?;
            let store = sqlite.map(|path| SqliteStore::open(&path)).transpose()?;
            Ok::<_, Error>((identity, store))
        })
        .await
        .expect("the start-up thread does not panic")?;
        let store: Arc<dyn Store> = match (sqlite, &config.store) {
            (Some(store), _) => Arc::new(store),
            (None, StoreConfig::Redis(url)) => Arc::new(RedisStore::connect(url).await?),
            (None, StoreConfig::Sqlite(_)) => unreachable!("opened above"),
        };
        let tls = if config.http {
            None
        } else {
            Some(TlsAcceptor::from(Arc::new(https_server_config(&identity)?)))
        };
        let listener = bind(config.listen).await?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        // STUN on UDP at the same port number as the listener.
        let stun_socket = stun::bind(config.stun, local_addr, config.listen.port() == 0)
            .await
            .map_err(|(addr, source)| Error::Bind { addr, source })?;
        let stun_addr = stun_socket
            .as_ref()
            .and_then(|socket| socket.local_addr().ok());

        let now = Instant::now();
        let app = Arc::new(App {
            store,
            clock,
            limiter: RateLimiter::new(config.rate_limit, config.rate_burst),
            unseen: NotFoundTracker::new(config.desired_not_found_rate, now),
            seen_before: NotFoundTracker::new(config.desired_not_found_rate, now),
            metrics: Metrics::new(),
            behind_proxy: config.http,
            max_body_bytes: config.max_body_bytes,
            read_timeout: config.read_timeout,
        });
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let listen = Listen {
            app: app.clone(),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            read_timeout: config.read_timeout,
        };
        tasks.spawn(listen.clone().accept_loop(
            listener,
            tls,
            Arc::new(Semaphore::new(config.max_connections)),
            false,
        ));
        if let Some(listener) = metrics_listener {
            tasks.spawn(listen.accept_loop(
                listener,
                None,
                Arc::new(Semaphore::new(METRICS_CONNECTIONS)),
                true,
            ));
        }
        if let Some(socket) = stun_socket {
            let limiter = RateLimiter::new(stun::RATE, stun::BURST);
            let allow = move |ip, now| limiter.check(ip, now).is_ok();
            tasks.spawn(stun::serve(socket, cancel.clone(), allow));
        }
        tasks.spawn(sweep_loop(
            app.clone(),
            config.sweep_interval,
            cancel.clone(),
        ));
        tracing::info!(
            addr = %local_addr,
            device = %identity.device_id(),
            store = %config.store,
            http = config.http,
            "discovery server started"
        );
        Ok(Self {
            local_addr,
            metrics_addr,
            stun_addr,
            device_id: identity.device_id(),
            http: config.http,
            app,
            cancel,
            tasks,
        })
    }

    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain-HTTP metrics listener's address, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The UDP address STUN Binding requests are answered at (the listen port number), if
    /// STUN is on.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// The server's device ID: the SHA-256 of its certificate, for clients' `?id=` pinning.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The URL devices put in `globalAnnounceServers`:
    /// `https://ADDR/?id=SERVER-ID` (`http://ADDR/` in reverse-proxy mode, where the proxy's
    /// certificate is the one clients see).
    pub fn url(&self) -> String {
        if self.http {
            format!("http://{}/", self.local_addr)
        } else {
            format!("https://{}/?id={}", self.local_addr, self.device_id)
        }
    }

    /// Runs the periodic sweep now: drops records not seen for 7 days and expired addresses
    /// (by the server's clock). Returns how many records went.
    pub async fn sweep(&self) -> Result<u64, Error> {
        Ok(self.app.sweep().await?)
    }

    /// Stops accepting, lets open connections finish their requests (for at most the read
    /// timeout), then flushes and closes the store.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.app.store.close().await?;
        tracing::info!(addr = %self.local_addr, "discovery server stopped");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl App {
    async fn sweep(&self) -> Result<u64, crate::store::StoreError> {
        self.limiter.prune(Instant::now());
        let dropped = self.store.sweep(self.clock.now()).await?;
        if dropped > 0 {
            tracing::info!(dropped, "dropped records not seen for 7 days");
        }
        Ok(dropped)
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

async fn sweep_loop(app: Arc<App>, every: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {
                if let Err(error) = app.sweep().await {
                    tracing::warn!(%error, "sweeping the store failed");
                }
            }
        }
    }
}

/// What every accept loop and connection shares.
#[derive(Clone, Debug)]
struct Listen {
    app: Arc<App>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    read_timeout: Duration,
}

impl Listen {
    async fn accept_loop(
        self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        permits: Arc<Semaphore>,
        metrics_only: bool,
    ) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%addr, "too many connections, closing");
                self.app.metrics.connection_rejected();
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            self.tasks
                .spawn(this.serve(tcp, addr, tls.clone(), metrics_only, permit));
        }
    }

    async fn serve(
        self,
        tcp: TcpStream,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
        metrics_only: bool,
        _permit: OwnedSemaphorePermit,
    ) {
        self.app.metrics.connection_opened();
        let activity = Arc::new(Activity::new());
        let tcp = Tracked {
            inner: tcp,
            activity: activity.clone(),
        };
        let mut peer = Peer {
            addr,
            device: None,
            metrics_only,
        };
        match tls {
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.read_timeout, acceptor.accept(tcp));
                let stream = tokio::select! {
                    () = self.cancel.cancelled() => None,
                    result = handshake => match result {
                        Ok(Ok(stream)) => Some(stream),
                        Ok(Err(error)) => {
                            tracing::debug!(%addr, %error, "TLS handshake failed");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            None
                        }
                    },
                };
                if let Some(stream) = stream {
                    peer.device = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(peer_device_id);
                    self.drive(stream, peer, activity).await;
                }
            }
            None => self.drive(tcp, peer, activity).await,
        }
        self.app.metrics.connection_closed();
    }

    /// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, idles out or the server
    /// stops.
    async fn drive<I>(&self, io: I, peer: Peer, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = {
            let app = self.app.clone();
            let activity = activity.clone();
            service_fn(move |request| {
                let app = app.clone();
                let busy = activity.begin();
                async move {
                    let reply = app.handle(peer, request).await;
                    drop(busy);
                    Ok::<_, Infallible>(reply)
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.read_timeout)
            .max_buf_size(HTTP1_BUFFER)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(HTTP2_STREAMS);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut ticks =
            tokio::time::interval((self.read_timeout / 10).max(Duration::from_millis(50)));
        let mut closing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(addr = %peer.addr, %error, "connection ended with an error");
                    }
                    break;
                }
                () = self.cancel.cancelled(), if closing_since.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
                _ = ticks.tick() => {
                    if activity.idle_for() >= self.read_timeout {
                        tracing::debug!(addr = %peer.addr, "idle connection closed");
                        break;
                    }
                    if closing_since.is_some_and(|since| since.elapsed() >= self.read_timeout) {
                        break;
                    }
                }
            }
        }
    }
}

/// When a connection last moved bytes and whether a request is being handled.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read or write.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
    }

    /// How long nothing happened; zero while a request is being handled (the handler bounds
    /// its own body read).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in flight; dropping it marks the end (and counts as activity).
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes every read and write in an [`Activity`].
#[derive(Debug)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
