//! Files moving now, in both directions, for the GUI's Transfers page: downloads the
//! puller has under way (bytes the file needs, bytes it has), and uploads, the files
//! peers fetched blocks of in the last few seconds (there is no "start" or "end" of an
//! upload in the protocol: a peer just asks for blocks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use peerfold_protocol::DeviceId;

/// An upload not served a block for this long is over.
const UPLOAD_IDLE: Duration = Duration::from_secs(5);
/// Uploads remembered at most (a peer fetching many small files at once).
const MAX_UPLOADS: usize = 1024;

/// A file being downloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// The name.
    pub name: String,
    /// The file's size.
    pub bytes_total: u64,
    /// Bytes it has: kept from an earlier attempt, copied from local files, fetched.
    pub bytes_done: u64,
    /// The peers it is fetched from.
    pub sources: Vec<DeviceId>,
    /// How long it has been under way.
    pub elapsed: Duration,
}

/// A file a peer is fetching from this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The name.
    pub name: String,
    /// The peer.
    pub device: DeviceId,
    /// Bytes served to it since it started.
    pub bytes_sent: u64,
    /// How long ago it started.
    pub elapsed: Duration,
}

/// The transfers of one folder.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    inner: Arc<Mutex<Moving>>,
}

#[derive(Debug, Default)]
struct Moving {
    downloads: HashMap<String, Progress>,
    uploads: HashMap<(DeviceId, String), Served>,
}

#[derive(Debug)]
struct Progress {
    total: u64,
    done: u64,
    sources: Vec<DeviceId>,
    started: Instant,
}

#[derive(Debug)]
struct Served {
    bytes: u64,
    started: Instant,
    last: Instant,
}

impl Transfers {
    fn moving(&self) -> MutexGuard<'_, Moving> {
        // Counters only: a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a download of `name` that has `done` of `total` bytes; it ends when the
    /// returned guard is dropped.
    pub(crate) fn download(
        &self,
        name: &str,
        total: u64,
        done: u64,
        sources: &[DeviceId],
    ) -> DownloadGuard {
        let progress = Progress {
            total,
            done: done.min(total),
            sources: sources.to_vec(),
            started: Instant::now(),
        };
        self.moving().downloads.insert(name.to_owned(), progress);
        DownloadGuard {
            inner: self.inner.clone(),
            name: name.to_owned(),
        }
    }

    /// Records `bytes` of `name` served to `device`.
    pub(crate) fn served(&self, device: DeviceId, name: &str, bytes: u64) {
        let now = Instant::now();
        let mut moving = self.moving();
        if moving.uploads.len() >= MAX_UPLOADS {
            moving
                .uploads
                .retain(|_, s| now.duration_since(s.last) < UPLOAD_IDLE);
        }
        let key = (device, name.to_owned());
        if moving.uploads.len() >= MAX_UPLOADS && !moving.uploads.contains_key(&key) {
            return;
        }
        let served = moving.uploads.entry(key).or_insert(Served {
            bytes: 0,
            started: now,
            last: now,
        });
        served.bytes += bytes;
        served.last = now;
    }

    /// What moves now, downloads and uploads, by name.
    pub(crate) fn snapshot(&self) -> (Vec<Download>, Vec<Upload>) {
        let now = Instant::now();
        let mut moving = self.moving();
        moving
            .uploads
            .retain(|_, s| now.duration_since(s.last) < UPLOAD_IDLE);
        let mut downloads: Vec<Download> = moving
            .downloads
            .iter()
            .map(|(name, p)| Download {
                name: name.clone(),
                bytes_total: p.total,
                bytes_done: p.done,
                sources: p.sources.clone(),
                elapsed: now.duration_since(p.started),
            })
            .collect();
        let mut uploads: Vec<Upload> = moving
            .uploads
            .iter()
            .map(|((device, name), s)| Upload {
                name: name.clone(),
                device: *device,
                bytes_sent: s.bytes,
                elapsed: now.duration_since(s.started),
            })
            .collect();
        downloads.sort_by(|a, b| a.name.cmp(&b.name));
        uploads.sort_by(|a, b| (&a.name, a.device).cmp(&(&b.name, b.device)));
        (downloads, uploads)
    }
}

impl super::Folder {
    /// Files moving now: downloads under way and recent uploads, by name.
    pub fn transfers(&self) -> (Vec<Download>, Vec<Upload>) {
        self.transfers.snapshot()
    }
}

/// A download under way; dropping it ends it (installed, failed or abandoned alike).
#[derive(Debug)]
pub(crate) struct DownloadGuard {
    inner: Arc<Mutex<Moving>>,
    name: String,
}

impl DownloadGuard {
    /// `bytes` more of the file are in place.
    pub(crate) fn add(&self, bytes: u64) {
        let mut moving = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(progress) = moving.downloads.get_mut(&self.name) {
            progress.done = (progress.done + bytes).min(progress.total);
        }
    }
}

impl Drop for DownloadGuard {
    fn drop(&mut self) {
        let mut moving = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        moving.downloads.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::try_from(&[n; 32][..]).unwrap()
    }

    #[test]
    fn a_download_shows_its_progress_until_its_guard_goes() {
        let transfers = Transfers::default();
        let guard = transfers.download("big.bin", 100, 30, &[device(1)]);
        guard.add(50);
        let (downloads, uploads) = transfers.snapshot();
        assert!(uploads.is_empty());
        assert_eq!(downloads.len(), 1);
        assert_eq!(
            (downloads[0].bytes_done, downloads[0].bytes_total),
            (80, 100)
        );
        assert_eq!(downloads[0].sources, [device(1)]);
        guard.add(500);
        assert_eq!(
            transfers.snapshot().0[0].bytes_done,
            100,
            "never past the size"
        );
        drop(guard);
        assert!(transfers.snapshot().0.is_empty());
    }

    #[test]
    fn uploads_add_up_per_peer_and_file() {
        let transfers = Transfers::default();
        transfers.served(device(1), "a", 10);
        transfers.served(device(1), "a", 5);
        transfers.served(device(2), "a", 7);
        let (_, uploads) = transfers.snapshot();
        let sent: Vec<(DeviceId, u64)> = uploads.iter().map(|u| (u.device, u.bytes_sent)).collect();
        assert_eq!(sent, [(device(1), 15), (device(2), 7)]);
    }
}
