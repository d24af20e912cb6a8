//! Export of images as one tar that is both an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/`) and a `docker save` archive (`manifest.json` naming the same blobs), so that
//! `docker load`, `podman load`, `ctr import` and berth's own import all read it.

use std::io::{self, Write};

use serde_json::json;
use tracing::info;

use crate::content::ContentError;
use crate::digest::Digest;
use crate::metadata::MetadataError;
use crate::reference::Reference;
use crate::store::ImageStore;

/// Errors of exporting images.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No image with that name or ID.
    #[error("export {0}: image not found")]
    NotFound(String),
    /// A blob of the image is missing or unreadable.
    #[error("export {name}: {source}")]
    Content {
        /// The image.
        name: String,
        /// The cause.
        source: ContentError,
    },
    /// The metadata database failed.
    #[error("export: {0}")]
    Metadata(#[from] MetadataError),
    /// Writing the tar failed.
    #[error("export: write archive: {0}")]
    Write(#[source] io::Error),
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl ImageStore {
    /// Writes the images `names` (names or IDs) to `out` as one archive tar.
    pub fn export_archive<W: Write>(&self, names: &[&str], out: W) -> Result<(), ExportError> {
        let mut tar = tar::Builder::new(out);
        let mut written = std::collections::HashSet::<Digest>::new();
        let mut index_entries = Vec::new();
        let mut docker_entries = Vec::new();
        for &name in names {
            let img = self
                .metadata()
                .get_image(&self.normalise_name(name))?
                .ok_or_else(|| ExportError::NotFound(name.to_owned()))?;
            let content = |source| ExportError::Content {
                name: name.to_owned(),
                source,
            };
            let manifest = self
                .content()
                .read_blob(&img.manifest_digest)
                .map_err(content)?;
            let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                .unwrap_or_else(|| OCI_MANIFEST.to_owned());
            // The name asked for when it is one of the image's names, else its first tag.
            let full = name
                .parse::<Reference>()
                .ok()
                .map(|r| r.to_string())
                .filter(|n| img.names.contains(n))
                .or_else(|| img.names.iter().find(|n| !n.contains('@')).cloned());
            let mut annotations = serde_json::Map::new();
            if let Some(f) = &full {
                annotations.insert("io.containerd.image.name".into(), json!(f));
                if let Some(tag) = f
                    .parse::<Reference>()
                    .ok()
                    .and_then(|r| r.tag().map(str::to_owned))
                {
                    annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
                }
            }
            index_entries.push(json!({
                "mediaType": media_type,
                "digest": img.manifest_digest.to_string(),
                "size": manifest.len(),
                "annotations": annotations,
            }));
            let blob_path = |d: &Digest| format!("blobs/{}/{}", d.algorithm(), d.hex());
            docker_entries.push(json!({
                "Config": blob_path(&img.config_digest),
                "RepoTags": full.iter().collect::<Vec<_>>(),
                "Layers": img.layers.iter().map(blob_path).collect::<Vec<_>>(),
            }));
            let mut blobs = vec![img.manifest_digest.clone(), img.config_digest.clone()];
            blobs.extend(img.layers.iter().cloned());
            for d in blobs {
                if !written.insert(d.clone()) {
                    continue;
                }
                let size = self
                    .content()
                    .size(&d)
                    .map_err(content)?
                    .ok_or_else(|| content(ContentError::NotFound(d.clone())))?;
                let file = self.content().open_blob(&d).map_err(content)?;
                append(&mut tar, &blob_path(&d), size, file)?;
            }
        }
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        append(&mut tar, "oci-layout", layout.len() as u64, &layout[..])?;
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": index_entries}))
            .expect("json");
        append(&mut tar, "index.json", index.len() as u64, &index[..])?;
        let docker = serde_json::to_vec(&docker_entries).expect("json");
        append(&mut tar, "manifest.json", docker.len() as u64, &docker[..])?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(ExportError::Write)?;
        info!(images = names.len(), "exported");
        Ok(())
    }
}

fn append<W: Write, R: io::Read>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: R,
) -> Result<(), ExportError> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .map_err(ExportError::Write)
}
