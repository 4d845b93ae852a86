//! Syncthing's relay protocol v1 (`shared/specs/relay-v1.md`): its eight messages in their
//! exact wire form (a 12-byte header, then an XDR body of at most 1024 bytes), the response
//! codes, and relay URLs. Shared by the relay server and the daemon's relay client.
//!
//! Wire form: `magic: u32 = 0x9E79BC40`, `type: i32`, `length: i32`, all big-endian, then
//! `length` bytes of XDR. XDR strings and opaques are a `u32` length, the bytes, and zero
//! padding to a multiple of four; `u16` and `bool` take four bytes each.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::DeviceId;

/// The first four bytes of every message.
pub const MAGIC: u32 = 0x9E79_BC40;
/// The largest body a message may have.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Magic, type and length.
pub const HEADER_LEN: usize = 12;
/// The TLS ALPN protocol of protocol mode.
pub const ALPN: &[u8] = b"bep-relay";
/// The relay's default TCP port.
pub const DEFAULT_PORT: u16 = 22067;
/// Session keys are 32 random bytes.
pub const KEY_LEN: usize = 32;

/// A session key.
pub type SessionKey = [u8; KEY_LEN];

/// Why bytes are not a relay message, or text not a relay URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The header does not start with [`MAGIC`].
    #[error("bad magic {0:#010x} (not the relay protocol)")]
    BadMagic(u32),
    /// A body length below zero or over [`MAX_MESSAGE_LEN`].
    #[error("message length {0} is outside 0..={MAX_MESSAGE_LEN}")]
    BadLength(i64),
    /// A message type this protocol does not have.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// The body ends before the message does, or a field holds what it may not.
    #[error("malformed {message}: {what}")]
    Malformed {
        /// The message being read.
        message: &'static str,
        /// What is wrong with it.
        what: &'static str,
    },
    /// Text that is not `relay://HOST:PORT/?...`.
    #[error("{0:?} is not a relay URL (relay://HOST:PORT/?id=DEVICE-ID)")]
    BadUrl(String),
}

/// The answer to a join or connect request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// One of the `Response::*` codes.
    pub code: i32,
    /// Its text, as Syncthing writes it.
    pub message: String,
}

impl Response {
    /// The request succeeded.
    pub const SUCCESS: i32 = 0;
    /// The device is not joined, or the session key is unknown or used.
    pub const NOT_FOUND: i32 = 1;
    /// The device already holds a slot, or both sides of the session are taken.
    pub const ALREADY_CONNECTED: i32 = 2;
    /// A private relay's token did not match.
    pub const WRONG_TOKEN: i32 = 3;
    /// Something failed inside the relay.
    pub const INTERNAL_ERROR: i32 = 99;
    /// A message that has no place at this point of the conversation.
    pub const UNEXPECTED_MESSAGE: i32 = 100;

    /// The response for `code`, with Syncthing's text for it.
    pub fn new(code: i32) -> Self {
        let message = match code {
            Self::SUCCESS => "success",
            Self::NOT_FOUND => "not found",
            Self::ALREADY_CONNECTED => "already connected",
            Self::WRONG_TOKEN => "wrong token",
            Self::UNEXPECTED_MESSAGE => "unexpected message",
            _ => "internal error",
        };
        Self {
            code,
            message: message.to_owned(),
        }
    }
}

/// A session set up by the relay, sent to each of its two sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInvitation {
    /// The device at the other end.
    pub from: DeviceId,
    /// The single-use key this side joins with.
    pub key: SessionKey,
    /// Where to join; `None` (empty or all zeros on the wire) means the relay's own IP.
    pub address: Option<IpAddr>,
    /// The session port.
    pub port: u16,
    /// This side plays the server of whatever runs inside the session.
    pub server_socket: bool,
}

