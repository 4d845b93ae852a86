//! Speaking Syncthing's relay protocol v1 to a relay server: protocol mode over TLS (ALPN
//! `bep-relay`, our certificate, the relay's pinned when its URL has `?id=`) to hold a
//! permanent slot or to ask for a session with a device, and session mode in plaintext to
//! join a session the relay invited us to. `shared/specs/relay-v1.md` has the facts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use peerfold_protocol::DeviceId;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::relay::{self, Message, RelayUrl, SessionInvitation};
use peerfold_protocol::tls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Dialing a relay and its TLS handshake, and joining a session (the relay's own limit for
/// the latter is 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay has to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why talking to a relay failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayClientError {
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url}: TLS: {message}")]
    Tls { url: String, message: String },
    #[error("{0}: no answer in time")]
    Timeout(String),
    #[error("{url}: {source}")]
    Protocol {
        url: String,
        source: relay::RelayError,
    },
    #[error("{url}: the relay answered {code} ({message})")]
    Refused {
        url: String,
        code: i32,
        message: String,
    },
    #[error("{url}: the relay is full")]
    Full { url: String },
    #[error("{url}: unexpected {what}")]
    Unexpected { url: String, what: String },
    #[error("{0}: not a relay address (relay://HOST:PORT/?id=...)")]
    BadUrl(String),
}

/// A relay as the configuration names it.
#[derive(Clone, Debug)]
pub(crate) struct RelayTarget {
    pub(crate) url: RelayUrl,
    /// The URL as configured (what status and announcements show).
    pub(crate) text: String,
}

impl RelayTarget {
    pub(crate) fn parse(text: &str) -> Result<Self, RelayClientError> {
        let url: RelayUrl = text
            .parse()
            .map_err(|_| RelayClientError::BadUrl(text.to_owned()))?;
        Ok(Self {
            url,
            text: text.to_owned(),
        })
    }

    fn host_port(&self) -> String {
        if self.url.host.contains(':') {
            format!("[{}]:{}", self.url.host, self.url.port)
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        }
    }

    fn io(&self, source: std::io::Error) -> RelayClientError {
        RelayClientError::Io {
            url: self.text.clone(),
            source,
        }
    }

    fn protocol(&self, source: relay::RelayError) -> RelayClientError {
        RelayClientError::Protocol {
            url: self.text.clone(),
            source,
        }
    }
}

/// A protocol-mode connection to a relay.
pub(crate) struct RelayConnection {
    stream: TlsStream<TcpStream>,
    target: RelayTarget,
    /// The relay's address as dialed: an invitation without an address means this IP.
    relay_ip: IpAddr,
}

