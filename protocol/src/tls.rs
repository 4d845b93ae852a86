//! rustls configurations that authenticate peers by device ID instead of by a CA.
//!
//! Both sides present their self-signed certificate. The handshake accepts any certificate
//! whose key signs the handshake; the peer's [`DeviceId`] (the certificate's SHA-256) is then
//! handed to a [`PeerPolicy`]:
//! - [`PeerDecision::Accept`]: a known device, the connection proceeds;
//! - [`PeerDecision::Pending`]: an unknown device; the handshake completes so the caller can
//!   record it as pending and close the connection with a reason the peer can show;
//! - [`PeerDecision::Reject`]: the handshake fails.
//!
//! `peerfold/1` offers only TLS 1.3; the HTTPS (discovery) and relay configurations offer
//! TLS 1.2 too, as Syncthing's clients and servers for those do. ring is the crypto provider.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};

use crate::identity::{CERT_COMMON_NAME, Identity};
use crate::{ALPN, DeviceId};

/// What to do with a peer, decided from its device ID alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerDecision {
    /// A configured device: go on.
    Accept,
    /// Not configured (yet): finish the handshake so the caller can record and close.
    Pending,
    /// Fail the handshake.
    Reject,
}

/// The callback that decides about a peer during the handshake.
#[derive(Clone)]
pub struct PeerPolicy(Arc<dyn Fn(DeviceId) -> PeerDecision + Send + Sync>);

impl PeerPolicy {
    /// A policy from a function of the peer's device ID.
    pub fn new(decide: impl Fn(DeviceId) -> PeerDecision + Send + Sync + 'static) -> Self {
        Self(Arc::new(decide))
    }

    /// Accept exactly one device (for dialing a known peer); reject every other.
    pub fn only(expected: DeviceId) -> Self {
        Self::new(move |peer| {
            if peer == expected {
                PeerDecision::Accept
            } else {
                PeerDecision::Reject
            }
        })
    }

    fn decide(&self, peer: DeviceId) -> PeerDecision {
        (self.0)(peer)
    }
}

