//! Manifests, indexes and image configs (OCI and Docker schema 2), and platform selection.

use serde::Deserialize;

use crate::digest::Digest;
use crate::platform::Platform;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (unsupported, recognised to say so).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1, signed.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Media types sent in `Accept` when resolving a reference.
pub const ACCEPTED: &[&str] = &[
    OCI_INDEX,
    DOCKER_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
];

/// Errors of decoding manifests and configs.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("{what} {digest}: invalid JSON: {source}")]
    Json {
        /// `manifest`, `index` or `config`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The decode error.
        source: serde_json::Error,
    },
    /// A schema 1 manifest.
    #[error("manifest {0}: Docker schema 1 manifests are not supported (re-push the image with a current tool)")]
    Schema1(Digest),
    /// A media type that is neither a manifest nor an index.
    #[error("manifest {digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// No index entry for this node's platform.
    #[error("index {digest}: no manifest for platform {wanted} (available: {available})")]
    NoPlatform {
        /// The index.
        digest: Digest,
        /// The platform looked for (`os/arch[/variant]`).
        wanted: String,
        /// What the index offers.
        available: String,
    },
    /// The config lists a different number of diff_ids than the manifest has layers.
    #[error("config {digest}: {diff_ids} diff_ids for {layers} layers")]
    LayerCount {
        /// The config blob.
        digest: Digest,
        /// Its diff_id count.
        diff_ids: usize,
        /// The manifest's layer count.
        layers: usize,
    },
}

/// A platform as written in an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct DescriptorPlatform {
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced blob.
    #[serde(default)]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// For index entries.
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index / manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// One entry per platform (and attestation manifests).
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config the store needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// The layer stack.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Decodes a config blob.
    pub fn parse(digest: &Digest, bytes: &[u8]) -> Result<Self, ManifestError> {
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            what: "config",
            digest: digest.clone(),
            source,
        })
    }

    /// The image's platform.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// A decoded manifest-or-index.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A single-platform image.
    Image(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    fs_layers: Option<serde_json::Value>,
}

impl Manifest {
    /// Decodes a manifest or index, telling them apart by `mediaType` (or by shape when the
    /// OCI-optional field is absent).
    pub fn parse(digest: &Digest, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let json = |what, source| ManifestError::Json {
            what,
            digest: digest.clone(),
            source,
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| json("manifest", e))?;
        if probe.schema_version == 1 || probe.fs_layers.is_some() {
            return Err(ManifestError::Schema1(digest.clone()));
        }
        let media_type = probe.media_type.unwrap_or_default();
        let is_index = match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => {
                return Err(ManifestError::Schema1(digest.clone()))
            }
            "" => probe.manifests.is_some(),
            other => {
                return Err(ManifestError::UnsupportedMediaType {
                    digest: digest.clone(),
                    media_type: other.to_owned(),
                })
            }
        };
        if is_index {
            Ok(Manifest::Index(
                serde_json::from_slice(bytes).map_err(|e| json("index", e))?,
            ))
        } else {
            Ok(Manifest::Image(
                serde_json::from_slice(bytes).map_err(|e| json("manifest", e))?,
            ))
        }
    }
}

impl ImageIndex {
    /// The entry for `wanted`: an exact variant match first, then an entry without variant.
    pub fn select(&self, digest: &Digest, wanted: &Platform) -> Result<&Descriptor, ManifestError> {
        let candidates = self.manifests.iter().filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| wanted.matches(&p.os, &p.architecture, p.variant.as_deref()))
        });
        let mut fallback = None;
        for d in candidates {
            let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
            if variant.is_some() && variant == wanted.variant.as_deref() {
                return Ok(d);
            }
            fallback.get_or_insert(d);
        }
        fallback.ok_or_else(|| ManifestError::NoPlatform {
            digest: digest.clone(),
            wanted: wanted.to_string(),
            available: self
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            d(1),
            d(2),
            d(3),
            d(4)
        )
    }

    #[test]
    fn selects_platform_from_index() {
        let dg = Digest::sha256_of(b"i");
        let Manifest::Index(idx) = Manifest::parse(&dg, index_json().as_bytes()).unwrap() else {
            panic!("not an index")
        };
        let p = |a: &str, v: Option<&str>| Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(Into::into),
        };
        assert_eq!(
            idx.select(&dg, &p("arm", Some("v7")))
                .unwrap()
                .digest
                .to_string(),
            d(2)
        );
        assert_eq!(
            idx.select(&dg, &p("amd64", None))
                .unwrap()
                .digest
                .to_string(),
            d(3)
        );
        let err = idx.select(&dg, &p("s390x", None)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no manifest for platform linux/s390x"),
            "{msg}"
        );
        assert!(msg.contains("linux/arm/v7"), "{msg}");
    }

    #[test]
    fn parses_docker_manifest_and_rejects_schema1() {
        let dg = Digest::sha256_of(b"m");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":7}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":9}}]}}"#,
            d(1),
            d(2)
        );
        let Manifest::Image(img) = Manifest::parse(&dg, m.as_bytes()).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(img.layers.len(), 1);
        assert_eq!(img.config.size, 7);
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}"#;
        let err = Manifest::parse(&dg, s1.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
        // OCI manifest without mediaType: recognised by shape.
        let bare = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},"layers":[]}}"#,
            d(1)
        );
        assert!(matches!(
            Manifest::parse(&dg, bare.as_bytes()).unwrap(),
            Manifest::Image(_)
        ));
    }

    #[test]
    fn parses_config() {
        let dg = Digest::sha256_of(b"c");
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#,
            d(5)
        );
        let cfg = ImageConfig::parse(&dg, c.as_bytes()).unwrap();
        assert_eq!(cfg.rootfs.diff_ids.len(), 1);
        assert_eq!(cfg.platform().to_string(), "linux/amd64");
        assert!(ImageConfig::parse(&dg, b"{}").is_err());
    }
}