impl RelayConnection {
    /// TCP, then TLS with our certificate; the relay's is checked against `?id=`.
    pub(crate) async fn open(
        target: &RelayTarget,
        identity: &Identity,
    ) -> Result<Self, RelayClientError> {
        let config = tls::relay_client_config(identity, target.url.id).map_err(|e| {
            RelayClientError::Tls {
                url: target.text.clone(),
                message: e.to_string(),
            }
        })?;
        let connector = TlsConnector::from(Arc::new(config));
        let host_port = target.host_port();
        let opened = async {
            let tcp = TcpStream::connect(&host_port)
                .await
                .map_err(|e| target.io(e))?;
            let _ = tcp.set_nodelay(true);
            let relay_ip = tcp.peer_addr().map_err(|e| target.io(e))?.ip();
            let stream = connector
                .connect(tls::server_name(), tcp)
                .await
                .map_err(|e| RelayClientError::Tls {
                    url: target.text.clone(),
                    message: e.to_string(),
                })?;
            if stream.get_ref().1.alpn_protocol() != Some(relay::ALPN) {
                return Err(RelayClientError::Unexpected {
                    url: target.text.clone(),
                    what: "TLS protocol (no bep-relay ALPN)".into(),
                });
            }
            Ok(Self {
                stream,
                target: target.clone(),
                relay_ip,
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, opened)
            .await
            .map_err(|_| RelayClientError::Timeout(target.text.clone()))?
    }

    pub(crate) async fn send(&mut self, message: &Message) -> Result<(), RelayClientError> {
        write_message(&mut self.stream, message)
            .await
            .map_err(|e| self.target.io(e))
    }

    /// The next message (no time limit: the caller decides how long silence may last).
    pub(crate) async fn receive(&mut self) -> Result<Message, RelayClientError> {
        read_message(&mut self.stream, &self.target).await
    }

    async fn answer(&mut self) -> Result<Message, RelayClientError> {
        tokio::time::timeout(ANSWER_TIMEOUT, self.receive())
            .await
            .map_err(|_| RelayClientError::Timeout(self.target.text.clone()))?
    }

    /// Takes a permanent slot (`JoinRelayRequest`): the relay then forwards invitations.
    pub(crate) async fn join(&mut self) -> Result<(), RelayClientError> {
        let token = self.target.url.token.clone().unwrap_or_default();
        self.send(&Message::JoinRelayRequest { token }).await?;
        match self.answer().await? {
            Message::Response(r) if r.code == relay::Response::SUCCESS => Ok(()),
            other => Err(self.refusal(other)),
        }
    }

    /// Asks for a session with `device` (`ConnectRequest`); the relay answers with our
    /// invitation, or `not found` when the device holds no slot there.
    pub(crate) async fn request_session(
        mut self,
        device: DeviceId,
    ) -> Result<Invitation, RelayClientError> {
        self.send(&Message::ConnectRequest { id: device }).await?;
        match self.answer().await? {
            Message::SessionInvitation(invitation) if invitation.from == device => {
                Ok(self.invitation(invitation))
            }
            Message::SessionInvitation(invitation) => Err(RelayClientError::Unexpected {
                url: self.target.text.clone(),
                what: format!("invitation from {}", invitation.from.short()),
            }),
            other => Err(self.refusal(other)),
        }
    }

    /// An invitation as the relay sent it, with the address to join it at.
    pub(crate) fn invitation(&self, invitation: SessionInvitation) -> Invitation {
        let ip = invitation.address.unwrap_or(self.relay_ip);
        Invitation {
            session: SocketAddr::new(ip, invitation.port),
            target: self.target.clone(),
            invitation,
        }
    }

    fn refusal(&self, message: Message) -> RelayClientError {
        let url = self.target.text.clone();
        match message {
            Message::Response(r) => RelayClientError::Refused {
                url,
                code: r.code,
                message: r.message,
            },
            Message::RelayFull => RelayClientError::Full { url },
            other => RelayClientError::Unexpected {
                url,
                what: format!("{other:?}"),
            },
        }
    }
}

/// A session the relay set up, to be joined.
#[derive(Debug)]
pub(crate) struct Invitation {
    pub(crate) invitation: SessionInvitation,
    /// Where to join it.
    pub(crate) session: SocketAddr,
    pub(crate) target: RelayTarget,
}

impl Invitation {
    /// Joins the session (plaintext `JoinSessionRequest`); on success the stream is a byte
    /// pipe to the other device.
    pub(crate) async fn join(&self) -> Result<TcpStream, RelayClientError> {
        let target = &self.target;
        let joined = async {
            let mut tcp = TcpStream::connect(self.session)
                .await
                .map_err(|e| target.io(e))?;
            let _ = tcp.set_nodelay(true);
            let request = Message::JoinSessionRequest {
                key: self.invitation.key,
            };
            write_message(&mut tcp, &request)
                .await
                .map_err(|e| target.io(e))?;
            match read_message(&mut tcp, target).await? {
                Message::Response(r) if r.code == relay::Response::SUCCESS => Ok(tcp),
                Message::Response(r) => Err(RelayClientError::Refused {
                    url: target.text.clone(),
                    code: r.code,
                    message: r.message,
                }),
                other => Err(RelayClientError::Unexpected {
                    url: target.text.clone(),
                    what: format!("{other:?}"),
                }),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, joined)
            .await
            .map_err(|_| RelayClientError::Timeout(target.text.clone()))?
    }
}

async fn write_message(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &Message,
) -> std::io::Result<()> {
    stream.write_all(&message.encode()).await?;
    stream.flush().await
}

async fn read_message(
    stream: &mut (impl AsyncRead + Unpin),
    target: &RelayTarget,
) -> Result<Message, RelayClientError> {
    let mut header = [0u8; relay::HEADER_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| target.io(e))?;
    let (_, len) = relay::parse_header(&header).map_err(|e| target.protocol(e))?;
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| target.io(e))?;
    Message::decode(&header, &body).map_err(|e| target.protocol(e))
}
