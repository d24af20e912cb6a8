//! PullImage: normalise the reference, turn the AuthConfig into credentials, pull through the
//! store, answer the image ID (config digest).

use cri_api::v1 as cri;
use image_store::{PullOptions, Reference};

use super::{convert, ImageServiceError, Images};

pub(super) async fn pull(
    images: &Images,
    req: cri::PullImageRequest,
) -> Result<cri::PullImageResponse, ImageServiceError> {
    let spec = req.image.unwrap_or_default();
    let name = spec.image.trim().to_owned();
    if name.is_empty() {
        return Err(ImageServiceError::NoImage { rpc: "PullImage" });
    }
    if !spec.runtime_handler.is_empty() && !images.handlers.contains(&spec.runtime_handler) {
        return Err(ImageServiceError::UnknownHandler {
            image: name,
            handler: spec.runtime_handler,
        });
    }
    let reference: Reference = name
        .parse()
        .map_err(|source| ImageServiceError::BadReference {
            image: name.clone(),
            source,
        })?;
    let credentials =
        convert::credentials(req.auth.as_ref(), reference.registry()).map_err(|reason| {
            ImageServiceError::BadAuth {
                image: name.clone(),
                reason,
            }
        })?;
    let opts = PullOptions {
        credentials,
        platform: None,
    };
    tracing::info!(image = %reference, requested = %name, "pulling image");
    let image = images.store.pull(&reference, &opts).await.map_err(|e| {
        tracing::warn!(image = %reference, error = %e, "pull failed");
        ImageServiceError::Pull(Box::new(e))
    })?;
    tracing::info!(
        image = %reference,
        id = %image.config_digest,
        manifest = %image.manifest_digest,
        "image pulled"
    );
    Ok(cri::PullImageResponse {
        image_ref: image.config_digest.to_string(),
    })
}
