//! Reverse-proxy mode (`--http`): the proxy terminates TLS, so the client's address and
//! certificate arrive in headers instead of from the socket and the TLS session.
//!
//! These headers are believed as they are: only a proxy may be able to reach the listener.

use std::net::{IpAddr, SocketAddr};

use data_encoding::BASE64;
use http::HeaderMap;
use peerfold_protocol::DeviceId;
use percent_encoding::percent_decode_str;

/// The client's address: the first `X-Forwarded-For` entry (the proxy appends, so the first
/// is the client) and `X-Client-Port`; the socket's address where they are missing. Without a
/// port header the port is 0, so fix-up cannot fill the proxy's own port into addresses.
pub(crate) fn source(headers: &HeaderMap, socket: SocketAddr) -> SocketAddr {
    let ip = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| parse_ip(first.trim()));
    let Some(ip) = ip else {
        return socket;
    };
    let port = headers
        .get("x-client-port")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u16>().ok())
        .unwrap_or(0);
    SocketAddr::new(ip, port)
}

/// `192.0.2.1`, `2001:db8::1`, or `[2001:db8::1]` (and a port on either, as some proxies
/// send).
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })
}

/// The device whose certificate the proxy passed on: nginx's `X-SSL-Cert` (`$ssl_client_cert`
/// with tabs or spaces in the PEM, or URL-escaped `$ssl_client_escaped_cert`), Caddy's
/// `X-Tls-Client-Cert-Der-Base64`, Traefik's `X-Forwarded-Tls-Client-Cert` (URL-escaped PEM
/// body without the BEGIN/END lines).
pub(crate) fn client_device(headers: &HeaderMap) -> Option<DeviceId> {
    [
        "x-ssl-cert",
        "x-tls-client-cert-der-base64",
        "x-forwarded-tls-client-cert",
    ]
    .iter()
    .filter_map(|name| headers.get(*name)?.to_str().ok())
    .find_map(certificate_der)
    .map(|der| DeviceId::from_certificate_der(&der))
}

/// The first certificate's DER from any of the header forms above: they all come down to
/// base64 of the DER, possibly URL-escaped, possibly between PEM markers, with whitespace
/// anywhere.
fn certificate_der(value: &str) -> Option<Vec<u8>> {
    let value = percent_decode_str(value).decode_utf8().ok()?;
    let value = value.trim();
    if value.is_empty() || value == "(null)" {
        return None;
    }
    let body = match value.find("-----BEGIN CERTIFICATE-----") {
        Some(start) => {
            let after = &value[start + "-----BEGIN CERTIFICATE-----".len()..];
            &after[..after.find("-----END CERTIFICATE-----")?]
        }
        // Traefik may pass a chain as comma-separated bodies.
        None => value.split(',').next()?,
    };
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    BASE64
        .decode(base64.as_bytes())
        .ok()
        .filter(|der| !der.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use peerfold_protocol::identity::Identity;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn source_comes_from_the_first_forwarded_entry_and_the_port_header() {
        let socket: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let forwarded = headers(&[
            ("x-forwarded-for", "198.51.100.7, 10.0.0.2".into()),
            ("x-client-port", "40001".into()),
        ]);
        assert_eq!(
            source(&forwarded, socket),
            "198.51.100.7:40001".parse().unwrap()
        );
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::7]".into())]);
        assert_eq!(source(&v6, socket), "[2001:db8::7]:0".parse().unwrap());
        assert_eq!(source(&HeaderMap::new(), socket), socket);
        let junk = headers(&[("x-forwarded-for", "not-an-ip".into())]);
        assert_eq!(source(&junk, socket), socket);
    }

    #[test]
    fn certificates_are_read_in_every_proxy_format() {
        let identity = Identity::generate().unwrap();
        let id = identity.device_id();
        let pem = identity.certificate_pem();
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der_base64 = BASE64.encode(identity.certificate_der());
        let cases = [
            // nginx $ssl_client_escaped_cert
            (
                "x-ssl-cert",
                utf8_percent_encode(&pem, NON_ALPHANUMERIC).to_string(),
            ),
            // nginx $ssl_client_cert: continuation lines start with a tab
            (
                "x-ssl-cert",
                pem.trim_end().replace('\n', "\n\t").replace('\n', ""),
            ),
            // newlines turned into spaces
            ("x-ssl-cert", pem.trim_end().replace('\n', " ")),
            ("x-tls-client-cert-der-base64", der_base64),
            (
                "x-forwarded-tls-client-cert",
                utf8_percent_encode(&body, NON_ALPHANUMERIC).to_string(),
            ),
        ];
        for (name, value) in cases {
            assert_eq!(
                client_device(&headers(&[(name, value.clone())])),
                Some(id),
                "{name}: {value}"
            );
        }
        assert_eq!(client_device(&HeaderMap::new()), None);
        assert_eq!(
            client_device(&headers(&[("x-ssl-cert", "(null)".into())])),
            None
        );
        assert_eq!(
            client_device(&headers(&[("x-ssl-cert", "%%%".into())])),
            None
        );
    }
}
