//! ImageFsInfo: disk use of the unpacked snapshots. A measurement walks every snapshot, so it
//! is reused for [`MAX_AGE`] (the kubelet asks every few seconds), unless a pull or a GC run
//! changed the snapshots since.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;

use super::{blocking, ImageServiceError, Images};

/// How long a measurement is reused when nothing changed (containerd's stats period).
const MAX_AGE: Duration = Duration::from_secs(10);

/// The last measurement and a generation bumped by every change.
#[derive(Default)]
pub(super) struct FsUsageCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    generation: u64,
    last: Option<(Instant, cri::FilesystemUsage)>,
}

impl FsUsageCache {
    /// The snapshots changed: the next ImageFsInfo measures again.
    pub(super) fn invalidate(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.generation += 1;
        s.last = None;
    }

    /// A fresh-enough measurement, or the generation a new one must be stored under.
    fn get(&self) -> Result<cri::FilesystemUsage, u64> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &s.last {
            Some((at, usage)) if at.elapsed() < MAX_AGE => Ok(usage.clone()),
            _ => Err(s.generation),
        }
    }

    /// Stores a measurement unless the snapshots changed while it was taken.
    fn put(&self, generation: u64, usage: &cri::FilesystemUsage) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.generation == generation {
            s.last = Some((Instant::now(), usage.clone()));
        }
    }
}

pub(super) async fn fs_info(
    images: &Images,
) -> Result<cri::ImageFsInfoResponse, ImageServiceError> {
    let usage = match images.fs_usage.get() {
        Ok(usage) => usage,
        Err(generation) => {
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
    fn cache_reuses_until_invalidated_and_drops_stale_measurements() {
        let cache = FsUsageCache::default();
        let generation = cache.get().unwrap_err();
        cache.put(generation, &usage(1));
        assert_eq!(cache.get().unwrap(), usage(1));
        cache.invalidate();
        let generation = cache.get().unwrap_err();
        // A measurement that raced with a change is not kept.
        cache.invalidate();
        cache.put(generation, &usage(2));
        assert!(cache.get().is_err());
    }
}
