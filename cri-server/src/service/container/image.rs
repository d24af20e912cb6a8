//! The image a container runs: found by the name or ID the CreateContainer request gives (as
//! the ImageService reports it: the config digest is the image ID), with its config.

use image_store::{ChainId, Digest, Image, ImageStore, Reference};

/// A stored image, resolved for a container.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedImage {
    /// The config digest: the CRI image ID.
    pub id: String,
    /// The first `repo:tag` name (or what was asked), for `ContainerStatus.image`.
    pub name: String,
    /// The first `repo@digest` (or the ID), for `ContainerStatus.image_ref`.
    pub image_ref: String,
    /// The top of the layer stack (None: an image without layers).
    pub chain_id: Option<ChainId>,
    pub config: oci_spec::image::ImageConfiguration,
}

/// Why an image cannot be used.
#[derive(Debug)]
pub(crate) enum ResolveError {
    NotFound,
    Broken(String),
}

/// Resolves `asked`: a name, the image ID (with or without `sha256:`), a manifest digest, or
/// a unique prefix of the ID. Blocking.
pub(crate) fn resolve(store: &ImageStore, asked: &str) -> Result<ResolvedImage, ResolveError> {
    let broken = |e: &dyn std::fmt::Display| ResolveError::Broken(e.to_string());
    let asked = asked.trim();
    if asked.is_empty() {
        return Err(ResolveError::NotFound);
    }
    let by_name = store.image(asked).map_err(|e| broken(&e))?;
    let record = match by_name {
        Some(r) => r,
        None => {
            let images = store.images().map_err(|e| broken(&e))?;
            find_by_digest(&images, asked).ok_or(ResolveError::NotFound)?
        }
    };
    let bytes = store
        .content()
        .read_blob(&record.config_digest)
        .map_err(|e| broken(&e))?;
    let config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&bytes).map_err(|e| broken(&format!("config: {e}")))?;
    let tag = record
        .names
        .iter()
        .find(|n| !n.contains('@'))
        .cloned()
        .unwrap_or_else(|| asked.to_owned());
    let image_ref = record
        .names
        .iter()
        .find_map(|n| n.parse::<Reference>().ok())
        .map(|r| format!("{}@{}", r.name(), record.manifest_digest))
        .unwrap_or_else(|| record.config_digest.to_string());
    Ok(ResolvedImage {
        id: record.config_digest.to_string(),
        name: tag,
        image_ref,
        chain_id: record.chain_id.clone(),
        config,
    })
}

/// The record whose config (ID) or manifest digest is `asked`, or whose ID starts with it.
fn find_by_digest(images: &[Image], asked: &str) -> Option<Image> {
    let full = asked
        .parse::<Digest>()
        .ok()
        .or_else(|| format!("sha256:{asked}").parse::<Digest>().ok());
    if let Some(d) = full {
        return images
            .iter()
            .find(|i| i.config_digest == d || i.manifest_digest == d)
            .cloned();
    }
    let hex = asked.strip_prefix("sha256:").unwrap_or(asked);
    if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut found = images
        .iter()
        .filter(|i| i.config_digest.hex().starts_with(hex));
    let first = found.next()?;
    found
        .all(|i| i.config_digest == first.config_digest)
        .then(|| first.clone())
}
