//! ImageFsInfo: disk use of the unpacked snapshots, measured now.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;

use super::{blocking, ImageServiceError, Images};

pub(super) async fn fs_info(
    images: &Images,
) -> Result<cri::ImageFsInfoResponse, ImageServiceError> {
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
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![cri::FilesystemUsage {
                timestamp,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: store.snapshots().root().display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
                inodes_used: Some(cri::UInt64Value {
                    value: usage.inodes,
                }),
            }],
            container_filesystems: Vec::new(),
        })
    })
    .await
}
