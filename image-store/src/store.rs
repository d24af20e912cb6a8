//! [`ImageStore`]: the content store, snapshots and metadata under one root, and the pull entry
//! point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::metadata::{ImageRecord, MetadataError, MetadataStore};
use crate::pull::{PullError, PullOptions};
use crate::reference::Reference;
use crate::registry::RegistryConfig;
use crate::snapshot::{SnapshotError, Snapshotter, SnapshotterMode, Usage};

/// A stored image.
pub type Image = ImageRecord;

/// Configuration of an [`ImageStore`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The state directory (`/var/lib/berth`): `content/`, `snapshots/`, `metadata.db`.
    pub root: PathBuf,
    /// Registry access.
    pub registry: RegistryConfig,
    /// How many layers one pull fetches and unpacks at once.
    pub max_concurrent_layers: usize,
    /// Overlay, native (copy), or overlay when a probe mount works (default).
    pub snapshotter: SnapshotterMode,
}

impl StoreConfig {
    /// Defaults for `root`: HTTPS everywhere, 3 layers at once.
    pub fn new(root: &Path) -> Self {
        StoreConfig {
            root: root.to_owned(),
            registry: RegistryConfig::default(),
            max_concurrent_layers: 3,
            snapshotter: SnapshotterMode::Auto,
        }
    }
}

/// Errors of opening or querying the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The metadata database failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The snapshotter failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A blocking task of the store's died (a panic).
    #[error("image store task failed: {0}")]
    Task(String),
}

/// Images: pulled, stored, unpacked.
pub struct ImageStore {
    config: StoreConfig,
    content: ContentStore,
    meta: MetadataStore,
    snapshots: Snapshotter,
    layer_locks: Mutex<HashMap<Digest, Weak<tokio::sync::Mutex<()>>>>,
    /// Pulls hold it shared, GC exclusively.
    gc_lock: tokio::sync::RwLock<()>,
    /// Registry HTTP clients reused across pulls.
    clients: crate::registry::ClientCache,
}

impl ImageStore {
    /// Opens (creating) the store and removes snapshot directories a crash left unrecorded.
    /// One process per root.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.root).map_err(|source| ContentError::Io {
            op: "create dir",
            path: config.root.clone(),
            source,
        })?;
        let content = ContentStore::open(&config.root)?;
        let meta = MetadataStore::open(&config.root.join("metadata.db"))?;
        let snapshots = Snapshotter::open_with(&config.root, meta.clone(), config.snapshotter)?;
        snapshots.clean_orphans()?;
        // Scratch space of imports a crash interrupted.
        let tmp = config.root.join("tmp");
        if let Err(e) = std::fs::remove_dir_all(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %e, "cannot clean scratch dir");
            }
        }
        Ok(ImageStore {
            config,
            content,
            meta,
            snapshots,
            layer_locks: Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
            clients: Default::default(),
        })
    }

    /// Pulls `reference`: manifest (platform-selected from an index), config, and every layer
    /// verified and unpacked into snapshots. Returns the stored image.
    pub async fn pull(
        &self,
        reference: &Reference,
        opts: &PullOptions,
    ) -> Result<Image, PullError> {
        let _shared = self.gc_lock.read().await;
        let none = crate::pull_progress::Reporter::default();
        crate::pull::pull(self, reference, opts, &none).await
    }

    /// [`ImageStore::pull`], reporting every layer's progress to `progress` as it goes
    /// (see [`crate::pull_progress`] for the order of the events).
    pub async fn pull_with_progress(
        &self,
        reference: &Reference,
        opts: &PullOptions,
        progress: std::sync::Arc<dyn crate::PullProgress>,
    ) -> Result<Image, PullError> {
        let _shared = self.gc_lock.read().await;
        let progress = crate::pull_progress::Reporter::new(Some(progress));
        crate::pull::pull(self, reference, opts, &progress).await
    }

    /// The image a name (`registry/repo:tag`, `registry/repo@digest`) or ID points at.
    /// Short names are normalised (`busybox` finds `docker.io/library/busybox:latest`).
    pub fn image(&self, name_or_id: &str) -> Result<Option<Image>, StoreError> {
        Ok(self.meta.get_image(&self.normalise_name(name_or_id))?)
    }

    /// A name as stored: references normalised, image IDs (`sha256:…`) unchanged.
    pub(crate) fn normalise_name(&self, name_or_id: &str) -> String {
        if name_or_id.parse::<Digest>().is_ok() {
            return name_or_id.to_owned();
        }
        match self.meta.get_image(name_or_id) {
            Ok(Some(_)) => name_or_id.to_owned(),
            _ => name_or_id
                .parse::<Reference>()
                .map_or_else(|_| name_or_id.to_owned(), |r| r.to_string()),
        }
    }

    /// Every stored image.
    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        Ok(self.meta.list_images()?)
    }

    /// Disk use of the unpacked snapshots (for CRI ImageFsInfo).
    pub fn fs_usage(&self) -> Result<Usage, StoreError> {
        Ok(self.snapshots.total_usage()?)
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The metadata database.
    pub fn metadata(&self) -> &MetadataStore {
        &self.meta
    }

    /// The snapshotter.
    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    /// The registry HTTP clients kept across pulls.
    pub(crate) fn clients(&self) -> &crate::registry::ClientCache {
        &self.clients
    }

    /// The lock that keeps GC apart from pulls and imports (they hold it shared).
    pub(crate) fn gc_lock(&self) -> &tokio::sync::RwLock<()> {
        &self.gc_lock
    }

    /// The in-process lock serialising work on one layer blob.
    pub(crate) fn layer_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.layer_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, w| w.strong_count() > 0);
        if let Some(l) = locks.get(digest).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(digest.clone(), Arc::downgrade(&l));
        l
    }
}
