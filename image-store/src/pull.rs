//! `ImageStore::pull`: resolve a reference, fetch manifest and config, fetch + verify + unpack
//! the layers in parallel (bounded), check diff_ids, commit the snapshots bottom-up, and record
//! the image.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::chain_id::ChainId;
use crate::content::ContentError;
use crate::digest::Digest;
use crate::layer_fetch::{fetch_layer, fetch_small_blob, LayerError, LayerJob};
use crate::manifest::{ImageConfig, Manifest, ManifestError};
use crate::metadata::{now_unix, ImageRecord, MetadataError};
use crate::platform::Platform;
use crate::pull_progress::{LayerEvent, Reporter};
use crate::reference::Reference;
use crate::registry::{Credentials, RegistryClient, RegistryError};
use crate::snapshot::{LayerDir, SnapshotError};
use crate::store::ImageStore;
use crate::unpack::{UnpackOptions, Unpacked};

/// Options of one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registry credentials.
    pub credentials: Credentials,
    /// The platform to select from an index (default: this node's).
    pub platform: Option<Platform>,
}

/// Why a pull failed. Every message starts with `pull <reference>:`.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Resolving the reference or fetching the manifest failed.
    #[error("pull {reference}: {source}")]
    Registry {
        /// The reference pulled.
        reference: String,
        /// The cause.
        source: RegistryError,
    },
    /// The manifest, index or config is unusable.
    #[error("pull {reference}: {source}")]
    Manifest {
        /// The reference pulled.
        reference: String,
        /// The cause.
        source: ManifestError,
    },
    /// The config blob could not be fetched.
    #[error("pull {reference}: config {digest}: {source}")]
    Config {
        /// The reference pulled.
        reference: String,
        /// The config blob.
        digest: Digest,
        /// The cause.
        source: LayerError,
    },
    /// A layer could not be fetched, verified or unpacked.
    #[error("pull {reference}: layer {digest}: {source}")]
    Layer {
        /// The reference pulled.
        reference: String,
        /// The layer blob.
        digest: Digest,
        /// The cause.
        source: LayerError,
    },
    /// A layer unpacked to another tar than the config's diff_id says.
    #[error("pull {reference}: layer {digest}: diff_id mismatch (config says {expected}, layer is {actual})")]
    DiffId {
        /// The reference pulled.
        reference: String,
        /// The layer blob.
        digest: Digest,
        /// The config's diff_id.
        expected: Digest,
        /// The digest of the uncompressed layer.
        actual: Digest,
    },
    /// Storing a blob failed.
    #[error("pull {reference}: {source}")]
    Content {
        /// The reference pulled.
        reference: String,
        /// The cause.
        source: ContentError,
    },
    /// Committing a snapshot failed.
    #[error("pull {reference}: {source}")]
    Snapshot {
        /// The reference pulled.
        reference: String,
        /// The cause.
        source: SnapshotError,
    },
    /// Recording the image failed.
    #[error("pull {reference}: {source}")]
    Metadata {
        /// The reference pulled.
        reference: String,
        /// The cause.
        source: MetadataError,
    },
}

const MAX_CONFIG: u64 = 16 << 20;
const ATTEMPTS: u32 = 3;

