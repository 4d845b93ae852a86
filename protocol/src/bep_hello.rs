//! Syncthing's pre-authentication Hello (BEP v1): `u32` magic, `u16` length, then the
//! protobuf `bep.Hello`, all big-endian. Both sides send it right after TLS.

use prost::Message;

/// The BEP v1 ALPN protocol name Syncthing's QUIC connections negotiate.
pub const BEP_ALPN: &[u8] = b"bep/1.0";

const MAGIC: u32 = 0x2EA7_D90B;
/// Hellos are a few dozen bytes; a length field is 16 bits anyway.
const MAX_HELLO: usize = u16::MAX as usize;

/// The generated message (`proto/bep_hello.proto`).
#[allow(missing_docs, missing_debug_implementations, unreachable_pub)]
mod wire {
    include!(concat!(env!("OUT_DIR"), "/bep.rs"));
}

pub use wire::Hello;

/// Why a Hello could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BepHelloError {
    /// Fewer bytes than the header or its length promise.
    #[error("the Hello is cut short")]
    Short,
    /// Another magic: an older or newer BEP.
    #[error("not a BEP v1 Hello (magic {0:#010x})")]
    Magic(u32),
    /// The body is not a Hello.
    #[error("malformed Hello: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// `hello` framed for the wire.
pub fn encode(hello: &Hello) -> Vec<u8> {
    let body = hello.encode_to_vec();
    let length = u16::try_from(body.len().min(MAX_HELLO)).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(6 + body.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(length)]);
    out
}

/// How many bytes the framed Hello starting with `header` (its first 6 bytes) takes.
pub fn framed_len(header: &[u8; 6]) -> Result<usize, BepHelloError> {
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != MAGIC {
        return Err(BepHelloError::Magic(magic));
    }
    Ok(6 + usize::from(u16::from_be_bytes([header[4], header[5]])))
}

/// Reads a framed Hello.
pub fn decode(framed: &[u8]) -> Result<Hello, BepHelloError> {
    let header: &[u8; 6] = framed
        .get(..6)
        .and_then(|h| h.try_into().ok())
        .ok_or(BepHelloError::Short)?;
    let end = framed_len(header)?;
    let body = framed.get(6..end).ok_or(BepHelloError::Short)?;
    Ok(Hello::decode(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_round_trips_and_other_magics_are_named() {
        let hello = Hello {
            device_name: "laptop".into(),
            client_name: "syncthing".into(),
            client_version: "v1.19.2".into(),
            num_connections: 0,
            timestamp: 0,
        };
        let framed = encode(&hello);
        assert_eq!(&framed[..4], &[0x2E, 0xA7, 0xD9, 0x0B]);
        assert_eq!(
            framed_len(framed[..6].try_into().unwrap()).unwrap(),
            framed.len()
        );
        assert_eq!(decode(&framed).unwrap(), hello);
        assert!(matches!(decode(&framed[..8]), Err(BepHelloError::Short)));
        let mut old = framed.clone();
        old[..4].copy_from_slice(&0x0001_0001u32.to_be_bytes());
        assert!(matches!(
            decode(&old),
            Err(BepHelloError::Magic(0x0001_0001))
        ));
    }
}
