//! Load generator for Syncthing Global Discovery v3 servers (`peerfold-discovery`, `stdiscosrv`).
//!
//! An HTTP/1.1 client of its own: tokio + tokio-rustls + hyper 1 (`client::conn::http1`), with
//! the TLS configurations from `peerfold_protocol::tls` (ALPN `http/1.1`, no session resumption,
//! any server certificate accepted). Every measurement prints one JSON line on stdout.
//!
//! - `keys`: makes a pool of device identities (Ed25519 certificates, in parallel) and caches
//!   it in a file, so both servers get the same devices.
//! - `populate`: announces the first N devices of the pool, each on its own TLS connection
//!   with its own certificate (the device ID is the certificate's SHA-256).
//! - `lookups`: C keep-alive connections each sending `GET /v2/?device=ID` for random known
//!   devices for D seconds.
//! - `announces`: C tasks each opening a new TLS connection per announce (handshake with a
//!   client certificate, `POST`, read the 204), for D seconds.
//!
//! Client sockets are spread over several loopback source IPs (127.0.0.2 and up) so that
//! tens of thousands of short connections do not run out of ephemeral ports.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::header::{CONNECTION, CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use peerfold_protocol::DeviceId;
use peerfold_protocol::discovery::Announcement;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{https_anonymous_client_config, https_client_config};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;
use tokio_rustls::TlsConnector;

const POOL_MAGIC: &[u8; 8] = b"PFDPOOL1";

#[derive(Debug, Parser)]
#[command(about = "load generator for Global Discovery v3 servers")]
struct Cli {
    /// Client runtime worker threads [default: the number of cores].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make (or reuse, if it already holds enough) a pool of COUNT device identities.
    Keys {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        count: usize,
    },
    /// Announce the first COUNT devices of the pool, one new TLS connection each.
    Populate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        count: usize,
    },
    /// Lookups of random known devices on keep-alive connections.
    Lookups {
        #[command(flatten)]
        target: Target,
        /// Look up among the first COUNT devices of the pool (the populated ones).
        #[arg(long)]
        count: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
    /// Announces, each on a new TLS connection with a client certificate.
    Announces {
        #[command(flatten)]
        target: Target,
        /// Devices (the first of the pool, already stored: these are re-announces) whose
        /// certificates take turns.
        #[arg(long, default_value_t = 1000)]
        identities: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 20)]
        duration: u64,
    },
}

