//! The harness: a relay started in-process, and a minimal relay client (protocol mode over
//! TLS with a fresh device certificate, session mode over plain TCP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{HEADER_LEN, Message, Response, SessionInvitation, SessionKey};
use peerfold_protocol::tls::{relay_client_config, server_name};
use peerfold_relay::{Config, Server};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a test waits for something that should happen at once.
pub(crate) const PROMPTLY: Duration = Duration::from_secs(5);

/// A relay running in this process, with its data directory.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) server: Server,
    _dir: TempDir,
}

impl Relay {
    /// Starts a relay with `Config::testing`, adjusted by `configure`.
    pub(crate) async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::testing(dir.path());
        configure(&mut config);
        let server = Server::bind(config).await.unwrap();
        Self { server, _dir: dir }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// A protocol-mode connection as a new device.
    pub(crate) async fn connect(&self) -> Client {
        let identity = Identity::generate().unwrap();
        Client::connect(self.addr(), self.server.device_id(), &identity).await
    }

    /// A new device, joined (permanent mode) without a token.
    pub(crate) async fn join(&self) -> Client {
        let mut client = self.connect().await;
        let reply = client
            .request(Message::JoinRelayRequest {
                token: String::new(),
            })
            .await;
        assert_eq!(reply, Response::new(Response::SUCCESS));
        client
    }

    /// A `ConnectRequest` from a new connection of `from` for `to`.
    pub(crate) async fn connect_request(&self, from: &Identity, to: DeviceId) -> Message {
        let mut client = Client::connect(self.addr(), self.server.device_id(), from).await;
        client.send(&Message::ConnectRequest { id: to }).await;
        let reply = client.recv().await;
        client.expect_closed().await;
        reply
    }

    /// `/status`, parsed.
    pub(crate) async fn status(&self) -> serde_json::Value {
        let addr = self.server.status_addr().expect("a status listener");
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /status HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(PROMPTLY, tcp.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(reply).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }
}

/// One protocol-mode (TLS) connection.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: DeviceId,
    pub(crate) stream: TlsStream<TcpStream>,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr, relay: DeviceId, identity: &Identity) -> Self {
        let config = relay_client_config(identity, Some(relay)).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream = tokio::time::timeout(
            PROMPTLY,
            TlsConnector::from(Arc::new(config)).connect(server_name(), tcp),
        )
        .await
        .unwrap()
        .unwrap();
        Self {
            id: identity.device_id(),
            stream,
        }
    }

    pub(crate) async fn send(&mut self, message: &Message) {
        self.send_raw(&message.encode()).await;
    }

    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next message; panics if none comes promptly.
    pub(crate) async fn recv(&mut self) -> Message {
        tokio::time::timeout(PROMPTLY, read_message(&mut self.stream))
            .await
            .expect("a message in time")
            .expect("a message, not the end of the connection")
    }

    /// Sends a request and returns the `Response` to it.
    pub(crate) async fn request(&mut self, message: Message) -> Response {
        self.send(&message).await;
        match self.recv().await {
            Message::Response(response) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// The next invitation, skipping pings.
    pub(crate) async fn invitation(&mut self) -> SessionInvitation {
        loop {
            match self.recv().await {
                Message::SessionInvitation(invitation) => return invitation,
                Message::Ping => {}
                other => panic!("expected an invitation, got {other:?}"),
            }
        }
    }

    /// Answers the relay's pings from a task until the connection ends, which the handle
    /// then reports as finished.
    pub(crate) fn answer_pings(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok(message) = read_message(&mut self.stream).await {
                if message == Message::Ping {
                    self.send(&Message::Pong).await;
                }
            }
        })
    }

    /// Waits for the relay to close the connection (skipping pings).
    pub(crate) async fn expect_closed(&mut self) {
        let closed = async {
            loop {
                match read_message(&mut self.stream).await {
                    Ok(Message::Ping) => {}
                    Ok(other) => panic!("expected the end, got {other:?}"),
                    Err(_) => return,
                }
            }
        };
        tokio::time::timeout(PROMPTLY, closed)
            .await
            .expect("the relay closes the connection");
    }
}

/// Reads one message: the header, then its body.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<Message> {
    let mut header = [0; HEADER_LEN];
    io.read_exact(&mut header).await?;
    let (_, len) = peerfold_protocol::relay::parse_header(&header)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
    let mut body = vec![0; len];
    io.read_exact(&mut body).await?;
    Message::decode(&header, &body)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// Session mode: a plain TCP connection that sends `JoinSessionRequest` and reads the reply.
pub(crate) async fn join_session(addr: SocketAddr, key: SessionKey) -> (Response, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&Message::JoinSessionRequest { key }.encode())
        .await
        .unwrap();
    let reply = tokio::time::timeout(PROMPTLY, read_message(&mut tcp))
        .await
        .unwrap()
        .unwrap();
    let Message::Response(response) = reply else {
        panic!("expected a response, got {reply:?}");
    };
    (response, tcp)
}

/// Both sides of a fresh session between a joined device and a requester: (the joined
/// device's permanent connection, the joined device's session socket, the requester's
/// session socket).
pub(crate) async fn session(relay: &Relay) -> (Client, TcpStream, TcpStream) {
    let mut server = relay.join().await;
    let requester = Identity::generate().unwrap();
    let Message::SessionInvitation(client_side) =
        relay.connect_request(&requester, server.id).await
    else {
        panic!("no invitation");
    };
    let server_side = server.invitation().await;
    let (reply, a) = join_session(relay.addr(), server_side.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    let (reply, b) = join_session(relay.addr(), client_side.key).await;
    assert_eq!(reply.code, Response::SUCCESS);
    (server, a, b)
}

/// Writes `data` on one socket and checks it arrives intact on the other.
pub(crate) async fn check_flow<W, R>(from: &mut W, to: &mut R, data: &[u8])
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let write = async {
        from.write_all(data).await.unwrap();
        from.flush().await.unwrap();
    };
    let read = async {
        let mut received = vec![0; data.len()];
        to.read_exact(&mut received).await.unwrap();
        received
    };
    let ((), received) = tokio::time::timeout(PROMPTLY, async { tokio::join!(write, read) })
        .await
        .expect("the bytes arrive in time");
    assert!(received == data, "the bytes arrived changed");
}

/// Waits until `socket` is closed by the far end (EOF or reset).
pub(crate) async fn expect_eof(socket: &mut TcpStream, within: Duration) {
    let mut buf = [0; 1024];
    let eof = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, eof)
        .await
        .expect("the relay closes the socket");
}

/// `len` bytes of a pattern that makes shifted or reordered data visible.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}
