//! Where a device can be reached, or where this device listens: parsed once, when the
//! configuration is read or changed, so the rest of the engine never looks at URL text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One address, as Syncthing writes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// `quic://HOST:PORT`: a direct QUIC path. The host is a name or an IP address (IPv6 in
    /// brackets); names are resolved when dialing.
    Quic {
        /// The host, without brackets.
        host: String,
        /// The UDP port.
        port: u16,
    },
    /// `relay://HOST:PORT/?id=DEVICE-ID...`: a relay server (Syncthing's relay protocol).
    /// Kept whole: the query carries the relay's ID and options.
    Relay {
        /// The host, without brackets.
        host: String,
        /// The TCP port.
        port: u16,
        /// Everything after `HOST:PORT` (path and query), as written.
        rest: String,
    },
    /// `dynamic`: found by discovery.
    Dynamic,
}

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not one of the three forms.
    #[error(
        "address {0:?} must look like quic://HOST:PORT or relay://HOST:PORT/?id=ID, or be \"dynamic\""
    )]
    Form(String),
    /// A form without a usable host or port.
    #[error("address {0:?} needs a host and a port (quic://HOST:PORT)")]
    HostPort(String),
}

impl Address {
    /// A QUIC address.
    pub fn quic(host: impl Into<String>, port: u16) -> Self {
        Self::Quic {
            host: host.into(),
            port,
        }
    }

    /// `HOST:PORT` of a direct or relay address (IPv6 hosts in brackets), for resolving.
    pub fn host_port(&self) -> Option<String> {
        match self {
            Self::Quic { host, port } | Self::Relay { host, port, .. } => {
                Some(if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                })
            }
            Self::Dynamic => None,
        }
    }
}

/// `HOST:PORT` with the host possibly in brackets.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), port))
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "dynamic" {
            return Ok(Self::Dynamic);
        }
        if let Some(rest) = text.strip_prefix("quic://") {
            let host_port = rest.strip_suffix('/').unwrap_or(rest);
            let (host, port) =
                split_host_port(host_port).ok_or_else(|| AddressError::HostPort(text.into()))?;
            return Ok(Self::Quic { host, port });
        }
        if let Some(rest) = text.strip_prefix("relay://") {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (host, port) =
                split_host_port(&rest[..end]).ok_or_else(|| AddressError::HostPort(text.into()))?;
            return Ok(Self::Relay {
                host,
                port,
                rest: rest[end..].to_owned(),
            });
        }
        Err(AddressError::Form(text.into()))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quic { .. } => write!(f, "quic://{}", self.host_port().unwrap_or_default()),
            Self::Relay { rest, .. } => {
                write!(f, "relay://{}{rest}", self.host_port().unwrap_or_default())
            }
            Self::Dynamic => f.write_str("dynamic"),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_round_trip() {
        for text in [
            "quic://192.0.2.1:22100",
            "quic://[::1]:22100",
            "quic://host.example:1",
            "relay://relay.example:22067/?id=ABC&token=x",
            "dynamic",
        ] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        assert_eq!(
            "quic://[::1]:5".parse::<Address>().unwrap(),
            Address::quic("::1", 5)
        );
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, form) in [
            ("tcp://a:1", true),
            ("192.0.2.1:1", true),
            ("quic://a", false),
            ("quic://:5", false),
            ("quic://a:99999", false),
            ("relay://:1/?id=x", false),
        ] {
            let err = text.parse::<Address>().unwrap_err();
            assert_eq!(matches!(err, AddressError::Form(_)), form, "{text}: {err}");
            assert!(err.to_string().contains(text));
        }
    }
}
