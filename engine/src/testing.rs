//! The in-process test tier: a device's owners (live configuration, store, folders, peer
//! registry, events) on a temporary home, without sockets or binaries, so sessions, the
//! puller and offers can be tested over in-memory links and fake peers.

use std::path::PathBuf;
use std::sync::Arc;

use peerfold_protocol::DeviceId;
use tokio::sync::mpsc;

use crate::config::live::LiveConfig;
use crate::config::{Address, Config, DeviceConfig, FolderConfig, Home};
use crate::disk::scanner::MARKER_DIR;
use crate::events::{Event, EventLog};
use crate::folder::offers::{ConfigRequest, Offers};
use crate::folder::registry::FolderRegistry;
use crate::folder::{Folder, FolderHandle};
use crate::life::Life;
use crate::peers::PeerRegistry;
use crate::peers::punch::{HolePunching, NoPunching};
use crate::peers::session::SessionContext;
use crate::store::{LocalChange, StoreHandle};

/// One device on a temporary home.
pub(crate) struct Node {
    /// Holds the home and the folder until the node is dropped.
    _dir: tempfile::TempDir,
    pub(crate) me: DeviceId,
    pub(crate) context: Arc<SessionContext>,
    /// Configuration requests the sessions made.
    pub(crate) requests: mpsc::Receiver<ConfigRequest>,
}

impl Node {
    /// A device with folder `docs` (at `DIR/docs`), sharing it with each of `peers`.
    pub(crate) fn new(peers: &[DeviceId]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path().join("home"))).unwrap();
        let me = home.init(|_| {}).unwrap().device_id();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(root.join(MARKER_DIR)).unwrap();
        let mut config = Config::new("node".into(), "key".into());
        let mut folder = FolderConfig::new("docs".into(), "Docs".into(), root);
        for peer in peers {
            config.devices.push(DeviceConfig::new(
                *peer,
                String::new(),
                vec![Address::Dynamic],
            ));
            folder.devices.push(*peer);
        }
        config.folders.push(folder);
        home.save_config(&config).unwrap();
        let store = StoreHandle::new(home.store().unwrap());
        let live = Arc::new(LiveConfig::new(home, config));
        let events = Arc::new(EventLog::default());
        let folders = Arc::new(FolderRegistry::default());
        let (tx, requests) = mpsc::channel(16);
        let offers = Arc::new(Offers {
            config: live.clone(),
            folders: folders.clone(),
            store: store.clone(),
            events: events.clone(),
            requests: tx,
        });
        let context = Arc::new(SessionContext {
            me,
            rates: Arc::default(),
            config: live,
            store,
            folders,
            offers,
            registry: Arc::new(PeerRegistry::new(me)),
            events,
            punching: Arc::new(HolePunching::new(Arc::new(NoPunching))),
            life: Life::default(),
        });
        let node = Self {
            _dir: dir,
            me,
            context,
            requests,
        };
        node.start_folder();
        node
    }

    /// Registers the `docs` folder as running (no tasks: tests drive it).
    fn start_folder(&self) {
        let c = &self.context;
        let config = c.config.get().folders[0].clone();
        let idx = c
            .store
            .write_blocking(|s| s.ensure_folder("docs"))
            .map_err(|e: crate::store::StoreError| e)
            .unwrap();
        let folder = Arc::new(Folder::new(
            config,
            idx,
            self.me,
            c.store.clone(),
            c.events.clone(),
            c.life.child_token(),
        ));
        c.folders.insert(folder);
    }

    /// The running `docs` folder.
    pub(crate) fn folder(&self) -> FolderHandle {
        self.context.folders.get("docs").unwrap()
    }

    /// The folder's root.
    pub(crate) fn root(&self) -> PathBuf {
        self.folder().path()
    }

    /// Writes a file into the folder and records it as a scan would.
    pub(crate) fn write_file(&self, name: &str, data: &[u8]) {
        let path = self.root().join(name);
        std::fs::write(&path, data).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let mut chunker = peerfold_protocol::chunking::Chunker::new();
        let blocks = chunker.blocks(data, data.len() as u64).unwrap();
        let change = LocalChange {
            previous: None,
            name: name.into(),
            kind: crate::model::entry::FileKind::File,
            size: data.len() as u64,
            permissions: 0o644,
            modified: crate::disk::scanner::walk_timestamp(&meta),
            deleted: false,
            invalid: false,
            symlink_target: String::new(),
            blocks: Some(blocks),
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        };
        let (idx, me) = (self.folder().idx, self.me.short());
        self.context
            .store
            .write_blocking(|s| s.apply_local_changes(idx, me, &[change]))
            .map_err(|e: crate::store::StoreError| e)
            .unwrap();
    }

    /// Adds `peer` as a device and shares `docs` with it.
    pub(crate) async fn know(&self, peer: DeviceId) {
        let live = &self.context.config;
        let change = live.begin().await;
        let mut config = (*live.get()).clone();
        config.devices.push(DeviceConfig::new(
            peer,
            String::new(),
            vec![Address::Dynamic],
        ));
        config.folders[0].devices.push(peer);
        self.folder().set_config(config.folders[0].clone());
        live.commit(&change, config).await.unwrap();
    }

    /// Every event logged so far.
    pub(crate) async fn events(&self) -> Vec<Arc<Event>> {
        self.context
            .events
            .wait(0, |_| true, 0, std::time::Duration::ZERO)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}