/// One relay protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Type 0: are you there?
    Ping,
    /// Type 1: yes.
    Pong,
    /// Type 2: take a permanent slot (empty token for public relays).
    JoinRelayRequest {
        /// A private relay's token.
        token: String,
    },
    /// Type 3: join the session this key belongs to (session mode, plaintext).
    JoinSessionRequest {
        /// The key from the invitation.
        key: SessionKey,
    },
    /// Type 4: the answer to a request.
    Response(Response),
    /// Type 5: set up a session with this device.
    ConnectRequest {
        /// The device wanted.
        id: DeviceId,
    },
    /// Type 6: a session is ready.
    SessionInvitation(SessionInvitation),
    /// Type 7: the relay takes no more clients.
    RelayFull,
}

impl Message {
    /// The message's type number.
    pub fn kind(&self) -> i32 {
        match self {
            Self::Ping => 0,
            Self::Pong => 1,
            Self::JoinRelayRequest { .. } => 2,
            Self::JoinSessionRequest { .. } => 3,
            Self::Response(_) => 4,
            Self::ConnectRequest { .. } => 5,
            Self::SessionInvitation(_) => 6,
            Self::RelayFull => 7,
        }
    }

    /// Header and body, ready to write. Strings longer than a message may hold are cut at a
    /// character boundary (only a response text or a token could be).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        match self {
            Self::Ping | Self::Pong | Self::RelayFull => {}
            Self::JoinRelayRequest { token } => put_string(&mut body, token),
            Self::JoinSessionRequest { key } => put_opaque(&mut body, key),
            Self::Response(r) => {
                body.extend_from_slice(&r.code.to_be_bytes());
                put_string(&mut body, &r.message);
            }
            Self::ConnectRequest { id } => put_opaque(&mut body, id.as_bytes()),
            Self::SessionInvitation(i) => {
                put_opaque(&mut body, i.from.as_bytes());
                put_opaque(&mut body, &i.key);
                match i.address {
                    None => put_opaque(&mut body, &[]),
                    Some(IpAddr::V4(v4)) => put_opaque(&mut body, &v4.octets()),
                    Some(IpAddr::V6(v6)) => put_opaque(&mut body, &v6.octets()),
                }
                body.extend_from_slice(&u32::from(i.port).to_be_bytes());
                body.extend_from_slice(&u32::from(i.server_socket).to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&self.kind().to_be_bytes());
        // Bodies stay within MAX_MESSAGE_LEN (see `put_string`), so this fits an i32.
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a message from its header and body (the `length` bytes that followed it).
    /// Bytes past the fields are ignored, as Syncthing's decoder does.
    pub fn decode(header: &[u8; HEADER_LEN], body: &[u8]) -> Result<Message, RelayError> {
        let (kind, len) = parse_header(header)?;
        if body.len() != len {
            return Err(RelayError::Malformed {
                message: "message",
                what: "body length differs from the header's",
            });
        }
        let mut r = Reader { body, at: 0 };
        let message = match kind {
            0 => Self::Ping,
            1 => Self::Pong,
            // Old clients send no body at all: an empty token.
            2 if body.is_empty() => Self::JoinRelayRequest {
                token: String::new(),
            },
            2 => Self::JoinRelayRequest {
                token: r.string("JoinRelayRequest")?,
            },
            3 => Self::JoinSessionRequest {
                key: r.key("JoinSessionRequest")?,
            },
            4 => {
                let code = r.u32("Response")? as i32;
                let message = r.string("Response")?;
                Self::Response(Response { code, message })
            }
            5 => Self::ConnectRequest {
                id: r.device("ConnectRequest")?,
            },
            6 => {
                const NAME: &str = "SessionInvitation";
                let from = r.device(NAME)?;
                let key = r.key(NAME)?;
                let address = r.address(NAME)?;
                let port = u16::try_from(r.u32(NAME)?).map_err(|_| RelayError::Malformed {
                    message: NAME,
                    what: "port over 65535",
                })?;
                let server_socket = r.u32(NAME)? != 0;
                Self::SessionInvitation(SessionInvitation {
                    from,
                    key,
                    address,
                    port,
                    server_socket,
                })
            }
            7 => Self::RelayFull,
            other => return Err(RelayError::UnknownType(other)),
        };
        Ok(message)
    }
}

/// Checks a header: its message type and body length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(i32, usize), RelayError> {
    let word = |i: usize| [header[i], header[i + 1], header[i + 2], header[i + 3]];
    let magic = u32::from_be_bytes(word(0));
    if magic != MAGIC {
        return Err(RelayError::BadMagic(magic));
    }
    let kind = i32::from_be_bytes(word(4));
    let len = i32::from_be_bytes(word(8));
    match usize::try_from(len) {
        Ok(len) if len <= MAX_MESSAGE_LEN => Ok((kind, len)),
        _ => Err(RelayError::BadLength(len.into())),
    }
}

