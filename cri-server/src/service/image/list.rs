//! ListImages (optionally filtered by an image spec) and ImageStatus.

use std::sync::Arc;

use cri_api::v1 as cri;
use image_store::ImageStore;

use super::{blocking, convert, lookup, ImageServiceError, Images};

pub(super) async fn list(
    images: &Images,
    req: cri::ListImagesRequest,
) -> Result<cri::ListImagesResponse, ImageServiceError> {
    let images = records(images.store.clone(), req.filter).await?;
    Ok(cri::ListImagesResponse { images })
}

/// The images `filter` names (all of them without one) as CRI images (ListImages and
/// StreamImages).
pub(super) async fn records(
    store: Arc<ImageStore>,
    filter: Option<cri::ImageFilter>,
) -> Result<Vec<cri::Image>, ImageServiceError> {
    let filter = filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.trim().is_empty());
    blocking("ListImages", move || {
        let store_err = |source| ImageServiceError::Store {
            image: filter.clone().unwrap_or_else(|| "*".into()),
            source,
        };
        let found = match &filter {
            Some(spec) => lookup::find(&store, spec)
                .map_err(store_err)?
                .into_iter()
                .collect(),
            None => lookup::all(&store).map_err(store_err)?,
        };
        Ok(found.iter().map(|i| convert::to_cri(&store, i)).collect())
    })
    .await
}

/// A missing image is no error: the response has no image (the CRI's contract).
pub(super) async fn status(
    images: &Images,
    req: cri::ImageStatusRequest,
) -> Result<cri::ImageStatusResponse, ImageServiceError> {
    let spec = req.image.unwrap_or_default().image;
    if spec.trim().is_empty() {
        return Err(ImageServiceError::NoImage { rpc: "ImageStatus" });
    }
    let store = images.store.clone();
    blocking("ImageStatus", move || {
        let found = lookup::find(&store, &spec).map_err(|source| ImageServiceError::Store {
            image: spec.clone(),
            source,
        })?;
        let Some(image) = found else {
            tracing::debug!(image = %spec, "image status: not present");
            return Ok(cri::ImageStatusResponse::default());
        };
        let info = if req.verbose {
            convert::verbose_info(&store, &image)
        } else {
            Default::default()
        };
        Ok(cri::ImageStatusResponse {
            image: Some(convert::to_cri(&store, &image)),
            info,
        })
    })
    .await
}
