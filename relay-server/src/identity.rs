//! The relay's certificate and key: made on first start in the data directory and kept, so
//! its device ID (which clients pin with `?id=`) survives restarts.

use std::path::Path;

use peerfold_protocol::identity::Identity;

use crate::error::Error;

/// The certificate and key in `data`, made on first start. Blocks: call it off the runtime.
pub(crate) fn load_or_create(data: &Path) -> Result<Identity, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(data).map_err(io(data))?;
    let cert_path = data.join("cert.pem");
    let key_path = data.join("key.pem");
    if cert_path.exists() {
        let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let key = std::fs::read(&key_path).map_err(io(&key_path))?;
        return Identity::from_pem(&cert, &key).map_err(|source| Error::Identity {
            path: cert_path,
            source,
        });
    }
    let identity = Identity::generate().map_err(|source| Error::Identity {
        path: cert_path.clone(),
        source,
    })?;
    // The key first, private from the start; the certificate last, because its presence is
    // what says "the identity exists".
    write_private(&key_path, identity.private_key_pem().as_bytes()).map_err(io(&key_path))?;
    let temporary = data.join("cert.pem.tmp");
    std::fs::write(&temporary, identity.certificate_pem()).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &cert_path).map_err(io(&cert_path))?;
    tracing::info!(path = %cert_path.display(), "made a new relay identity");
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
    fn the_identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.device_id(), again.device_id());
    }
}