impl fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerPolicy(..)")
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the TLS configuration failed: {0}")]
pub struct TlsConfigError(#[from] rustls::Error);

/// A server configuration that requires a client certificate and asks `policy` about it.
pub fn server_config(
    identity: &Identity,
    policy: PeerPolicy,
) -> Result<ServerConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(DeviceIdVerifier::new(&provider, policy));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A client configuration that presents our certificate and asks `policy` about the server's.
pub fn client_config(
    identity: &Identity,
    policy: PeerPolicy,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(DeviceIdVerifier::new(&provider, policy));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The server name clients put in their handshake. Certificates are pinned by device ID, so
/// the name carries no meaning; it only has to be a valid DNS name.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(CERT_COMMON_NAME).expect("the common name is a valid DNS name")
}

/// The device ID of an authenticated peer, from the certificate chain it presented.
pub fn peer_device_id(chain: &[CertificateDer<'_>]) -> Option<DeviceId> {
    chain
        .first()
        .map(|cert| DeviceId::from_certificate_der(cert))
}

/// HTTPS over device certificates (global discovery): a server that learns a client's device
/// ID from an optional client certificate, and a client that pins the server's ID.
///
/// Unlike `peerfold/1` connections these offer TLS 1.2 too, as Syncthing's discovery
/// clients and servers do.
pub fn https_server_config(identity: &Identity) -> Result<ServerConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut verifier = DeviceIdVerifier::new(&provider, PeerPolicy::new(|_| PeerDecision::Accept));
    // Lookups come without a certificate; announces with one.
    verifier.optional = true;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The relay server's protocol mode (Syncthing relay protocol v1): TLS 1.2 and 1.3, ALPN
/// `bep-relay`, a client certificate required (any well-formed one that signs the
/// handshake: its SHA-256 is the client's device ID), and no session resumption, as
/// strelaysrv sets `SessionTicketsDisabled`.
pub fn relay_server_config(identity: &Identity) -> Result<ServerConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = DeviceIdVerifier::new(&provider, PeerPolicy::new(|_| PeerDecision::Accept));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![crate::relay::ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A relay client's configuration: presents our certificate, offers ALPN `bep-relay`, and
/// accepts the relay's certificate only if it is `relay` (the URL's `?id=`), or any
/// certificate when the URL has no ID, as Syncthing's relay client does.
pub fn relay_client_config(
    identity: &Identity,
    relay: Option<DeviceId>,
) -> Result<ClientConfig, TlsConfigError> {
    let mut config = https_client(Some(identity), relay)?;
    config.alpn_protocols = vec![crate::relay::ALPN.to_vec()];
    Ok(config)
}

/// An HTTPS client configuration presenting our certificate (announces). With `server`,
/// only that device is accepted (Syncthing's `?id=` pinning); without, any certificate is
/// (`?insecure`). No ALPN is set: the caller names the HTTP version it speaks.
pub fn https_client_config(
    identity: &Identity,
    server: Option<DeviceId>,
) -> Result<ClientConfig, TlsConfigError> {
    https_client(Some(identity), server)
}

/// The same without a certificate (lookups: a server need not learn who asks for whom).
pub fn https_anonymous_client_config(
    server: Option<DeviceId>,
) -> Result<ClientConfig, TlsConfigError> {
    https_client(None, server)
}

fn https_client(
    identity: Option<&Identity>,
    server: Option<DeviceId>,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let policy = match server {
        Some(id) => PeerPolicy::only(id),
        None => PeerPolicy::new(|_| PeerDecision::Accept),
    };
    let verifier = Arc::new(DeviceIdVerifier::new(&provider, policy));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match identity {
        Some(identity) => builder.with_client_auth_cert(
            vec![identity.certificate_der().clone()],
            identity.private_key_der(),
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// Accepts any certificate that signs the handshake, then defers to the policy.
#[derive(Debug)]
struct DeviceIdVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    policy: PeerPolicy,
    /// A client may present no certificate (servers only).
    optional: bool,
}

impl DeviceIdVerifier {
    fn new(provider: &CryptoProvider, policy: PeerPolicy) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
            policy,
            optional: false,
        }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match self.policy.decide(DeviceId::from_certificate_der(cert)) {
            PeerDecision::Accept | PeerDecision::Pending => Ok(()),
            PeerDecision::Reject => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }
}

impl ClientCertVerifier for DeviceIdVerifier {
    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for DeviceIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ServerConnection};
    use std::sync::Mutex;

    /// Runs a TLS handshake between two in-memory connections.
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn connect(
        client_id: &Identity,
        client_policy: PeerPolicy,
        server_id: &Identity,
        server_policy: PeerPolicy,
    ) -> (
        ClientConnection,
        ServerConnection,
        Result<(), rustls::Error>,
    ) {
        let server_cfg = Arc::new(server_config(server_id, server_policy).unwrap());
        let client_cfg = Arc::new(client_config(client_id, client_policy).unwrap());
        let mut client = ClientConnection::new(client_cfg, server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        let result = handshake(&mut client, &mut server);
        (client, server, result)
    }

    #[test]
    fn both_sides_learn_each_others_device_id() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let seen_by_server = Arc::new(Mutex::new(None));
        let seen = seen_by_server.clone();
        let server_policy = PeerPolicy::new(move |peer| {
            *seen.lock().unwrap() = Some(peer);
            PeerDecision::Accept
        });
        let (client, server, result) =
            connect(&a, PeerPolicy::only(b.device_id()), &b, server_policy);
        result.unwrap();
        assert_eq!(*seen_by_server.lock().unwrap(), Some(a.device_id()));
        assert_eq!(
            peer_device_id(server.peer_certificates().unwrap()),
            Some(a.device_id())
        );
        assert_eq!(
            peer_device_id(client.peer_certificates().unwrap()),
            Some(b.device_id())
        );
        assert_eq!(client.alpn_protocol(), Some(ALPN));
    }

    #[test]
    fn pending_peers_complete_the_handshake() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (_, server, result) = connect(
            &a,
            PeerPolicy::only(b.device_id()),
            &b,
            PeerPolicy::new(|_| PeerDecision::Pending),
        );
        result.unwrap();
        assert_eq!(
            peer_device_id(server.peer_certificates().unwrap()),
            Some(a.device_id())
        );
    }

    #[test]
    fn rejected_peers_fail_the_handshake_on_either_side() {
        let (a, b, c) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        // The server rejects the client.
        let (_, _, result) = connect(
            &a,
            PeerPolicy::only(b.device_id()),
            &b,
            PeerPolicy::new(|_| PeerDecision::Reject),
        );
        assert!(result.is_err());
        // The client expected another device than the one that answered.
        let (_, _, result) = connect(
            &a,
            PeerPolicy::only(c.device_id()),
            &b,
            PeerPolicy::new(|_| PeerDecision::Accept),
        );
        assert!(result.is_err());
    }

    #[test]
    fn relay_servers_require_a_certificate_speak_bep_relay_and_issue_no_tickets() {
        let (relay, client_id, other) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let server_cfg = Arc::new(relay_server_config(&relay).unwrap());
        assert_eq!(server_cfg.send_tls13_tickets, 0);
        let client_cfg =
            Arc::new(relay_client_config(&client_id, Some(relay.device_id())).unwrap());
        let mut client = ClientConnection::new(client_cfg, server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            peer_device_id(server.peer_certificates().unwrap()),
            Some(client_id.device_id())
        );
        assert_eq!(server.alpn_protocol(), Some(crate::relay::ALPN));
        // TLS 1.2 is offered too (Syncthing's relay clients set MinVersion 1.2).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(DeviceIdVerifier::new(
            &provider,
            PeerPolicy::new(|_| PeerDecision::Accept),
        ));
        let mut tls12 = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(
                vec![client_id.certificate_der().clone()],
                client_id.private_key_der(),
            )
            .unwrap();
        tls12.alpn_protocols = vec![crate::relay::ALPN.to_vec()];
        let mut client = ClientConnection::new(Arc::new(tls12), server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        // Without a certificate, no handshake.
        let anonymous = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let mut client = ClientConnection::new(Arc::new(anonymous), server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
        assert!(handshake(&mut client, &mut server).is_err());
        // A client pinned to another relay refuses this one.
        let wrong = Arc::new(relay_client_config(&client_id, Some(other.device_id())).unwrap());
        let mut client = ClientConnection::new(wrong, server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        assert!(handshake(&mut client, &mut server).is_err());
    }

    #[test]
    fn https_servers_take_clients_with_or_without_a_certificate_and_clients_pin_them() {
        let (server_id, client_id, other) = (
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
            Identity::generate().unwrap(),
        );
        let server_cfg = Arc::new(https_server_config(&server_id).unwrap());
        // A pinned client presenting its certificate: the server learns its ID.
        let client_cfg =
            Arc::new(https_client_config(&client_id, Some(server_id.device_id())).unwrap());
        let mut client = ClientConnection::new(client_cfg, server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            peer_device_id(server.peer_certificates().unwrap()),
            Some(client_id.device_id())
        );
        // A client without a certificate (a lookup) gets in too.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(DeviceIdVerifier::new(
            &provider,
            PeerPolicy::new(|_| PeerDecision::Accept),
        ));
        let anonymous = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let mut client = ClientConnection::new(Arc::new(anonymous), server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert!(server.peer_certificates().is_none());
        // A client pinned to another ID refuses the server.
        let wrong = Arc::new(https_client_config(&client_id, Some(other.device_id())).unwrap());
        let mut client = ClientConnection::new(wrong, server_name()).unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        assert!(handshake(&mut client, &mut server).is_err());
    }
}