pub(crate) async fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
    progress: &Reporter,
) -> Result<ImageRecord, PullError> {
    let rs = reference.to_string();
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let reg = |source| PullError::Registry {
        reference: rs.clone(),
        source,
    };
    let client = RegistryClient::for_registry_cached(
        &store.config().registry,
        reference.registry(),
        &opts.credentials,
        store.clients(),
    )
    .map_err(reg)?;
    let man = |source| PullError::Manifest {
        reference: rs.clone(),
        source,
    };
    let cont = |source| PullError::Content {
        reference: rs.clone(),
        source,
    };

    let (bytes, top_digest) = retry(
        || client.manifest(reference, None),
        RegistryError::is_transient,
    )
    .await
    .map_err(reg)?;
    let (manifest, manifest_digest, manifest_bytes, index) = match Manifest::parse(
        &top_digest,
        &bytes,
    )
    .map_err(man)?
    {
        Manifest::Image(m) => (m, top_digest, bytes, None),
        Manifest::Index(idx) => {
            let entry = idx.select(&top_digest, &platform).map_err(man)?.clone();
            debug!(image = %rs, platform = %platform, manifest = %entry.digest, "platform selected");
            let (mbytes, mdigest) = retry(
                || client.manifest(reference, Some(&entry.digest)),
                RegistryError::is_transient,
            )
            .await
            .map_err(reg)?;
            let Manifest::Image(m) = Manifest::parse(&mdigest, &mbytes).map_err(man)? else {
                return Err(man(ManifestError::UnsupportedMediaType {
                    digest: mdigest,
                    media_type: "nested index".into(),
                }));
            };
            (m, mdigest, mbytes, Some((top_digest, bytes)))
        }
    };

    let config_digest = manifest.config.digest.clone();
    let config_bytes = fetch_small_blob(
        store.content(),
        &client,
        reference,
        &manifest.config,
        MAX_CONFIG,
    )
    .await
    .map_err(|source| PullError::Config {
        reference: rs.clone(),
        digest: config_digest.clone(),
        source,
    })?;
    let config = ImageConfig::parse(&config_digest, &config_bytes).map_err(man)?;
    let diff_ids = config.rootfs.diff_ids.clone();
    if diff_ids.len() != manifest.layers.len() {
        return Err(man(ManifestError::LayerCount {
            digest: config_digest,
            diff_ids: diff_ids.len(),
            layers: manifest.layers.len(),
        }));
    }
    let chains = ChainId::chain(&diff_ids);
    for (index, desc) in manifest.layers.iter().enumerate() {
        let size = desc.size;
        progress.report(&desc.digest, LayerEvent::Resolved { index, size });
    }

    // Layers: all in parallel (bounded), each into its own uncommitted directory.
    let limit = Arc::new(Semaphore::new(store.config().max_concurrent_layers.max(1)));
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    let mut guards = Vec::new();
    let mut task_layer = std::collections::HashMap::new();
    for (i, desc) in manifest.layers.iter().enumerate() {
        // One fetch per layer blob in this process; a second pull waits and then reuses it.
        let guard = store.layer_lock(&desc.digest).lock_owned().await;
        guards.push(guard);
        let have_snapshot =
            store
                .snapshots()
                .has_layer(&chains[i])
                .map_err(|source| PullError::Snapshot {
                    reference: rs.clone(),
                    source,
                })?;
        if have_snapshot && store.content().contains(&desc.digest) {
            debug!(image = %rs, layer = %desc.digest, "layer already unpacked");
            progress.report(&desc.digest, LayerEvent::Exists);
            continue;
        }
        let job = LayerJob {
            reference: reference.clone(),
            desc: desc.clone(),
            content: store.content().clone(),
            snapshots: store.snapshots().clone(),
            unpack: UnpackOptions::default(),
            progress: progress.clone(),
        };
        let client = Arc::clone(&client);
        let limit = Arc::clone(&limit);
        let handle = tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closed");
            let r = retry(|| fetch_layer(&job, &client), LayerError::is_transient).await;
            (i, r)
        });
        task_layer.insert(handle.id(), i);
    }
    let mut done: Vec<Option<(Unpacked, LayerDir)>> =
        (0..manifest.layers.len()).map(|_| None).collect();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = match joined {
            Ok(x) => x,
            Err(e) => {
                let i = task_layer.get(&e.id()).copied().unwrap_or(0);
                let error = format!("unpack task failed: {e}");
                progress.report(&manifest.layers[i].digest, LayerEvent::Failed { error });
                first_error.get_or_insert(PullError::Layer {
                    reference: rs.clone(),
                    digest: manifest.layers[i].digest.clone(),
                    source: LayerError::Task(e),
                });
                continue;
            }
        };
        match r {
            Ok(x) => done[i] = Some(x),
            Err(source) => {
                let error = source.to_string();
                progress.report(&manifest.layers[i].digest, LayerEvent::Failed { error });
                if first_error.is_none() {
                    // Stop the other layers: their directories are dropped (removed).
                    tasks.abort_all();
                }
                first_error.get_or_insert(PullError::Layer {
                    reference: rs.clone(),
                    digest: manifest.layers[i].digest.clone(),
                    source,
                });
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    // Commit bottom-up, checking each diff_id.
    for (i, slot) in done.into_iter().enumerate() {
        let Some((unpacked, dir)) = slot else {
            continue;
        };
        if unpacked.diff_id != diff_ids[i] {
            let error = format!("diff_id mismatch (config says {})", diff_ids[i]);
            progress.report(&manifest.layers[i].digest, LayerEvent::Failed { error });
            return Err(PullError::DiffId {
                reference: rs.clone(),
                digest: manifest.layers[i].digest.clone(),
                expected: diff_ids[i].clone(),
                actual: unpacked.diff_id,
            });
        }
        let parent = i.checked_sub(1).map(|p| &chains[p]);
        dir.commit(&chains[i], parent)
            .map_err(|source| PullError::Snapshot {
                reference: rs.clone(),
                source,
            })?;
        progress.report(&manifest.layers[i].digest, LayerEvent::Done);
    }
    drop(guards);

    // Manifest (and index) blobs last: the image is complete once they are in.
    store
        .content()
        .write_blob(&manifest_digest, &manifest_bytes)
        .map_err(cont)?;
    let index_digest = match index {
        Some((d, b)) => {
            store.content().write_blob(&d, &b).map_err(cont)?;
            Some(d)
        }
        None => None,
    };
    let size = manifest_bytes.len() as u64
        + manifest.config.size
        + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    let record = ImageRecord {
        manifest_digest: manifest_digest.clone(),
        config_digest,
        index_digest,
        size,
        platform: config.platform(),
        pinned: false,
        names: Vec::new(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        diff_ids,
        chain_id: chains.last().cloned(),
        created_unix: now_unix(),
    };
    let meta = |source| PullError::Metadata {
        reference: rs.clone(),
        source,
    };
    let tagged = reference.without_digest();
    let by_digest = format!(
        "{}@{}",
        reference.name(),
        record.index_digest.as_ref().unwrap_or(&manifest_digest)
    );
    let name = if reference.digest().is_some() && reference.tag().is_none() {
        by_digest.clone()
    } else {
        tagged.to_string()
    };
    store
        .metadata()
        .put_image(&record, Some(&name))
        .map_err(meta)?;
    let stored = store
        .metadata()
        .put_image(&record, Some(&by_digest))
        .map_err(meta)?;
    info!(image = %rs, manifest = %manifest_digest, layers = record.layers.len(), "pulled");
    Ok(stored)
}

/// Runs `f` up to [`ATTEMPTS`] times while its error is transient, with a short backoff.
async fn retry<T, E, F, Fut>(mut f: F, transient: fn(&E) -> bool) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                warn!(attempt, error = %e, "transient registry error; retrying");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
