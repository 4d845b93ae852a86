//! One HTTPS request to a discovery server, on a connection of its own (as Syncthing's
//! announces are: a device announces once an hour and looks up rarely, so nothing is kept
//! open). HTTP/1.1 over tokio-rustls, with the TLS check the server's URL asks for.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use peerfold_protocol::identity::Identity;
use peerfold_protocol::tls;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::server_url::{ServerCheck, ServerUrl};

/// The longest a request may take, connect to last byte (Syncthing's client uses 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply read: a lookup lists a few addresses.
const MAX_REPLY: usize = 64 << 10;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("{0} does not resolve: {1}")]
    Resolve(String, std::io::Error),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("the TLS configuration cannot be built: {0}")]
    Config(String),
    #[error("HTTP with {0} failed: {1}")]
    Http(String, hyper::Error),
    #[error("{0} sent a reply that breaks off or is over {MAX_REPLY} bytes")]
    TooLong(String),
    #[error("{0} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
}

/// A server's answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// A header holding whole seconds (`Reannounce-After`, `Retry-After`).
    pub(crate) fn seconds(&self, name: &str) -> Option<Duration> {
        let value = self.headers.get(name)?.to_str().ok()?;
        value.trim().parse().ok().map(Duration::from_secs)
    }

    /// The start of the body, for error messages.
    pub(crate) fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        text.trim().to_owned()
    }
}

/// TLS client settings for one server: with our certificate (announces) or without
/// (lookups).
pub(crate) fn client_config(
    check: ServerCheck,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, RequestError> {
    let config_error = |e: &dyn std::fmt::Display| RequestError::Config(e.to_string());
    let mut config = match (check, identity) {
        (ServerCheck::Pinned(id), Some(me)) => tls::https_client_config(me, Some(id)),
        (ServerCheck::Pinned(id), None) => tls::https_anonymous_client_config(Some(id)),
        (ServerCheck::Insecure, Some(me)) => tls::https_client_config(me, None),
        (ServerCheck::Insecure, None) => tls::https_anonymous_client_config(None),
        (ServerCheck::WebPki, identity) => return web_pki_config(identity),
    }
    .map_err(|e| config_error(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A CA-checked configuration, for servers configured without `?id=` or `?insecure`.
fn web_pki_config(identity: Option<&Identity>) -> Result<Arc<ClientConfig>, RequestError> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| RequestError::Config(e.to_string()))?
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(me) => builder
            .with_client_auth_cert(vec![me.certificate_der().clone()], me.private_key_der())
            .map_err(|e| RequestError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sends one request and reads the whole reply.
pub(crate) async fn send(
    server: &ServerUrl,
    tls: Arc<ClientConfig>,
    method: Method,
    target: &str,
    body: Option<Vec<u8>>,
) -> Result<Reply, RequestError> {
    let authority = server.authority();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        exchange(server, &authority, tls, method, target, body),
    )
    .await
    .map_err(|_| RequestError::Timeout(authority.clone()))?
}

async fn exchange(
    server: &ServerUrl,
    authority: &str,
    tls: Arc<ClientConfig>,
    method: Method,
    target: &str,
    body: Option<Vec<u8>>,
) -> Result<Reply, RequestError> {
    let address = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| RequestError::Resolve(authority.into(), e))?
        .next()
        .ok_or_else(|| {
            RequestError::Resolve(authority.into(), std::io::ErrorKind::NotFound.into())
        })?;
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| RequestError::Connect(authority.into(), e))?;
    let name = ServerName::try_from(server.host.clone())
        .map_err(|e| RequestError::Config(format!("{}: {e}", server.host)))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| RequestError::Tls(authority.into(), e))?;
    let http_error = |e| RequestError::Http(authority.into(), e);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, authority);
    if body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| RequestError::Config(e.to_string()))?;
    let reply = async {
        let response = sender.send_request(request).await.map_err(http_error)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_REPLY)
            .collect()
            .await
            .map_err(|_| RequestError::TooLong(authority.into()))?
            .to_bytes();
        Ok::<_, RequestError>((parts, body))
    };
    // The connection is driven here, not in a task of its own: it carries this one
    // request. If it ends first, what it received is already with the reply.
    tokio::pin!(reply);
    let (parts, body) = tokio::select! {
        biased;
        reply = &mut reply => reply?,
        _ = connection => reply.await?,
    };
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
