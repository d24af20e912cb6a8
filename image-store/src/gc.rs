//! Removing images and garbage-collecting blobs and snapshots nothing references.
//!
//! Roots: every image record (its manifest, index, config and layer blobs, and the snapshots of
//! every prefix of its layer chain) and every active or view snapshot (a container's, with its
//! parent chain). Everything else is removed; one failed removal is reported and never stops
//! the rest.

use std::collections::{HashMap, HashSet};

use tracing::{info, warn};

use crate::chain_id::ChainId;
use crate::content::ContentError;
use crate::digest::Digest;
use crate::metadata::{ImageRecord, MetadataError, SnapshotKind};
use crate::snapshot::{Detached, SnapshotError};
use crate::store::{ImageStore, StoreError};

/// Why an image could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No image with that name or ID.
    #[error("remove image {0}: not found")]
    NotFound(String),
    /// The image is pinned (the sandbox image, for one).
    #[error("remove image {0}: image is pinned")]
    Pinned(String),
    /// The metadata database failed.
    #[error("remove image {name}: {source}")]
    Metadata {
        /// The name or ID given.
        name: String,
        /// The cause.
        source: MetadataError,
    },
}

/// One object GC could not remove.
#[derive(Debug, thiserror::Error)]
pub enum GcFailure {
    /// A blob.
    #[error("gc: {0}")]
    Blob(#[from] ContentError),
    /// A snapshot.
    #[error("gc: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// What a GC run did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs_removed: Vec<Digest>,
    /// Snapshot keys removed.
    pub snapshots_removed: Vec<String>,
    /// Objects that could not be removed (the rest were).
    pub failures: Vec<GcFailure>,
}

impl ImageStore {
    /// Removes one name from an image; the image stays (possibly nameless, until GC).
    pub fn untag(&self, name: &str) -> Result<ImageRecord, RemoveError> {
        let name = &self.normalise_name(name);
        self.metadata().untag(name).map_err(|e| match e {
            MetadataError::ImageNotFound(_) => RemoveError::NotFound(name.to_owned()),
            source => RemoveError::Metadata {
                name: name.to_owned(),
                source,
            },
        })
    }

    /// Deletes an image record with all its names (its content goes at the next GC). Pinned
    /// images are kept unless `force`.
    pub fn remove_image(&self, name_or_id: &str, force: bool) -> Result<ImageRecord, RemoveError> {
        let name_or_id = &self.normalise_name(name_or_id);
        let meta = |source| RemoveError::Metadata {
            name: name_or_id.to_owned(),
            source,
        };
        let rec = self
            .metadata()
            .get_image(name_or_id)
            .map_err(meta)?
            .ok_or_else(|| RemoveError::NotFound(name_or_id.to_owned()))?;
        if rec.pinned && !force {
            return Err(RemoveError::Pinned(name_or_id.to_owned()));
        }
        // Another removal may have deleted it since it was read: that is not found either.
        self.metadata()
            .delete_image(&rec.manifest_digest)
            .map_err(|e| match e {
                MetadataError::ImageNotFound(_) => RemoveError::NotFound(name_or_id.to_owned()),
                e => meta(e),
            })
    }

    /// Pins or unpins an image.
    pub fn set_pinned(&self, name_or_id: &str, pinned: bool) -> Result<(), RemoveError> {
        let name_or_id = &self.normalise_name(name_or_id);
        let meta = |source| RemoveError::Metadata {
            name: name_or_id.to_owned(),
            source,
        };
        let rec = self
            .metadata()
            .get_image(name_or_id)
            .map_err(meta)?
            .ok_or_else(|| RemoveError::NotFound(name_or_id.to_owned()))?;
        self.metadata()
            .set_pinned(&rec.manifest_digest, pinned)
            .map_err(meta)
    }

    /// Removes every blob and snapshot no image or container references. Waits for running
    /// pulls to finish and holds new ones off only while it decides and drops the records
    /// (and unlinks blobs); the doomed snapshots' files — thousands per layer — are deleted
    /// afterwards, off the async runtime, while pulls go on (a pull of the image just removed
    /// unpacks into new directories).
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        let (mut report, detached) = self.gc_records().await?;
        let (removed, failures) = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            let mut failures = Vec::new();
            for snap in detached {
                let key = snap.key().to_owned();
                match snap.remove() {
                    Ok(()) => removed.push(key),
                    Err(e) => {
                        warn!(snapshot = key, error = %e, "gc: cannot delete a removed snapshot's files (removed at the next start)");
                        failures.push(GcFailure::from(e));
                    }
                }
            }
            (removed, failures)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        report.snapshots_removed.extend(removed);
        report.failures.extend(failures);
        info!(
            blobs = report.blobs_removed.len(),
            snapshots = report.snapshots_removed.len(),
            failures = report.failures.len(),
            "gc done"
        );
        Ok(report)
    }

    /// GC's part under the exclusive lock: which blobs and snapshots go; blobs unlinked,
    /// snapshot records removed, their directories returned.
    async fn gc_records(&self) -> Result<(GcReport, Vec<Detached>), StoreError> {
        let _exclusive = self.gc_lock().write().await;
        let images = self.metadata().list_images()?;
        let snapshots = self.snapshots().list()?;
        let mut keep_blobs: HashSet<Digest> = HashSet::new();
        let mut keep_snaps: HashSet<String> = HashSet::new();
        for img in &images {
            keep_blobs.insert(img.manifest_digest.clone());
            keep_blobs.insert(img.config_digest.clone());
            keep_blobs.extend(img.index_digest.iter().cloned());
            keep_blobs.extend(img.layers.iter().cloned());
            keep_snaps.extend(
                ChainId::chain(&img.diff_ids)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        let parents: HashMap<&str, Option<&str>> = snapshots
            .iter()
            .map(|s| (s.key.as_str(), s.parent.as_deref()))
            .collect();
        for s in snapshots
            .iter()
            .filter(|s| s.kind != SnapshotKind::Committed)
        {
            // A container's snapshot keeps its whole parent chain (bounded by the count).
            let mut next = Some(s.key.as_str());
            let mut steps = 0;
            while let Some(k) = next {
                if steps > snapshots.len() || !keep_snaps.insert(k.to_owned()) {
                    break;
                }
                next = parents.get(k).copied().flatten();
                steps += 1;
            }
        }
        let depth = |key: &str| {
            let mut d = 0;
            let mut next = parents.get(key).copied().flatten();
            while let Some(k) = next {
                d += 1;
                if d > snapshots.len() {
                    break;
                }
                next = parents.get(k).copied().flatten();
            }
            d
        };
        let mut doomed: Vec<&str> = snapshots
            .iter()
            .map(|s| s.key.as_str())
            .filter(|k| !keep_snaps.contains(*k))
            .collect();
        // Children before parents.
        doomed.sort_by_key(|k| std::cmp::Reverse(depth(k)));
        let mut report = GcReport::default();
        let mut detached = Vec::new();
        for key in doomed {
            match self.snapshots().detach(key) {
                Ok(d) => detached.push(d),
                Err(e) => {
                    warn!(snapshot = key, error = %e, "gc: cannot remove snapshot");
                    report.failures.push(e.into());
                }
            }
        }
        for blob in self.content().list()? {
            if keep_blobs.contains(&blob) {
                continue;
            }
            match self.content().delete(&blob) {
                Ok(()) => report.blobs_removed.push(blob),
                Err(e) => {
                    warn!(blob = %blob, error = %e, "gc: cannot remove blob");
                    report.failures.push(e.into());
                }
            }
        }
        Ok((report, detached))
    }
}

#[cfg(test)]
mod tests;