#[derive(Clone, Debug, Args)]
struct Target {
    /// The server's address (HTTPS).
    #[arg(long)]
    server: SocketAddr,
    /// Name for the JSON output.
    #[arg(long, default_value = "server")]
    label: String,
    /// The identity pool made by `keys`.
    #[arg(long)]
    pool: PathBuf,
    /// Connections (tasks) at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Source IPs to spread client sockets over: 127.0.0.2 .. 127.0.0.(1+SOURCES).
    #[arg(long, default_value_t = 32)]
    sources: u8,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Keys { out, count } = &cli.command {
        return make_pool(out, *count);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build()?;
    let line = runtime.block_on(async {
        match cli.command {
            Command::Keys { .. } => unreachable!("handled above"),
            Command::Populate { target, count } => populate(target, count).await,
            Command::Lookups {
                target,
                count,
                duration,
            } => lookups(target, count, Duration::from_secs(duration)).await,
            Command::Announces {
                target,
                identities,
                duration,
            } => announces(target, identities, Duration::from_secs(duration)).await,
        }
    })?;
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The identity pool: "PFDPOOL1", then per device u16 LE certificate length, certificate DER,
// u16 LE key length, PKCS#8 key DER.

#[derive(Debug)]
struct Pool {
    data: Vec<u8>,
    /// Offset of each certificate, its length, and the key's length (the key follows).
    entries: Vec<(u32, u16, u16)>,
}

impl Pool {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if data.len() < POOL_MAGIC.len() || &data[..POOL_MAGIC.len()] != POOL_MAGIC {
            bail!("{} is not an identity pool", path.display());
        }
        let mut entries = Vec::new();
        let mut at = POOL_MAGIC.len();
        let u16_at = |at: usize| -> anyhow::Result<u16> {
            let raw = data.get(at..at + 2).context("truncated pool")?;
            Ok(u16::from_le_bytes([raw[0], raw[1]]))
        };
        while at < data.len() {
            let cert_len = u16_at(at)?;
            let cert_at = at + 2;
            let key_len = u16_at(cert_at + usize::from(cert_len))?;
            let end = cert_at + usize::from(cert_len) + 2 + usize::from(key_len);
            if end > data.len() {
                bail!("truncated pool");
            }
            entries.push((u32::try_from(cert_at)?, cert_len, key_len));
            at = end;
        }
        Ok(Self { data, entries })
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn cert(&self, index: usize) -> &[u8] {
        let (at, len, _) = self.entries[index];
        &self.data[at as usize..at as usize + usize::from(len)]
    }

    fn key(&self, index: usize) -> &[u8] {
        let (at, cert_len, key_len) = self.entries[index];
        let start = at as usize + usize::from(cert_len) + 2;
        &self.data[start..start + usize::from(key_len)]
    }

    fn device_id(&self, index: usize) -> DeviceId {
        DeviceId::from_certificate_der(self.cert(index))
    }

    fn identity(&self, index: usize) -> anyhow::Result<Identity> {
        Ok(Identity::from_der(self.cert(index), self.key(index))?)
    }

    /// The pool, checked to hold at least `count` devices.
    fn load_at_least(path: &Path, count: usize) -> anyhow::Result<Arc<Self>> {
        let pool = Self::load(path)?;
        if pool.len() < count {
            bail!(
                "{} holds {} identities, {count} needed",
                path.display(),
                pool.len()
            );
        }
        Ok(Arc::new(pool))
    }
}

fn make_pool(out: &Path, count: usize) -> anyhow::Result<()> {
    if let Ok(pool) = Pool::load(out)
        && pool.len() >= count
    {
        eprintln!("{}: {} identities already", out.display(), pool.len());
        return Ok(());
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let parts: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = count / threads + usize::from(t < count % threads);
                let done = &done;
                scope.spawn(move || -> anyhow::Result<Vec<u8>> {
                    let mut buf = Vec::with_capacity(share * 420);
                    for i in 0..share {
                        let identity = Identity::generate()?;
                        let cert = identity.certificate_der();
                        let key = identity.private_key_der();
                        let key = key.secret_der();
                        buf.extend_from_slice(&u16::try_from(cert.len())?.to_le_bytes());
                        buf.extend_from_slice(cert);
                        buf.extend_from_slice(&u16::try_from(key.len())?.to_le_bytes());
                        buf.extend_from_slice(key);
                        if i % 10_000 == 9_999 {
                            let all = done.fetch_add(10_000, Ordering::Relaxed) + 10_000;
                            if all % 100_000 < 10_000 {
                                eprintln!("keys: {all} of {count}");
                            }
                        }
                    }
                    Ok(buf)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("key threads do not panic"))
            .collect::<anyhow::Result<_>>()
    })?;
    let temporary = out.with_extension("tmp");
    let mut file = BufWriter::new(fs::File::create(&temporary)?);
    file.write_all(POOL_MAGIC)?;
    for part in &parts {
        file.write_all(part)?;
    }
    file.into_inner()?.sync_all()?;
    fs::rename(&temporary, out)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"test": "keys", "count": count, "threads": threads, "seconds": round(seconds, 2),
               "rate": round(count as f64 / seconds, 0)})
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// Where client sockets come from, round robin.
#[derive(Debug)]
struct Sources {
    ips: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Sources {
    fn new(count: u8) -> Self {
        let ips = (0..count.max(1))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i.min(250))))
            .collect();
        Self {
            ips,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> IpAddr {
        self.ips[self.next.fetch_add(1, Ordering::Relaxed) % self.ips.len()]
    }
}

fn tls_connector(mut config: ClientConfig) -> TlsConnector {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every announce is a full handshake, as a Syncthing device's is.
    config.resumption = Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

async fn connect(server: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A new TCP + TLS + HTTP/1.1 connection.
async fn open(
    tls: &TlsConnector,
    server: SocketAddr,
    source: IpAddr,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = connect(server, source).await?;
    let stream = tls
        .connect(ServerName::IpAddress(server.ip().into()), tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `request` and reads the whole reply.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let reply = sender.send_request(request).await?;
    let status = reply.status();
    let body = reply.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// What device `index` announces: two addresses derived from the index (routable-looking
/// documentation addresses; loopback ones would be dropped by the server's fix-up).
fn announcement(index: usize) -> Bytes {
    let host = 1 + index % 254;
    let port = 1024 + (index / 254) % 60_000;
    Bytes::from(
        Announcement {
            addresses: vec![
                format!("quic://192.0.2.{host}:{port}"),
                format!("tcp://192.0.2.{host}:{port}"),
            ],
        }
        .encode(),
    )
}

/// One announce of device `index` on a new connection.
async fn announce_once(
    tls: &TlsConnector,
    server: SocketAddr,
    source: IpAddr,
    host: &str,
    index: usize,
) -> anyhow::Result<StatusCode> {
    let mut sender = open(tls, server, source).await?;
    let request = Request::post("/v2/")
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .header(CONNECTION, "close")
        .body(Full::new(announcement(index)))?;
    Ok(exchange(&mut sender, request).await?.0)
}

fn announce_connector(pool: &Pool, index: usize) -> anyhow::Result<TlsConnector> {
    Ok(tls_connector(https_client_config(
        &pool.identity(index)?,
        None,
    )?))
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// What one task saw.
#[derive(Debug, Default)]
struct Tally {
    /// Microseconds per successful request.
    latencies: Vec<u32>,
    /// Replies by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests that failed below HTTP (connect, TLS, I/O).
    failures: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn reply(&mut self, status: StatusCode, good: bool, started: Instant) {
        *self.statuses.entry(status.as_u16()).or_default() += 1;
        if good {
            let micros = started.elapsed().as_micros();
            self.latencies
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }

    fn failure(&mut self, error: &anyhow::Error) {
        self.failures += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(format!("{error:#}"));
        }
    }

    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.failures += other.failures;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    fn report(mut self, test: &str, target: &Target, seconds: f64) -> serde_json::Value {
        self.latencies.sort_unstable();
        let percentile = |p: usize| -> f64 {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let at = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
            round(f64::from(self.latencies[at]) / 1000.0, 2)
        };
        let ok = self.latencies.len();
        json!({
            "server": target.label,
            "test": test,
            "concurrency": target.concurrency,
            "seconds": round(seconds, 2),
            "ok": ok,
            "rate": round(ok as f64 / seconds, 0),
            "p50_ms": percentile(50),
            "p99_ms": percentile(99),
            "statuses": self.statuses,
            "failures": self.failures,
            "first_failure": self.first_failure,
        })
    }
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

async fn join_all(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Tally>>>,
) -> anyhow::Result<Tally> {
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await??);
    }
    Ok(total)
}

async fn populate(target: Target, count: usize) -> anyhow::Result<serde_json::Value> {
    let pool = Pool::load_at_least(&target.pool, count)?;
    let sources = Arc::new(Sources::new(target.sources));
    let next = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let host: Arc<str> = target.server.to_string().into();
    let started = Instant::now();
    let progress = {
        let stored = stored.clone();
        let label = target.label.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(30));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let n = stored.load(Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "populate {label}: {n} of {count} in {seconds:.0} s ({:.0}/s)",
                    n as f64 / seconds
                );
            }
        })
    };
    let tasks = (0..target.concurrency)
        .map(|_| {
            let (pool, sources, next, stored, host) = (
                pool.clone(),
                sources.clone(),
                next.clone(),
                stored.clone(),
                host.clone(),
            );
            let server = target.server;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    let tls = announce_connector(&pool, index)?;
                    // A device whose announce fails retries a few times, so the store really
                    // ends up with `count` devices.
                    for attempt in 0..5 {
                        let started = Instant::now();
                        match announce_once(&tls, server, sources.pick(), &host, index).await {
                            Ok(status) => {
                                let good = status == StatusCode::NO_CONTENT;
                                tally.reply(status, good, started);
                                if good {
                                    stored.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                            Err(error) => tally.failure(&error),
                        }
                        tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    let tally = join_all(tasks).await?;
    progress.abort();
    let seconds = started.elapsed().as_secs_f64();
    let mut report = tally.report("populate", &target, seconds);
    report["devices"] = json!(count);
    report["stored"] = json!(stored.load(Ordering::Relaxed));
    Ok(report)
}

/// splitmix64: a fast generator for picking devices.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % bound as u64) as usize
    }
}

async fn lookups(
    target: Target,
    count: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let pool = Pool::load_at_least(&target.pool, count)?;
    let ids: Arc<Vec<DeviceId>> = Arc::new((0..count).map(|i| pool.device_id(i)).collect());
    drop(pool);
    let tls = tls_connector(https_anonymous_client_config(None)?);
    let sources = Sources::new(target.sources);
    let host: Arc<str> = target.server.to_string().into();
    // Everyone connects first; the clock starts when all are connected.
    let barrier = Arc::new(Barrier::new(target.concurrency + 1));
    let tasks = (0..target.concurrency)
        .map(|task| {
            let (ids, tls, host, barrier) =
                (ids.clone(), tls.clone(), host.clone(), barrier.clone());
            let (server, source) = (target.server, sources.pick());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut rng = Rng(task as u64);
                let mut sender = open(&tls, server, source).await;
                barrier.wait().await;
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    let live = match &mut sender {
                        Ok(live) => live,
                        Err(_) => {
                            sender = open(&tls, server, source).await;
                            match &mut sender {
                                Ok(live) => live,
                                Err(error) => {
                                    tally.failure(error);
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            }
                        }
                    };
                    let id = ids[rng.below(ids.len())];
                    let request = Request::get(format!("/v2/?device={id}"))
                        .header(HOST, &*host)
                        .body(Full::new(Bytes::new()))?;
                    let started = Instant::now();
                    match exchange(live, request).await {
                        Ok((status, body)) => {
                            let good = status == StatusCode::OK && body.starts_with(b"{");
                            tally.reply(status, good, started);
                        }
                        Err(error) => {
                            tally.failure(&error);
                            sender = Err(error);
                        }
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let tally = join_all(tasks).await?;
    let mut report = tally.report("lookups", &target, started.elapsed().as_secs_f64());
    report["devices"] = json!(count);
    Ok(report)
}

async fn announces(
    target: Target,
    identities: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let pool = Pool::load_at_least(&target.pool, identities)?;
    // Client configurations are made up front: the measured time is the server's handshake
    // and announce, not the client loading keys.
    let connectors: Arc<Vec<TlsConnector>> = Arc::new(
        (0..identities)
            .map(|i| announce_connector(&pool, i))
            .collect::<anyhow::Result<_>>()?,
    );
    drop(pool);
    let sources = Arc::new(Sources::new(target.sources));
    let host: Arc<str> = target.server.to_string().into();
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(target.concurrency + 1));
    let tasks = (0..target.concurrency)
        .map(|_| {
            let (connectors, sources, host, next, barrier) = (
                connectors.clone(),
                sources.clone(),
                host.clone(),
                next.clone(),
                barrier.clone(),
            );
            let server = target.server;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                barrier.wait().await;
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    let index = next.fetch_add(1, Ordering::Relaxed) % connectors.len();
                    let started = Instant::now();
                    match announce_once(&connectors[index], server, sources.pick(), &host, index)
                        .await
                    {
                        Ok(status) => {
                            tally.reply(status, status == StatusCode::NO_CONTENT, started)
                        }
                        Err(error) => tally.failure(&error),
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let tally = join_all(tasks).await?;
    let mut report = tally.report("announces", &target, started.elapsed().as_secs_f64());
    report["identities"] = json!(identities);
    Ok(report)
}