/// XDR variable-length opaque: length, bytes, padding.
fn put_opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out.resize(out.len() + padding(bytes.len()), 0);
}

/// An XDR string, cut (at a character boundary) so a message stays within its limit.
fn put_string(out: &mut Vec<u8>, text: &str) {
    const ROOM: usize = MAX_MESSAGE_LEN - 16;
    let mut end = text.len().min(ROOM);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    put_opaque(out, &text.as_bytes()[..end]);
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Reads XDR fields from a body.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, message: &'static str) -> Result<&'a [u8], RelayError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.body.len())
            .ok_or(RelayError::Malformed {
                message,
                what: "body too short",
            })?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self, message: &'static str) -> Result<u32, RelayError> {
        let b = self.take(4, message)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable-length opaque of at most `max` bytes.
    fn opaque(&mut self, max: usize, message: &'static str) -> Result<&'a [u8], RelayError> {
        let len = self.u32(message)? as usize;
        if len > max {
            return Err(RelayError::Malformed {
                message,
                what: "field longer than its limit",
            });
        }
        Ok(&self.take(len + padding(len), message)?[..len])
    }

    fn exactly_32(&mut self, message: &'static str) -> Result<[u8; 32], RelayError> {
        self.opaque(32, message)?
            .try_into()
            .map_err(|_| RelayError::Malformed {
                message,
                what: "an ID or key that is not 32 bytes",
            })
    }

    fn key(&mut self, message: &'static str) -> Result<SessionKey, RelayError> {
        self.exactly_32(message)
    }

    fn device(&mut self, message: &'static str) -> Result<DeviceId, RelayError> {
        Ok(DeviceId::from_bytes(self.exactly_32(message)?))
    }

    fn string(&mut self, message: &'static str) -> Result<String, RelayError> {
        let bytes = self.opaque(MAX_MESSAGE_LEN, message)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RelayError::Malformed {
            message,
            what: "text that is not UTF-8",
        })
    }

    /// An IP address: empty or all zeros for "the relay's own".
    fn address(&mut self, message: &'static str) -> Result<Option<IpAddr>, RelayError> {
        let bytes = self.opaque(32, message)?;
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
            return Ok(Some(IpAddr::V4(Ipv4Addr::from(v4))));
        }
        if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
            return Ok(Some(IpAddr::V6(Ipv6Addr::from(v6)).to_canonical()));
        }
        Err(RelayError::Malformed {
            message,
            what: "an address that is neither IPv4 nor IPv6",
        })
    }
}

/// `relay://HOST:PORT/?id=DEVICE-ID&token=...`: where a relay is and how to trust it. Other
/// query parameters (Syncthing's `pingInterval`, `networkTimeout`, `statusAddr`...) describe
/// the relay to its users and are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayUrl {
    /// Name or IP address, without brackets.
    pub host: String,
    /// The relay's TCP port.
    pub port: u16,
    /// The relay's device ID: its certificate is checked against it when present.
    pub id: Option<DeviceId>,
    /// A private relay's token.
    pub token: Option<String>,
}

impl FromStr for RelayUrl {
    type Err = RelayError;

