//! A device's identity: a self-signed certificate and its private key.
//!
//! Generation and PEM (de)serialisation live here; where the PEM files are kept, and with which
//! permissions, is the daemon's business.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::DeviceId;

/// The common name written into generated certificates.
pub const CERT_COMMON_NAME: &str = "peerfold";

/// A certificate and its private key.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    device_id: DeviceId,
}

/// Why an identity could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen could not generate the key or certificate.
    #[error("generating the certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate PEM holds no certificate.
    #[error("no certificate found in the certificate PEM: {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    /// The key PEM holds no private key.
    #[error("no private key found in the key PEM: {0}")]
    KeyPem(rustls::pki_types::pem::Error),
    /// The key does not belong to the certificate, or is of an unsupported kind.
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(rustls::Error),
}

impl Identity {
    /// Generates a fresh Ed25519 key and a self-signed certificate for it.
    pub fn generate() -> Result<Self, IdentityError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec![CERT_COMMON_NAME.to_owned()])?;
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, CERT_COMMON_NAME);
        params.distinguished_name = name;
        // A random serial keeps two certificates made in the same second distinct.
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key_pair)?;
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        Self::from_parts(cert.der().clone(), key)
    }

    /// Reads an identity from PEM text, checking the key belongs to the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        let cert =
            CertificateDer::from_pem_slice(cert_pem).map_err(IdentityError::CertificatePem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(IdentityError::KeyPem)?;
        Self::from_parts(cert, key)
    }

    /// Reads an identity from a DER certificate and a PKCS#8 DER key (tools that keep
    /// many identities, such as the discovery benchmark's pool), checking they match.
    pub fn from_der(cert_der: &[u8], pkcs8_key_der: &[u8]) -> Result<Self, IdentityError> {
        let key = PrivatePkcs8KeyDer::from(pkcs8_key_der.to_vec());
        Self::from_parts(CertificateDer::from(cert_der.to_vec()), key.into())
    }

    fn from_parts(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(IdentityError::Mismatch)?;
        rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key)
            .keys_match()
            .map_err(IdentityError::Mismatch)?;
        let device_id = DeviceId::from_certificate_der(&cert);
        Ok(Self {
            cert,
            key,
            device_id,
        })
    }

    /// This device's ID.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The certificate in DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A copy of the private key in DER.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The certificate as PEM text.
    pub fn certificate_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.cert)
    }

    /// The private key as PEM text (PKCS#8). Keep it private.
    pub fn private_key_pem(&self) -> String {
        pem_block("PRIVATE KEY", self.key.secret_der())
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let body = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_round_trips_through_pem() {
        let identity = Identity::generate().unwrap();
        let again = Identity::from_pem(
            identity.certificate_pem().as_bytes(),
            identity.private_key_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(again.device_id(), identity.device_id());
        assert_eq!(
            identity.device_id(),
            DeviceId::from_certificate_der(identity.certificate_der())
        );
    }

    #[test]
    fn an_identity_reads_back_from_der_and_a_foreign_key_is_refused() {
        let identity = Identity::generate().unwrap();
        let key = identity.private_key_der();
        let again = Identity::from_der(identity.certificate_der(), key.secret_der()).unwrap();
        assert_eq!(again.device_id(), identity.device_id());
        let other = Identity::generate().unwrap().private_key_der();
        assert!(Identity::from_der(identity.certificate_der(), other.secret_der()).is_err());
    }

    #[test]
    fn two_identities_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.device_id(), b.device_id());
    }

    #[test]
    fn mismatched_or_garbage_pem_is_refused() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let mismatch = Identity::from_pem(
            a.certificate_pem().as_bytes(),
            b.private_key_pem().as_bytes(),
        );
        assert!(matches!(mismatch, Err(IdentityError::Mismatch(_))));
        assert!(matches!(
            Identity::from_pem(b"garbage", a.private_key_pem().as_bytes()),
            Err(IdentityError::CertificatePem(_))
        ));
        assert!(matches!(
            Identity::from_pem(a.certificate_pem().as_bytes(), b"garbage"),
            Err(IdentityError::KeyPem(_))
        ));
    }
}
