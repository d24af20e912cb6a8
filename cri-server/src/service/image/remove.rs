//! RemoveImage: every name and record of the image goes (as containerd does, whatever name
//! it was asked by; pinned images too, since the CRI makes pinning only a recommendation);
//! blobs and snapshots go at the GC run this triggers. A missing image is success.

use cri_api::v1 as cri;
use image_store::RemoveError;

use super::{blocking, lookup, ImageServiceError, Images};

pub(super) async fn remove(
    images: &Images,
    req: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse, ImageServiceError> {
    let spec = req.image.unwrap_or_default().image;
    if spec.trim().is_empty() {
        return Err(ImageServiceError::NoImage { rpc: "RemoveImage" });
    }
    let store = images.store.clone();
    let removed = blocking("RemoveImage", move || {
        let found = lookup::find(&store, &spec).map_err(|source| ImageServiceError::Store {
            image: spec.clone(),
            source,
        })?;
        let Some(image) = found else {
            tracing::debug!(image = %spec, "remove image: already gone");
            return Ok(false);
        };
        for rec in &image.records {
            match store.remove_image(&rec.manifest_digest.to_string(), true) {
                Ok(_) | Err(RemoveError::NotFound(_)) => {}
                Err(e) => return Err(ImageServiceError::Remove(e)),
            }
        }
        tracing::info!(image = %spec, id = %image.id, "image removed");
        Ok(true)
    })
    .await?;
    if removed {
        images.request_gc();
    }
    Ok(cri::RemoveImageResponse {})
}