    fn from_str(text: &str) -> Result<Self, RelayError> {
        let bad = || RelayError::BadUrl(text.to_owned());
        let url = url::Url::parse(text).map_err(|_| bad())?;
        if url.scheme() != "relay" {
            return Err(bad());
        }
        let host = match url.host().ok_or_else(bad)? {
            url::Host::Domain(name) => name.to_owned(),
            url::Host::Ipv4(v4) => v4.to_string(),
            url::Host::Ipv6(v6) => v6.to_string(),
        };
        let port = url.port().unwrap_or(DEFAULT_PORT);
        let mut id = None;
        let mut token = None;
        for (key, value) in url.query_pairs() {
            match &*key {
                "id" => id = Some(value.parse::<DeviceId>().map_err(|_| bad())?),
                "token" if !value.is_empty() => token = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(Self {
            host,
            port,
            id,
            token,
        })
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "relay://[{}]:{}/", self.host, self.port)?;
        } else {
            write!(f, "relay://{}:{}/", self.host, self.port)?;
        }
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(id) = self.id {
            query.append_pair("id", &id.to_string());
        }
        if let Some(token) = &self.token {
            query.append_pair("token", token);
        }
        let query = query.finish();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn roundtrip(message: &Message) -> Message {
        let bytes = message.encode();
        let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
        Message::decode(&header, &bytes[HEADER_LEN..]).unwrap()
    }

    fn id(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    #[test]
    fn the_wire_form_is_syncthings() {
        // JoinSessionRequest: header (magic, 3, 36), then opaque<32> = length 32 + key.
        let key = [7u8; 32];
        let bytes = Message::JoinSessionRequest { key }.encode();
        assert_eq!(
            &bytes[..12],
            &[0x9E, 0x79, 0xBC, 0x40, 0, 0, 0, 3, 0, 0, 0, 36]
        );
        assert_eq!(&bytes[12..16], &[0, 0, 0, 32]);
        assert_eq!(&bytes[16..], &key);
        // Response: code, then a padded string.
        let bytes = Message::Response(Response::new(Response::NOT_FOUND)).encode();
        assert_eq!(&bytes[12..], b"\0\0\0\x01\0\0\0\x09not found\0\0\0");
        // Ping: header only.
        assert_eq!(Message::Ping.encode().len(), HEADER_LEN);
        // An invitation: from, key, a 4-byte address, port and flag as 4 bytes each.
        let invitation = Message::SessionInvitation(SessionInvitation {
            from: id(1),
            key,
            address: Some("10.0.0.1".parse().unwrap()),
            port: 22067,
            server_socket: true,
        })
        .encode();
        assert_eq!(invitation.len(), 12 + 36 + 36 + 8 + 4 + 4);
        assert_eq!(&invitation[84..88], &[0, 0, 0, 4]);
        assert_eq!(&invitation[88..92], &[10, 0, 0, 1]);
        assert_eq!(&invitation[92..], &[0, 0, 0x56, 0x33, 0, 0, 0, 1]);
    }

    #[test]
    fn every_message_survives_a_roundtrip() {
        let messages = [
            Message::Ping,
            Message::Pong,
            Message::JoinRelayRequest {
                token: "secret".into(),
            },
            Message::JoinSessionRequest { key: [9; 32] },
            Message::Response(Response::new(Response::WRONG_TOKEN)),
            Message::ConnectRequest { id: id(3) },
            Message::SessionInvitation(SessionInvitation {
                from: id(4),
                key: [5; 32],
                address: Some("2001:db8::1".parse().unwrap()),
                port: 1,
                server_socket: false,
            }),
            Message::SessionInvitation(SessionInvitation {
                from: id(4),
                key: [5; 32],
                address: None,
                port: 22067,
                server_socket: true,
            }),
            Message::RelayFull,
        ];
        for message in messages {
            assert_eq!(roundtrip(&message), message);
        }
    }

    #[test]
    fn an_empty_join_is_an_empty_token_and_zero_addresses_mean_the_relays() {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC.to_be_bytes());
        header[4..8].copy_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            Message::decode(&header, &[]).unwrap(),
            Message::JoinRelayRequest {
                token: String::new()
            }
        );
        let mut invitation = Message::SessionInvitation(SessionInvitation {
            from: id(1),
            key: [2; 32],
            address: Some("10.0.0.1".parse().unwrap()),
            port: 5,
            server_socket: false,
        })
        .encode();
        invitation[88..92].copy_from_slice(&[0; 4]);
        let header: [u8; HEADER_LEN] = invitation[..12].try_into().unwrap();
        let Message::SessionInvitation(i) = Message::decode(&header, &invitation[12..]).unwrap()
        else {
            panic!("not an invitation");
        };
        assert_eq!(i.address, None);
    }

