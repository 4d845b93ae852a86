//! The harness: a server started in-process on 127.0.0.1:0 with a manual clock, a real
//! HTTPS (or, for `--http`, plain) client speaking HTTP/1.1 or HTTP/2, and a throwaway
//! `redis-server` child process for the Redis store.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use peerfold_discovery::{Config, ManualClock, Server, StoreConfig};
use peerfold_protocol::DeviceId;
use peerfold_protocol::discovery::{Announcement, LookupReply};
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls::{https_anonymous_client_config, https_client_config, server_name};
use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Which store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Redis,
    Sqlite,
}

/// One HTTP reply, read to the end.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub(crate) version: http::Version,
}

impl Reply {
    /// A numeric header, e.g. `Retry-After`.
    pub(crate) fn seconds(&self, name: &str) -> u64 {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub(crate) fn lookup(&self) -> LookupReply {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        LookupReply::decode(&self.body).unwrap()
    }
}

/// An HTTP client for one server: HTTPS with or without a client certificate, or plain HTTP.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    addr: SocketAddr,
    tls: Option<(Arc<ClientConfig>, Arc<ClientConfig>)>,
    /// Speak HTTP/2 (ALPN `h2`, or prior knowledge over plain HTTP).
    pub(crate) h2: bool,
}

impl Client {
    /// HTTPS presenting `identity`'s certificate (an announcing device), pinning `server`.
    pub(crate) fn device(addr: SocketAddr, identity: &Identity, server: DeviceId) -> Self {
        let config = https_client_config(identity, Some(server)).unwrap();
        Self::with_tls(addr, config)
    }

    /// HTTPS without a client certificate (a lookup, as Syncthing sends it), pinning
    /// `server`.
    pub(crate) fn anonymous(addr: SocketAddr, server: DeviceId) -> Self {
        let config = https_anonymous_client_config(Some(server)).unwrap();
        Self::with_tls(addr, config)
    }

    /// Plain HTTP, as a reverse proxy talks to `--http` servers.
    pub(crate) fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            h2: false,
        }
    }

    fn with_tls(addr: SocketAddr, config: ClientConfig) -> Self {
        let mut h1 = config.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut h2 = config;
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            addr,
            tls: Some((Arc::new(h1), Arc::new(h2))),
            h2: false,
        }
    }

    pub(crate) fn http2(mut self) -> Self {
        self.h2 = true;
        self
    }

    /// Sends one request on a new connection and reads the whole reply.
    pub(crate) async fn request(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        match &self.tls {
            Some((h1, h2)) => {
                let config = if self.h2 { h2 } else { h1 };
                let tls = TlsConnector::from(config.clone())
                    .connect(server_name(), tcp)
                    .await
                    .unwrap();
                self.send(tls, method, target, headers, body).await
            }
            None => self.send(tcp, method, target, headers, body).await,
        }
    }

    async fn send<I>(
        &self,
        io: I,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let uri = if self.h2 {
            format!("https://{}{target}", self.addr)
        } else {
            target.to_owned()
        };
        let mut request = Request::builder().method(method).uri(uri);
        if !self.h2 {
            request = request.header("host", self.addr.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let io = TokioIo::new(io);
        let response = if self.h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap()
        };
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
            version: parts.version,
        }
    }

    pub(crate) async fn announce(&self, addresses: &[&str]) -> Reply {
        self.announce_with(addresses, &[]).await
    }

    pub(crate) async fn announce_with(
        &self,
        addresses: &[&str],
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = Announcement {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        }
        .encode();
        self.request(Method::POST, "/v2/", headers, body).await
    }

    pub(crate) async fn lookup(&self, device: DeviceId) -> Reply {
        self.get(&format!("/v2/?device={device}")).await
    }

    pub(crate) async fn get(&self, target: &str) -> Reply {
        self.request(Method::GET, target, &[], Vec::new()).await
    }
}

/// A server on 127.0.0.1:0 with a manual clock, its data directory, and (for Redis) its
/// `redis-server`.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) server: Option<Server>,
    pub(crate) clock: ManualClock,
    pub(crate) config: Config,
    pub(crate) dir: TempDir,
    /// Kept alive as long as the server uses it.
    _redis: Option<Arc<RedisServer>>,
}

impl Harness {
    pub(crate) async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server whose config `tweak` adjusts first.
    pub(crate) async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let redis = match backend {
            Backend::Redis => Some(Arc::new(RedisServer::start())),
            Backend::Sqlite => None,
        };
        Self::start_on(redis, tweak).await
    }

    /// A server on an existing Redis (`None`: SQLite).
    pub(crate) async fn start_on(
        redis: Option<Arc<RedisServer>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::testing(dir.path());
        if let Some(redis) = &redis {
            config.store = StoreConfig::Redis(redis.url.clone());
        }
        tweak(&mut config);
        let clock = ManualClock::new(SystemTime::now());
        let server = Server::bind_with_clock(config.clone(), clock.clock())
            .await
            .unwrap();
        Self {
            server: Some(server),
            clock,
            config,
            dir,
            _redis: redis,
        }
    }

    pub(crate) fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server().local_addr()
    }

    pub(crate) fn device(&self, identity: &Identity) -> Client {
        Client::device(self.addr(), identity, self.server().device_id())
    }

    pub(crate) fn anonymous(&self) -> Client {
        Client::anonymous(self.addr(), self.server().device_id())
    }

    /// Stops the server (flushing its store) and starts it again on the same data directory
    /// and port-0 config, as after a restart.
    pub(crate) async fn restart(&mut self) {
        let old = self.server.take().unwrap();
        let id = old.device_id();
        old.shutdown().await.unwrap();
        let server = Server::bind_with_clock(self.config.clone(), self.clock.clock())
            .await
            .unwrap();
        assert_eq!(server.device_id(), id, "the identity survives a restart");
        self.server = Some(server);
    }

    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// A `redis-server` child process on a free loopback port, killed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) url: String,
    _dir: TempDir,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run redis-server ({error}): the Redis store tests need a real Redis; \
                     install it with `apt-get install redis-server`"
                )
            });
        let mut this = Self {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            _dir: dir,
        };
        this.wait_ready(port);
        this
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("redis-server exited at start ({status}); is port {port} taken?");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on {port} within 10 s");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
