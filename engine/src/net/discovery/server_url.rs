//! A global discovery server as configured: its URL, and the options Syncthing reads from
//! the query (`?id=`, `?insecure`, `?noannounce`, `?nolookup`), which are never sent.

use std::fmt;

use peerfold_protocol::DeviceId;

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerCheck {
    /// Its certificate must be this device's (`?id=`; the CA chain is not looked at).
    Pinned(DeviceId),
    /// Any certificate (`?insecure`).
    Insecure,
    /// A CA-signed certificate for its host name (web PKI roots).
    WebPki,
}

/// One configured server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// As configured: the key of its status in `/rest/system/status`.
    pub(crate) text: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query without our options, as requested (`/v2/`, `/`).
    pub(crate) target: String,
    pub(crate) check: ServerCheck,
    pub(crate) announce: bool,
    pub(crate) lookup: bool,
}

/// Why a configured server cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerUrlError {
    #[error("discovery server {0:?} is not a URL: {1}")]
    Parse(String, url::ParseError),
    #[error("discovery server {0:?} must be https:// with a host")]
    NotHttps(String),
    #[error("discovery server {0:?}: ?id= is not a device ID: {1}")]
    Id(String, String),
}

impl ServerUrl {
    pub(crate) fn parse(text: &str) -> Result<Self, ServerUrlError> {
        let url = url::Url::parse(text).map_err(|e| ServerUrlError::Parse(text.into(), e))?;
        let host = url
            .host_str()
            .filter(|_| url.scheme() == "https")
            .ok_or_else(|| ServerUrlError::NotHttps(text.into()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let mut check = ServerCheck::WebPki;
        let (mut announce, mut lookup) = (true, true);
        let mut kept = Vec::new();
        for (key, value) in url.query_pairs() {
            match &*key {
                "id" => {
                    let id = value
                        .parse()
                        .map_err(|e| ServerUrlError::Id(text.into(), format!("{e}")))?;
                    check = ServerCheck::Pinned(id);
                }
                "insecure" if check == ServerCheck::WebPki => check = ServerCheck::Insecure,
                "insecure" => {}
                "noannounce" => announce = false,
                "nolookup" => lookup = false,
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        let mut target = url.path().to_owned();
        if !kept.is_empty() {
            let query: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
            target = format!("{target}?{}", query.join("&"));
        }
        Ok(Self {
            text: text.to_owned(),
            port: url.port().unwrap_or(443),
            host,
            target,
            check,
            announce,
            lookup,
        })
    }

    /// The request target of a lookup for `device`.
    pub(crate) fn lookup_target(&self, device: DeviceId) -> String {
        let joiner = if self.target.contains('?') { '&' } else { '?' };
        format!("{}{joiner}device={device}", self.target)
    }

    /// `HOST:PORT` (IPv6 in brackets), for resolving and the Host header.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD";

    #[test]
    fn syncthing_options_are_read_and_not_sent() {
        let url = ServerUrl::parse(&format!(
            "https://disco.example:8443/v2/?id={ID}&noannounce&x=1"
        ))
        .unwrap();
        assert_eq!(url.check, ServerCheck::Pinned(ID.parse().unwrap()));
        assert!(!url.announce && url.lookup);
        assert_eq!(url.authority(), "disco.example:8443");
        assert_eq!(url.target, "/v2/?x=1");
        let device: DeviceId = ID.parse().unwrap();
        assert_eq!(url.lookup_target(device), format!("/v2/?x=1&device={ID}"));

        let url = ServerUrl::parse("https://[2001:db8::1]/?insecure&nolookup").unwrap();
        assert_eq!(url.check, ServerCheck::Insecure);
        assert!(url.announce && !url.lookup);
        assert_eq!((url.host.as_str(), url.port), ("2001:db8::1", 443));
        assert_eq!(url.target, "/");

        let url = ServerUrl::parse("https://disco.example").unwrap();
        assert_eq!(url.check, ServerCheck::WebPki);
    }

    #[test]
    fn unusable_servers_say_why() {
        for bad in ["http://a/", "https://a/?id=nope", "not a url"] {
            let err = ServerUrl::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