    #[test]
    fn bad_headers_and_bodies_are_refused() {
        let mut header = [0u8; HEADER_LEN];
        assert_eq!(parse_header(&header), Err(RelayError::BadMagic(0)));
        header[..4].copy_from_slice(&MAGIC.to_be_bytes());
        header[8..].copy_from_slice(&1025i32.to_be_bytes());
        assert_eq!(parse_header(&header), Err(RelayError::BadLength(1025)));
        header[8..].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_header(&header), Err(RelayError::BadLength(-1)));
        header[4..8].copy_from_slice(&8i32.to_be_bytes());
        header[8..].copy_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            Message::decode(&header, &[]),
            Err(RelayError::UnknownType(8))
        );
        // A key of 31 bytes, and a body cut short.
        header[4..8].copy_from_slice(&3i32.to_be_bytes());
        let mut body = vec![0, 0, 0, 31];
        body.extend_from_slice(&[1; 32]);
        header[8..].copy_from_slice(&(body.len() as i32).to_be_bytes());
        assert!(matches!(
            Message::decode(&header, &body),
            Err(RelayError::Malformed { .. })
        ));
        header[8..].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            Message::decode(&header, &body[..10]),
            Err(RelayError::Malformed { .. })
        ));
    }

    #[test]
    fn a_long_text_is_cut_to_fit_a_message() {
        let message = Message::Response(Response {
            code: 99,
            message: "é".repeat(2000),
        });
        let bytes = message.encode();
        assert!(bytes.len() <= HEADER_LEN + MAX_MESSAGE_LEN);
        let header: [u8; HEADER_LEN] = bytes[..12].try_into().unwrap();
        assert!(Message::decode(&header, &bytes[12..]).is_ok());
    }

    #[test]
    fn relay_urls_parse_and_print() {
        let me = id(8);
        let text = format!("relay://relay.example:22067/?id={me}&pingInterval=1m0s&token=a%20b");
        let url: RelayUrl = text.parse().unwrap();
        assert_eq!(url.host, "relay.example");
        assert_eq!(url.port, 22067);
        assert_eq!(url.id, Some(me));
        assert_eq!(url.token.as_deref(), Some("a b"));
        assert_eq!(url.to_string().parse::<RelayUrl>().unwrap(), url);
        let v6: RelayUrl = "relay://[2001:db8::2]:443".parse().unwrap();
        assert_eq!(v6.host, "2001:db8::2");
        assert_eq!(v6.to_string(), "relay://[2001:db8::2]:443/");
        let default_port: RelayUrl = "relay://r/".parse().unwrap();
        assert_eq!(default_port.port, DEFAULT_PORT);
        for bad in ["quic://r:1", "relay://r:1/?id=NOTANID", "relay://", "r:1"] {
            assert!(bad.parse::<RelayUrl>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(kind in 0i32..10, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut header = [0u8; HEADER_LEN];
            header[..4].copy_from_slice(&MAGIC.to_be_bytes());
            header[4..8].copy_from_slice(&kind.to_be_bytes());
            header[8..].copy_from_slice(&(body.len() as i32).to_be_bytes());
            let _ = Message::decode(&header, &body);
        }
    }
}
