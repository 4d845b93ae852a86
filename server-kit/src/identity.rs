//! A server's certificate and key: made on first start in its data directory and kept.

use std::path::{Path, PathBuf};

use peerfold_protocol::identity::{Identity, IdentityError};

/// Why the identity could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    /// Reading or writing the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The files hold no usable certificate and key, or none could be made.
    #[error("identity in {path}: {source}")]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// What was wrong.
        source: IdentityError,
    },
}

/// The certificate and key in `data` (`cert.pem`, `key.pem`), made on first start. Blocks:
/// call it off the runtime.
pub fn load_or_create(data: &Path) -> Result<Identity, IdentityFileError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| IdentityFileError::Io { path, source }
    };
    std::fs::create_dir_all(data).map_err(io(data))?;
    let cert_path = data.join("cert.pem");
    let key_path = data.join("key.pem");
    if cert_path.exists() {
        let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let key = std::fs::read(&key_path).map_err(io(&key_path))?;
        return Identity::from_pem(&cert, &key).map_err(|source| IdentityFileError::Identity {
            path: cert_path,
            source,
        });
    }
    let identity = Identity::generate().map_err(|source| IdentityFileError::Identity {
        path: cert_path.clone(),
        source,
    })?;
    // The key first, private from the start; the certificate last, because its presence is
    // what says "the identity exists".
    write_private(&key_path, identity.private_key_pem().as_bytes()).map_err(io(&key_path))?;
    let temporary = data.join("cert.pem.tmp");
    std::fs::write(&temporary, identity.certificate_pem()).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &cert_path).map_err(io(&cert_path))?;
    tracing::info!(path = %cert_path.display(), "made a new server identity");
    Ok(identity)
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_made_once_and_kept_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.device_id(), again.device_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
        }
        std::fs::write(dir.path().join("cert.pem"), b"not a certificate").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityFileError::Identity { .. })
        ));
    }
}
