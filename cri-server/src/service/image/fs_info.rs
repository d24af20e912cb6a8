//! ImageFsInfo: disk use of the unpacked snapshots. A measurement walks every snapshot, so it
//! is reused for [`MAX_AGE`] (the kubelet asks every few seconds), unless a snapshot was added
//! or removed since.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cri_api::v1 as cri;

use super::{blocking, ImageServiceError, Images};

/// How long a measurement is reused when nothing changed (containerd's stats period).
const MAX_AGE: Duration = Duration::from_secs(10);

/// The last measurement, with the snapshotter's generation it was taken at.
#[derive(Default)]
pub(super) struct FsUsageCache {
    last: Mutex<Option<Measured>>,
}

struct Measured {
    at: Instant,
    generation: u64,
    usage: cri::FilesystemUsage,
}

impl FsUsageCache {
    /// The last measurement, if taken at `generation` within [`MAX_AGE`].
    fn get(&self, generation: u64) -> Option<cri::FilesystemUsage> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|m| m.generation == generation && m.at.elapsed() < MAX_AGE)
            .map(|m| m.usage.clone())
    }

    /// Stores a measurement begun at `generation` (one that raced with a change is stored
    /// under the old generation, so the next call measures again).
    fn put(&self, generation: u64, usage: &cri::FilesystemUsage) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(Measured {
            at: Instant::now(),
            generation,
            usage: usage.clone(),
        });
    }
}

pub(super) async fn fs_info(
    images: &Images,
) -> Result<cri::ImageFsInfoResponse, ImageServiceError> {
    // Any snapshot added or removed (CRI or admin pulls, imports, containers, GC) since the
    // last measurement makes it stale.
    let generation = images.store.snapshots().generation();
    let usage = match images.fs_usage.get(generation) {
        Some(usage) => usage,
        None => {
            let usage = measure(images).await?;
            images.fs_usage.put(generation, &usage);
            usage
        }
    };
    Ok(cri::ImageFsInfoResponse {
        image_filesystems: vec![usage],
        container_filesystems: Vec::new(),
    })
}

async fn measure(images: &Images) -> Result<cri::FilesystemUsage, ImageServiceError> {
    let store = images.store.clone();
    blocking("ImageFsInfo", move || {
        let usage = store
            .fs_usage()
            .map_err(|source| ImageServiceError::Store {
                image: "*".into(),
                source,
            })?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: store.snapshots().root().display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes,
            }),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(bytes: u64) -> cri::FilesystemUsage {
        cri::FilesystemUsage {
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            ..Default::default()
        }
    }

    #[test]
    fn cache_reuses_a_measurement_of_the_same_generation_only() {
        let cache = FsUsageCache::default();
        assert!(cache.get(0).is_none());
        cache.put(0, &usage(1));
        assert_eq!(cache.get(0).unwrap(), usage(1));
        // A snapshot was added or removed since.
        assert!(cache.get(1).is_none());
        // A measurement that raced with a change is stored under the generation it began at.
        cache.put(1, &usage(2));
        assert!(cache.get(2).is_none());
    }
}
