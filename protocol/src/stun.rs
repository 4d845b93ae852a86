//! STUN Binding requests and success responses (RFC 8489, formerly RFC 5389), the part
//! peerfold uses to learn its public UDP mapping: a thin wrapper over the `stun-rs` codec.
//!
//! Pure: bytes in, bytes out. The daemon sends [`binding_request`]s on its QUIC socket and
//! reads the [`parse_binding_response`]; the discovery and relay servers answer
//! [`parse_binding_request`]s with [`binding_response`]. [`is_stun`] is the cheap test that
//! tells a STUN message from a QUIC packet arriving on the same socket (a QUIC long header
//! has its top bit set, a short header bit 0x40; a STUN message has both clear and the magic
//! cookie at bytes 4..8).

use std::net::{IpAddr, SocketAddr};

use stun_rs::attributes::stun::{Fingerprint, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunAttribute, StunMessageBuilder, TransactionId,
};

/// A STUN transaction ID: 96 bits chosen at random by the client.
pub type TxId = [u8; 12];

/// The STUN header: type (2), length (2), magic cookie (4), transaction ID (12).
pub const HEADER_LEN: usize = 20;

/// The magic cookie every RFC 5389/8489 message carries at bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The largest a [`binding_response`] gets (IPv6 XOR-MAPPED-ADDRESS): a server answers only
/// requests whose answer is at most this much larger than the request, so it never
/// amplifies.
pub const MAX_RESPONSE_LEN: usize = HEADER_LEN + 4 + 20;

/// Whether `b` looks like a STUN message: at least a header, the top two bits of the first
/// byte clear, the magic cookie in place and a length that is a multiple of 4 and fits.
pub fn is_stun(b: &[u8]) -> bool {
    if b.len() < HEADER_LEN || b[0] & 0xC0 != 0 {
        return false;
    }
    let cookie = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    cookie == MAGIC_COOKIE && len % 4 == 0 && HEADER_LEN + len == b.len()
}

/// The transaction ID of a STUN message (`None` if `b` is not one).
pub fn transaction_id(b: &[u8]) -> Option<TxId> {
    if !is_stun(b) {
        return None;
    }
    let mut tx = [0u8; 12];
    tx.copy_from_slice(&b[8..HEADER_LEN]);
    Some(tx)
}

fn encode(msg: &stun_rs::StunMessage) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let encoder = MessageEncoderBuilder::default().build();
    // A Binding message with at most one address attribute and a fingerprint is below
    // 128 bytes; the encoder fails only on a too-small buffer.
    let n = encoder.encode(&mut buf, msg).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// A Binding request with transaction ID `tx` and a FINGERPRINT (28 bytes).
pub fn binding_request(tx: TxId) -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(tx))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&msg)
}

/// A Binding indication with transaction ID `tx` (20 bytes): a datagram that asks for no
/// answer (RFC 8489's keep-alive), sent to open a NAT mapping towards a peer (hole punching).
pub fn binding_indication(tx: TxId) -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Indication)
        .with_transaction_id(TransactionId::from(tx))
        .build();
    encode(&msg)
}

/// The transaction ID of a well-formed Binding request (its FINGERPRINT, if any, checked);
/// `None` for anything else.
pub fn parse_binding_request(b: &[u8]) -> Option<TxId> {
    if !is_stun(b) {
        return None;
    }
    let ctx = DecoderContextBuilder::default().with_validation().build();
    let decoder = MessageDecoderBuilder::default().with_context(ctx).build();
    let (msg, _) = decoder.decode(b).ok()?;
    if msg.method() != BINDING || msg.class() != MessageClass::Request {
        return None;
    }
    Some(*msg.transaction_id().as_bytes())
}

/// A Binding success response for `tx` telling the client it was seen from `addr`
/// (XOR-MAPPED-ADDRESS; an IPv4-mapped IPv6 source is given as IPv4).
pub fn binding_response(tx: TxId, addr: SocketAddr) -> Vec<u8> {
    let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
    let msg = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(TransactionId::from(tx))
        .with_attribute(XorMappedAddress::from(addr))
        .build();
    encode(&msg)
}

/// The transaction ID and mapped address of a Binding success response (XOR-MAPPED-ADDRESS,
/// or the old MAPPED-ADDRESS of RFC 3489 servers); `None` for anything else.
pub fn parse_binding_response(b: &[u8]) -> Option<(TxId, SocketAddr)> {
    if !is_stun(b) {
        return None;
    }
    let ctx = DecoderContextBuilder::default().with_validation().build();
    let decoder = MessageDecoderBuilder::default().with_context(ctx).build();
    let (msg, _) = decoder.decode(b).ok()?;
    if msg.method() != BINDING || msg.class() != MessageClass::SuccessResponse {
        return None;
    }
    let tx = *msg.transaction_id().as_bytes();
    let mut fallback = None;
    for attr in msg.attributes() {
        match attr {
            StunAttribute::XorMappedAddress(a) => return Some((tx, *a.socket_address())),
            StunAttribute::MappedAddress(a) => fallback = Some(*a.socket_address()),
            _ => {}
        }
    }
    fallback.map(|a| (tx, a))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: TxId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn request_round_trip() {
        let req = binding_request(TX);
        assert_eq!(req.len(), 28);
        assert!(is_stun(&req));
        assert_eq!(transaction_id(&req), Some(TX));
        assert_eq!(parse_binding_request(&req), Some(TX));
        assert_eq!(parse_binding_response(&req), None);
    }

    /// A punch is STUN (so a peerfold socket takes it out of what QUIC sees) and neither a
    /// request a server would answer nor a response a probe would take.
    #[test]
    fn indication_is_stun_and_asks_for_nothing() {
        let punch = binding_indication(TX);
        assert_eq!(punch.len(), HEADER_LEN);
        assert!(is_stun(&punch));
        assert_eq!(transaction_id(&punch), Some(TX));
        assert_eq!(parse_binding_request(&punch), None);
        assert_eq!(parse_binding_response(&punch), None);
    }

    #[test]
    fn response_round_trip_v4_v6_and_mapped() {
        for addr in ["203.0.113.7:22100", "[2001:db8::1]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let resp = binding_response(TX, addr);
            assert!(resp.len() <= MAX_RESPONSE_LEN);
            assert_eq!(parse_binding_response(&resp), Some((TX, addr)));
            assert_eq!(parse_binding_request(&resp), None);
        }
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:9".parse().unwrap();
        let resp = binding_response(TX, mapped);
        assert_eq!(
            parse_binding_response(&resp),
            Some((TX, "10.1.2.3:9".parse().unwrap()))
        );
    }

    #[test]
    fn garbage_and_quic_are_not_stun() {
        assert!(!is_stun(b""));
        assert!(!is_stun(&[0u8; 19]));
        assert!(!is_stun(&[0u8; 20]));
        // A QUIC long header (0xC0..) and short header (0x40..) with a cookie-shaped body.
        let mut quic = binding_request(TX);
        quic[0] |= 0xC0;
        assert!(!is_stun(&quic));
        quic[0] = 0x40;
        assert!(!is_stun(&quic));
        assert_eq!(parse_binding_request(&quic), None);
        // A broken fingerprint is refused.
        let mut bad = binding_request(TX);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(parse_binding_request(&bad), None);
        // Truncated.
        let req = binding_request(TX);
        assert_eq!(parse_binding_request(&req[..24]), None);
    }
}
