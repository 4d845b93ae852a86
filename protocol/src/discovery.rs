//! Syncthing's Global Discovery v3 messages and the server's address fix-up, shared by our
//! discovery server and the daemon's client so both read the same JSON the same way.
//!
//! Announce: `POST` an [`Announcement`] with the device's certificate; the server answers
//! 204 with `Reannounce-After`. Lookup: `GET ?device=ID`; the server answers 200 with a
//! [`LookupReply`], or 404 with `Retry-After`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Header on a successful announce: seconds until the device should announce again.
pub const REANNOUNCE_AFTER: &str = "Reannounce-After";
/// Header on an error or a miss: seconds before asking again.
pub const RETRY_AFTER: &str = "Retry-After";

/// The body of an announce: where the certificate's device can be reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// URLs such as `quic://192.0.2.1:22000`, `quic://:22000` (the server fills in the
    /// host it sees) or `relay://HOST:PORT/?id=RELAY-ID`.
    pub addresses: Vec<String>,
}

/// The body of a lookup hit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReply {
    /// When the device last announced (RFC 3339, UTC, whole seconds).
    #[serde(default)]
    pub seen: String,
    /// Its unexpired addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed discovery message: {0}")]
pub struct MessageError(#[from] serde_json::Error);

impl Announcement {
    /// Reads an announce body.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a list of strings always serialises")
    }
}

impl LookupReply {
    /// Reads a lookup body.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings always serialise")
    }
}

/// The parts of `SCHEME://HOST:PORT REST` (REST is the path and query, kept as written).
struct AddressParts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: &'a str,
    rest: &'a str,
}

fn split(address: &str) -> Option<AddressParts<'_>> {
    let (scheme, after) = address.split_once("://")?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (host, port) = authority.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return None;
    }
    if host.contains(|c: char| c.is_whitespace() || "[]@/".contains(c)) {
        return None;
    }
    Some(AddressParts {
        scheme,
        host,
        port,
        rest,
    })
}

fn join(scheme: &str, host: &str, port: &str, rest: &str) -> String {
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}{rest}")
    } else {
        format!("{scheme}://{host}:{port}{rest}")
    }
}

/// What the server stores from an announce made from `source`, as stdiscosrv does: drops
/// what does not parse and loopback or multicast hosts; an empty or unspecified host
/// becomes the source's IP (unless the scheme ends in `4` or `6` and the family differs, or
/// the source itself is loopback or unspecified); port 0 becomes the source's port. The
/// result is sorted, without repeats.
pub fn fix_up(addresses: &[String], source: SocketAddr) -> Vec<String> {
    let source_ip = canonical(source.ip());
    let mut fixed: Vec<String> = addresses
        .iter()
        .filter_map(|address| {
            let parts = split(address)?;
            let ip = parts.host.parse::<IpAddr>().ok().map(canonical);
            if ip.is_some_and(|ip| ip.is_loopback() || ip.is_multicast()) {
                return None;
            }
            let mut host = parts.host.to_owned();
            if parts.host.is_empty() || ip.is_some_and(|ip| ip.is_unspecified()) {
                if source_ip.is_loopback() || source_ip.is_unspecified() {
                    return None;
                }
                let wants_v4 = parts.scheme.ends_with('4');
                let wants_v6 = parts.scheme.ends_with('6');
                if (wants_v4 && !source_ip.is_ipv4()) || (wants_v6 && !source_ip.is_ipv6()) {
                    return None;
                }
                host = source_ip.to_string();
            }
            let port = if parts.port.parse::<u16>().ok()? == 0 {
                source.port().to_string()
            } else {
                parts.port.to_owned()
            };
            Some(join(parts.scheme, &host, &port, parts.rest))
        })
        .collect();
    fixed.sort();
    fixed.dedup();
    fixed
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) as the IPv4 it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A relay URL with every query parameter but `id` removed, as Syncthing's client sends
/// them (the rest is for the relay's clients, not for discovery).
pub fn sanitize_relay_address(address: &str) -> String {
    let Some((base, query)) = address.split_once('?') else {
        return address.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() == Some("id"))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fix_up_fills_in_the_source_and_drops_what_cannot_be_dialled() {
        let source: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let fixed = fix_up(
            &strings(&[
                "quic://:22000",
                "quic://0.0.0.0:22000",
                "quic://[::]:22001",
                "quic://198.51.100.1:0",
                "quic://127.0.0.1:22000",
                "quic://[::1]:22000",
                "quic://224.0.0.1:22000",
                "quic6://:22000",
                "quic4://:22002",
                "tcp://host.example:22000",
                "relay://203.0.113.5:22067/?id=ABC",
                "not a url",
                "quic://host:99999",
                "quic://::1:5",
                "quic://:22000",
            ]),
            source,
        );
        assert_eq!(
            fixed,
            strings(&[
                "quic4://192.0.2.7:22002",
                "quic://192.0.2.7:22000",
                "quic://192.0.2.7:22001",
                "quic://198.51.100.1:40000",
                "relay://203.0.113.5:22067/?id=ABC",
                "tcp://host.example:22000",
            ])
        );
    }

    #[test]
    fn fix_up_sees_mapped_ipv4_as_ipv4_and_writes_ipv6_in_brackets() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:1".parse().unwrap();
        assert_eq!(
            fix_up(&strings(&["quic4://:5", "quic6://:5"]), mapped),
            strings(&["quic4://192.0.2.7:5"])
        );
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(
            fix_up(&strings(&["quic://:5", "quic4://:5"]), v6),
            strings(&["quic://[2001:db8::1]:5"])
        );
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(fix_up(&strings(&["quic://:5"]), loopback).is_empty());
    }

    #[test]
    fn messages_read_what_syncthing_writes() {
        let reply = LookupReply::decode(
            br#"{"seen":"2026-12-02T10:00:00Z","addresses":["tcp://192.0.2.1:22000"]}"#,
        )
        .unwrap();
        assert_eq!(reply.addresses, strings(&["tcp://192.0.2.1:22000"]));
        assert_eq!(LookupReply::decode(&reply.encode()).unwrap(), reply);
        let announce = Announcement::decode(br#"{"addresses":["quic://:1"]}"#).unwrap();
        assert_eq!(
            String::from_utf8(announce.encode()).unwrap(),
            r#"{"addresses":["quic://:1"]}"#
        );
        assert!(Announcement::decode(b"{\"addresses\":5}").is_err());
        assert!(Announcement::decode(b"").is_err());
    }

    #[test]
    fn relay_urls_keep_only_their_id() {
        assert_eq!(
            sanitize_relay_address("relay://r:22067/?id=ABC&pingInterval=1m&networkTimeout=2m"),
            "relay://r:22067/?id=ABC"
        );
        assert_eq!(
            sanitize_relay_address("relay://r:22067/?x=1"),
            "relay://r:22067/"
        );
        assert_eq!(sanitize_relay_address("relay://r:1"), "relay://r:1");
    }
}
