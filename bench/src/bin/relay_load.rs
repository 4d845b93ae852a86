//! Load generator for Syncthing relay protocol v1 servers (`peerfold-relay`, `strelaysrv`).
//!
//! tokio + tokio-rustls with the relay client configuration of `peerfold_protocol::tls`
//! (ALPN `bep-relay`, our certificate presented, the relay's checked against the URL's
//! `?id=`) and the wire codec of `peerfold_protocol::relay`. Every device is its own freshly
//! generated identity (Ed25519 certificate). Prints one JSON line on stdout per measurement.
//!
//! - `idle`: N clients, each on its own TLS connection, send `JoinRelayRequest`, answer the
//!   relay's pings and hold their slot for SECS seconds once all have joined.
//! - `sessions`: M devices join permanently, M requesters each send a `ConnectRequest` for
//!   one of them; both sides of every session join it in session mode (plain TCP,
//!   `JoinSessionRequest`) and pump bytes both ways, at a set rate or as fast as they can,
//!   for SECS seconds.
//!
//! With `--watch-pid` (the relay's process), the report carries the relay's VmRSS / VmHWM
//! (`/proc/PID/status`) while the load is on, and for `sessions` its CPU seconds
//! (utime + stime from `/proc/PID/stat`) over the measured interval.
//!
//! Client sockets are spread over several loopback source IPs (127.0.0.2 and up), so that a
//! relay's per-IP limits see many clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{
    HEADER_LEN, MAX_MESSAGE_LEN, Message, RelayUrl, Response, SessionInvitation, parse_header,
};
use peerfold_protocol::tls::relay_client_config;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Debug, Parser)]
#[command(about = "load generator for Syncthing relay protocol v1 servers")]
struct Cli {
    /// Client runtime worker threads [default: the number of cores].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N permanent clients join and hold their slots, answering pings.
    Idle {
        #[command(flatten)]
        target: Target,
        /// Clients (each its own identity and TLS connection).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Seconds to hold the slots once all have joined.
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    /// M sessions between M joined devices and M requesters, bytes pumped both ways.
    Sessions {
        #[command(flatten)]
        target: Target,
        /// Sessions.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Seconds to measure once every session is up.
        #[arg(long, default_value_t = 15)]
        secs: u64,
        /// Bytes per second each side of a session sends; 0 = as fast as it can.
        #[arg(long, default_value_t = 1_000_000)]
        rate: u64,
        /// Bytes per write.
        #[arg(long, default_value_t = 16_384)]
        chunk: usize,
    },
}

#[derive(Clone, Debug, Args)]
struct Target {
    /// The relay: relay://IP:PORT/?id=DEVICE-ID (the certificate is checked against the ID).
    #[arg(long)]
    relay: String,
    /// Name for the JSON output.
    #[arg(long, default_value = "relay")]
    label: String,
    /// Source IPs to spread client sockets over: 127.0.0.2 .. 127.0.0.(1+SOURCES).
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// TLS handshakes at once while clients join.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The relay's process ID: its memory (and CPU, for `sessions`) go into the report.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// Seconds to wait once the load is on before memory is read.
    #[arg(long, default_value_t = 3)]
    settle: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build()?;
    let line = runtime.block_on(async {
        match cli.command {
            Command::Idle {
                target,
                clients,
                hold,
            } => idle(target, clients, Duration::from_secs(hold)).await,
            Command::Sessions {
                target,
                pairs,
                secs,
                rate,
                chunk,
            } => sessions(target, pairs, Duration::from_secs(secs), rate, chunk).await,
        }
    })?;
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The relay and its process.

/// Where the relay is and how its certificate is checked.
#[derive(Debug)]
struct Relay {
    addr: SocketAddr,
    id: Option<DeviceId>,
    token: String,
}

impl Relay {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed: RelayUrl = url.parse()?;
        let ip: IpAddr = parsed
            .host
            .parse()
            .with_context(|| format!("{url}: the host must be an IP address"))?;
        Ok(Self {
            addr: SocketAddr::new(ip, parsed.port),
            id: parsed.id,
            token: parsed.token.unwrap_or_default(),
        })
    }
}

/// VmRSS or VmHWM of `pid`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

// ---------------------------------------------------------------------------------------------
// Connections and messages.

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

async fn connect(server: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A device: its ID and a TLS configuration presenting its certificate.
#[derive(Clone, Debug)]
struct Device {
    id: DeviceId,
    tls: Arc<ClientConfig>,
}

/// `count` fresh identities, made on blocking threads (two at once).
async fn devices(count: usize, relay: &Relay) -> anyhow::Result<Vec<Device>> {
    let relay_id = relay.id;
    let halves = [count / 2, count - count / 2];
    let mut tasks = Vec::new();
    for n in halves {
        tasks.push(tokio::task::spawn_blocking(
            move || -> anyhow::Result<Vec<Device>> {
                (0..n)
                    .map(|_| {
                        let identity = Identity::generate()?;
                        let config = relay_client_config(&identity, relay_id)?;
                        Ok(Device {
                            id: identity.device_id(),
                            tls: Arc::new(config),
                        })
                    })
                    .collect()
            },
        ));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

async fn write_message<W: AsyncWrite + Unpin>(
    out: &mut W,
    message: &Message,
) -> anyhow::Result<()> {
    out.write_all(&message.encode()).await?;
    out.flush().await?;
    Ok(())
}

async fn read_message<R: AsyncRead + Unpin>(input: &mut R) -> anyhow::Result<Message> {
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header).await?;
    let (_, len) = parse_header(&header)?;
    let mut body = [0u8; MAX_MESSAGE_LEN];
    input.read_exact(&mut body[..len]).await?;
    Ok(Message::decode(&header, &body[..len])?)
}

/// A TLS connection to the relay in protocol mode.
async fn open(
    device: &Device,
    relay: &Relay,
    source: IpAddr,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = connect(relay.addr, source)
        .await
        .context("connecting to the relay")?;
    let name = ServerName::IpAddress(relay.addr.ip().into());
    TlsConnector::from(device.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS handshake")
}

/// Takes a permanent slot.
async fn join_relay(
    device: &Device,
    relay: &Relay,
    source: IpAddr,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let mut stream = open(device, relay, source).await?;
    let token = relay.token.clone();
    write_message(&mut stream, &Message::JoinRelayRequest { token }).await?;
    match read_message(&mut stream).await? {
        Message::Response(Response { code: 0, .. }) => Ok(stream),
        Message::Response(r) => bail!("join refused: {} {}", r.code, r.message),
        Message::RelayFull => bail!("relay full"),
        other => bail!("unexpected answer to a join: {other:?}"),
    }
}

/// What a permanent client's slot saw while it held it.
#[derive(Debug, Default)]
struct Slots {
    joined: AtomicUsize,
    failed: AtomicUsize,
    /// Slots the relay closed (or that failed) while held.
    dropped: AtomicUsize,
    pings: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Slots {
    fn fail(&self, error: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap();
        if first.is_none() {
            *first = Some(format!("{error:#}"));
        }
    }

    fn first_failure(&self) -> Option<String> {
        self.first_failure.lock().unwrap().clone()
    }
}

/// Resolves once `stop` is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Holds a joined slot until `stop`: answers pings, hands invitations to `invited`.
async fn hold(
    mut stream: TlsStream<TcpStream>,
    slots: &Slots,
    mut stop: watch::Receiver<bool>,
    invited: Option<tokio::sync::mpsc::UnboundedSender<SessionInvitation>>,
) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            message = read_message(&mut stream) => match message {
                Ok(Message::Ping) => {
                    slots.pings.fetch_add(1, Ordering::Relaxed);
                    if write_message(&mut stream, &Message::Pong).await.is_err() {
                        break;
                    }
                }
                Ok(Message::SessionInvitation(invitation)) => {
                    if let Some(invited) = &invited {
                        let _ = invited.send(invitation);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    slots.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Waits until `done()` or `limit`, polling.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

// ---------------------------------------------------------------------------------------------
// idle

async fn idle(
    target: Target,
    clients: usize,
    hold_for: Duration,
) -> anyhow::Result<serde_json::Value> {
    let relay = Arc::new(Relay::parse(&target.relay)?);
    let made = Instant::now();
    let devices = devices(clients, &relay).await?;
    let identity_seconds = made.elapsed().as_secs_f64();
    let rss_before = target.watch_pid.and_then(|pid| status_kib(pid, "VmRSS"));
    let sources = Arc::new(Sources::new(target.sources));
    let slots = Arc::new(Slots::default());
    let handshakes = Arc::new(Semaphore::new(target.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for device in devices {
        let (relay, sources, slots, handshakes, stop) = (
            relay.clone(),
            sources.clone(),
            slots.clone(),
            handshakes.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("never closed");
            let joined = join_relay(&device, &relay, sources.pick()).await;
            drop(permit);
            match joined {
                Ok(stream) => {
                    slots.joined.fetch_add(1, Ordering::Relaxed);
                    hold(stream, &slots, stop, None).await;
                }
                Err(error) => slots.fail(&error),
            }
        }));
    }
    wait_until(Duration::from_secs(300), || {
        slots.joined.load(Ordering::Relaxed) + slots.failed.load(Ordering::Relaxed) >= clients
    })
    .await;
    let join_seconds = started.elapsed().as_secs_f64();
    let joined = slots.joined.load(Ordering::Relaxed);
    let held_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(target.settle).min(hold_for)).await;
    let rss_joined = target.watch_pid.and_then(|pid| status_kib(pid, "VmRSS"));
    tokio::time::sleep(hold_for.saturating_sub(held_from.elapsed())).await;
    let rss_end = target.watch_pid.and_then(|pid| status_kib(pid, "VmRSS"));
    let hwm = target.watch_pid.and_then(|pid| status_kib(pid, "VmHWM"));
    let dropped = slots.dropped.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let per_client = match (rss_before, rss_joined) {
        (Some(before), Some(joined_rss)) if joined > 0 => Some(round(
            (joined_rss as f64 - before as f64) / joined as f64,
            2,
        )),
        _ => None,
    };
    Ok(json!({
        "relay": target.label,
        "test": "idle",
        "clients": clients,
        "joined": joined,
        "failures": slots.failed.load(Ordering::Relaxed),
        "first_failure": slots.first_failure(),
        "identity_seconds": round(identity_seconds, 2),
        "join_seconds": round(join_seconds, 2),
        "joins_per_s": round(joined as f64 / join_seconds, 0),
        "hold_seconds": round(held_from.elapsed().as_secs_f64(), 1),
        "dropped_while_held": dropped,
        "pings": slots.pings.load(Ordering::Relaxed),
        "rss_before_kib": rss_before,
        "rss_kib": rss_joined,
        "rss_end_kib": rss_end,
        "hwm_kib": hwm,
        "kib_per_client": per_client,
    }))
}

// ---------------------------------------------------------------------------------------------
// sessions

/// Counters shared by all session sides.
#[derive(Debug, Default)]
struct Flow {
    /// Sides that joined their session (two per session).
    sides: AtomicUsize,
    /// Bytes read from sessions, both directions.
    received: AtomicU64,
    failed: AtomicUsize,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Flow {
    fn fail(&self, error: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap();
        if first.is_none() {
            *first = Some(format!("{error:#}"));
        }
    }
}

/// Joins the session of `invitation` (session mode: plaintext TCP) and pumps bytes both ways
/// until `stop`.
async fn run_side(
    invitation: SessionInvitation,
    relay: Arc<Relay>,
    source: IpAddr,
    flow: Arc<Flow>,
    rate: u64,
    chunk: usize,
    stop: watch::Receiver<bool>,
) {
    if let Err(error) = side(invitation, &relay, source, &flow, rate, chunk, stop).await {
        flow.fail(&error);
    }
}

async fn side(
    invitation: SessionInvitation,
    relay: &Relay,
    source: IpAddr,
    flow: &Flow,
    rate: u64,
    chunk: usize,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ip = match invitation.address {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => relay.addr.ip(),
    };
    let mut stream = connect(SocketAddr::new(ip, invitation.port), source)
        .await
        .context("connecting to the session port")?;
    write_message(
        &mut stream,
        &Message::JoinSessionRequest {
            key: invitation.key,
        },
    )
    .await?;
    match read_message(&mut stream).await? {
        Message::Response(Response { code: 0, .. }) => {}
        Message::Response(r) => bail!("session join refused: {} {}", r.code, r.message),
        other => bail!("unexpected answer to a session join: {other:?}"),
    }
    flow.sides.fetch_add(1, Ordering::Relaxed);
    let (mut reader, mut writer) = stream.into_split();
    let mut stop_writer = stop.clone();
    let send = async move {
        let block = vec![0x5a_u8; chunk];
        let started = tokio::time::Instant::now();
        let mut sent: u64 = 0;
        loop {
            if rate > 0 {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::select! {
                    () = stopped(&mut stop_writer) => break,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            tokio::select! {
                () = stopped(&mut stop_writer) => break,
                written = writer.write_all(&block) => {
                    if written.is_err() {
                        break;
                    }
                    sent += block.len() as u64;
                }
            }
        }
        let _ = writer.shutdown().await;
    };
    let mut stop_reader = stop;
    let receive = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                () = stopped(&mut stop_reader) => break,
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        flow.received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                },
            }
        }
    };
    tokio::join!(send, receive);
    Ok(())
}

/// Asks the relay for a session with `wanted`; the invitation addressed to the requester.
async fn request_session(
    device: &Device,
    relay: &Relay,
    source: IpAddr,
    wanted: DeviceId,
) -> anyhow::Result<SessionInvitation> {
    let mut stream = open(device, relay, source).await?;
    write_message(&mut stream, &Message::ConnectRequest { id: wanted }).await?;
    match read_message(&mut stream).await? {
        Message::SessionInvitation(invitation) => Ok(invitation),
        Message::Response(r) => bail!("connect refused: {} {}", r.code, r.message),
        other => bail!("unexpected answer to a connect request: {other:?}"),
    }
}

async fn sessions(
    target: Target,
    pairs: usize,
    measure: Duration,
    rate: u64,
    chunk: usize,
) -> anyhow::Result<serde_json::Value> {
    let relay = Arc::new(Relay::parse(&target.relay)?);
    let mut devices = devices(2 * pairs, &relay).await?;
    let requesters = devices.split_off(pairs);
    let targets = devices;
    let sources = Arc::new(Sources::new(target.sources));
    let slots = Arc::new(Slots::default());
    let flow = Arc::new(Flow::default());
    let handshakes = Arc::new(Semaphore::new(target.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let started = Instant::now();

    // The joined side: holds its slot and joins every session it is invited to.
    for device in &targets {
        let (device, relay, sources, slots, flow, handshakes, stop) = (
            device.clone(),
            relay.clone(),
            sources.clone(),
            slots.clone(),
            flow.clone(),
            handshakes.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("never closed");
            let joined = join_relay(&device, &relay, sources.pick()).await;
            drop(permit);
            let stream = match joined {
                Ok(stream) => stream,
                Err(error) => return slots.fail(&error),
            };
            slots.joined.fetch_add(1, Ordering::Relaxed);
            let (invited, mut invitations) = tokio::sync::mpsc::unbounded_channel();
            let sessions = {
                let stop = stop.clone();
                async move {
                    let mut sides = Vec::new();
                    while let Some(invitation) = invitations.recv().await {
                        sides.push(tokio::spawn(run_side(
                            invitation,
                            relay.clone(),
                            sources.pick(),
                            flow.clone(),
                            rate,
                            chunk,
                            stop.clone(),
                        )));
                    }
                    for side in sides {
                        let _ = side.await;
                    }
                }
            };
            tokio::join!(hold(stream, &slots, stop, Some(invited)), sessions);
        }));
    }
    let all_joined = wait_until(Duration::from_secs(120), || {
        slots.joined.load(Ordering::Relaxed) + slots.failed.load(Ordering::Relaxed) >= pairs
    })
    .await;
    if !all_joined || slots.failed.load(Ordering::Relaxed) > 0 {
        bail!(
            "only {} of {pairs} devices joined the relay: {:?}",
            slots.joined.load(Ordering::Relaxed),
            slots.first_failure()
        );
    }

    // The requesting side: one connect request each, then joins its session.
    let connect_failures = Arc::new(Slots::default());
    for (requester, wanted) in requesters.into_iter().zip(targets.iter().map(|d| d.id)) {
        let (relay, sources, flow, handshakes, stop, failures) = (
            relay.clone(),
            sources.clone(),
            flow.clone(),
            handshakes.clone(),
            stop_rx.clone(),
            connect_failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("never closed");
            let mut invitation = Err(anyhow::anyhow!("not asked"));
            for attempt in 0..5 {
                invitation = request_session(&requester, &relay, sources.pick(), wanted).await;
                if invitation.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            drop(permit);
            match invitation {
                Ok(invitation) => {
                    run_side(invitation, relay, sources.pick(), flow, rate, chunk, stop).await;
                }
                Err(error) => failures.fail(&error),
            }
        }));
    }
    wait_until(Duration::from_secs(120), || {
        flow.sides.load(Ordering::Relaxed)
            + flow.failed.load(Ordering::Relaxed)
            + connect_failures.failed.load(Ordering::Relaxed)
            >= 2 * pairs
    })
    .await;
    let setup_seconds = started.elapsed().as_secs_f64();
    let sides = flow.sides.load(Ordering::Relaxed);

    // Let the flow settle, then measure.
    tokio::time::sleep(Duration::from_secs(target.settle)).await;
    let pid = target.watch_pid;
    let cpu_before = pid.and_then(cpu_seconds);
    let bytes_before = flow.received.load(Ordering::Relaxed);
    let measured_from = Instant::now();
    let mut rss_samples = Vec::new();
    while measured_from.elapsed() < measure {
        tokio::time::sleep(Duration::from_secs(1).min(measure)).await;
        if let Some(rss) = pid.and_then(|pid| status_kib(pid, "VmRSS")) {
            rss_samples.push(rss);
        }
    }
    let seconds = measured_from.elapsed().as_secs_f64();
    let bytes = flow.received.load(Ordering::Relaxed) - bytes_before;
    let cpu = match (cpu_before, pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) => Some(round(after - before, 2)),
        _ => None,
    };
    let hwm = pid.and_then(|pid| status_kib(pid, "VmHWM"));
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    rss_samples.sort_unstable();
    let rss_median = rss_samples.get(rss_samples.len() / 2).copied();
    let rss_max = rss_samples.last().copied();
    let first_failure = flow
        .first_failure
        .lock()
        .unwrap()
        .clone()
        .or_else(|| connect_failures.first_failure());
    Ok(json!({
        "relay": target.label,
        "test": "sessions",
        "pairs": pairs,
        "rate_per_side": rate,
        "chunk": chunk,
        "sides_joined": sides,
        "failures": flow.failed.load(Ordering::Relaxed) + connect_failures.failed.load(Ordering::Relaxed),
        "first_failure": first_failure,
        "setup_seconds": round(setup_seconds, 2),
        "seconds": round(seconds, 2),
        "bytes": bytes,
        "mb_s": round(bytes as f64 / seconds / 1e6, 1),
        "mb_s_per_session": round(bytes as f64 / seconds / 1e6 / pairs.max(1) as f64, 3),
        "dropped_slots": slots.dropped.load(Ordering::Relaxed),
        "relay_cpu_s": cpu,
        "relay_cpu_s_per_gb": cpu.map(|cpu| round(cpu / (bytes as f64 / 1e9), 2)),
        "rss_kib": rss_median,
        "rss_max_kib": rss_max,
        "hwm_kib": hwm,
    }))
}
