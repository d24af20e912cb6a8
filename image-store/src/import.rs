//! Import of image archives: OCI image layouts (a directory or a tar of one) and `docker save`
//! tars. Every blob is verified into the content store, every layer unpacked into a snapshot
//! with its diff_id checked, before the image is recorded.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tracing::info;

use crate::chain_id::ChainId;
use crate::content::ContentError;
use crate::digest::{Algorithm, Digest, DigestReader};
use crate::manifest::{ImageConfig, Manifest, ManifestError, OCI_MANIFEST};
use crate::metadata::{now_unix, ImageRecord, MetadataError};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::snapshot::SnapshotError;
use crate::store::{Image, ImageStore};
use crate::unpack::{unpack_layer, Compression, UnpackError, UnpackOptions};

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors of importing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the archive or its files failed.
    #[error("import: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The archive tar could not be extracted.
    #[error("import: extract archive: {0}")]
    Extract(#[source] UnpackError),
    /// Neither `index.json` (OCI layout) nor `manifest.json` (docker save) is present.
    #[error("import: not an OCI layout or docker save archive (no index.json or manifest.json)")]
    UnknownFormat,
    /// A JSON file of the archive does not decode.
    #[error("import: {file}: {source}")]
    Json {
        /// The file.
        file: String,
        /// The decode error.
        source: serde_json::Error,
    },
    /// A path in `manifest.json` that leaves the archive.
    #[error("import: manifest.json names {0:?}, outside the archive")]
    BadPath(String),
    /// A manifest, index or config is unusable.
    #[error("import: {0}")]
    Manifest(#[from] ManifestError),
    /// A blob is missing or does not match its digest.
    #[error("import: {0}")]
    Content(#[from] ContentError),
    /// A layer did not unpack.
    #[error("import: layer {digest}: {source}")]
    Layer {
        /// The layer blob.
        digest: Digest,
        /// The cause.
        source: UnpackError,
    },
    /// A layer's uncompressed digest differs from the config's diff_id.
    #[error(
        "import: layer {digest}: diff_id mismatch (config says {expected}, layer is {actual})"
    )]
    DiffId {
        /// The layer blob.
        digest: Digest,
        /// The config's diff_id.
        expected: Digest,
        /// What the layer is.
        actual: Digest,
    },
    /// A snapshot could not be committed.
    #[error("import: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The image could not be recorded.
    #[error("import: {0}")]
    Metadata(#[from] MetadataError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImportError {
    let path = path.to_owned();
    move |source| ImportError::Io { op, path, source }
}

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Names images whose archive entry only carries a tag (`ref.name` = `1.0`): the
    /// repository to put that tag on.
    pub base_name: Option<Reference>,
    /// Platform to select from an index (default: this node's).
    pub platform: Option<Platform>,
}

/// One image found in an archive, before it is installed.
struct Candidate {
    manifest_digest: Digest,
    name: Option<String>,
}

#[derive(Deserialize)]
struct OciIndexFile {
    manifests: Vec<OciIndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndexEntry {
    digest: Digest,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports an archive tar (OCI layout or `docker save`, either way compressed or not).
    pub fn import_archive<R: Read>(
        &self,
        archive: R,
        opts: &ImportOptions,
    ) -> Result<Vec<Image>, ImportError> {
        let tmp_root = self.config().root.join("tmp");
        fs::create_dir_all(&tmp_root).map_err(io_err("create dir", &tmp_root))?;
        let tmp = tempfile_dir(&tmp_root)?;
        let extract = UnpackOptions { chown: false };
        unpack_layer(archive, tmp.path(), &extract).map_err(ImportError::Extract)?;
        self.import_dir(tmp.path(), opts)
    }

    /// Imports an extracted archive directory.
    ///
    /// Holds the GC lock shared while it writes blobs and snapshots (as a pull does), so a GC
    /// run cannot remove what is not referenced yet. Blocking: call it from a blocking thread
    /// (e.g. `spawn_blocking`), never from async code. The archive's extraction in
    /// [`ImageStore::import_archive`], paced by whoever sends it, happens before, unlocked.
    pub fn import_dir(&self, dir: &Path, opts: &ImportOptions) -> Result<Vec<Image>, ImportError> {
        let _shared = self.gc_lock().blocking_read();
        if dir.join("index.json").is_file() {
            self.import_oci_layout(dir, opts)
        } else if dir.join("manifest.json").is_file() {
            self.import_docker_save(dir, opts)
        } else {
            Err(ImportError::UnknownFormat)
        }
    }

    fn import_oci_layout(
        &self,
        dir: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<Image>, ImportError> {
        let index: OciIndexFile = read_json(&dir.join("index.json"), "index.json")?;
        let mut candidates = Vec::new();
        for entry in index.manifests {
            let name = match (
                entry.annotations.get(NAME_ANNOTATION),
                entry.annotations.get(REF_ANNOTATION),
            ) {
                (Some(full), _) => Some(full.clone()),
                (None, Some(r)) if r.contains('/') || r.contains('@') => Some(r.clone()),
                (None, Some(tag)) => opts
                    .base_name
                    .as_ref()
                    .map(|b| format!("{}:{tag}", b.name())),
                (None, None) => None,
            };
            candidates.push(Candidate {
                manifest_digest: entry.digest,
                name,
            });
        }
        let blob = |d: &Digest| dir.join("blobs").join(d.algorithm().as_str()).join(d.hex());
        let mut out = Vec::new();
        for c in candidates {
            out.push(self.install(&blob, c, opts)?);
        }
        Ok(out)
    }

    fn import_docker_save(
        &self,
        dir: &Path,
        opts: &ImportOptions,
    ) -> Result<Vec<Image>, ImportError> {
        let entries: Vec<DockerSaveEntry> = read_json(&dir.join("manifest.json"), "manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            // Synthesize an OCI manifest over the files: layer blobs as they are in the tar.
            let config_path = safe_join(dir, &e.config)?;
            let config_digest = file_digest(&config_path)?;
            let config_size = fs::metadata(&config_path)
                .map_err(io_err("stat", &config_path))?
                .len();
            let mut layers = Vec::new();
            for l in &e.layers {
                let p = safe_join(dir, l)?;
                let d = file_digest(&p)?;
                let size = fs::metadata(&p).map_err(io_err("stat", &p))?.len();
                let mut magic = [0u8; 4];
                let n = File::open(&p)
                    .and_then(|mut f| f.read(&mut magic))
                    .map_err(io_err("read", &p))?;
                let media_type = match Compression::detect(&magic[..n]) {
                    Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                    Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                    Compression::None => "application/vnd.oci.image.layer.v1.tar",
                };
                layers.push(serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": size}));
                let target = self.content().blob_path(&d);
                if !target.exists() {
                    copy_verified(self, &p, &d, size)?;
                }
            }
            if !self.content().contains(&config_digest) {
                copy_verified(self, &config_path, &config_digest, config_size)?;
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_size},
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest).expect("json encodes");
            let manifest_digest = Digest::sha256_of(&bytes);
            self.content().write_blob(&manifest_digest, &bytes)?;
            let names = e.repo_tags.unwrap_or_default();
            let blob = |d: &Digest| self.content().blob_path(d);
            let first = self.install(
                &blob,
                Candidate {
                    manifest_digest: manifest_digest.clone(),
                    name: names.first().map(|n| normalise(n)),
                },
                opts,
            )?;
            for n in names.iter().skip(1) {
                self.metadata().put_image(&first, Some(&normalise(n)))?;
            }
            out.push(first);
        }
        Ok(out)
    }

    /// Verifies a manifest (selecting from an index), its config and layers from `blob`
    /// paths into the store, unpacks the layers, and records the image.
    fn install(
        &self,
        blob: &dyn Fn(&Digest) -> PathBuf,
        c: Candidate,
        opts: &ImportOptions,
    ) -> Result<Image, ImportError> {
        let read_verified = |d: &Digest| -> Result<Vec<u8>, ImportError> {
            let p = blob(d);
            let bytes = fs::read(&p).map_err(io_err("read", &p))?;
            self.content().write_blob(d, &bytes)?;
            Ok(bytes)
        };
        let top = read_verified(&c.manifest_digest)?;
        let (manifest, manifest_digest, index_digest) =
            match Manifest::parse(&c.manifest_digest, &top)? {
                Manifest::Image(m) => (m, c.manifest_digest.clone(), None),
                Manifest::Index(idx) => {
                    let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
                    let entry = idx.select(&c.manifest_digest, &wanted)?.digest.clone();
                    let bytes = read_verified(&entry)?;
                    match Manifest::parse(&entry, &bytes)? {
                        Manifest::Image(m) => (m, entry, Some(c.manifest_digest.clone())),
                        Manifest::Index(_) => {
                            return Err(ManifestError::UnsupportedMediaType {
                                digest: entry,
                                media_type: "nested index".into(),
                            }
                            .into())
                        }
                    }
                }
            };
        let config_bytes = read_verified(&manifest.config.digest)?;
        let config = ImageConfig::parse(&manifest.config.digest, &config_bytes)?;
        let diff_ids = config.rootfs.diff_ids.clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ManifestError::LayerCount {
                digest: manifest.config.digest.clone(),
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
            }
            .into());
        }
        let chains = ChainId::chain(&diff_ids);
        for (i, layer) in manifest.layers.iter().enumerate() {
            if !self.content().contains(&layer.digest) {
                copy_verified(self, &blob(&layer.digest), &layer.digest, layer.size)?;
            }
            if self.snapshots().has_layer(&chains[i])? {
                continue;
            }
            Compression::from_media_type(&layer.media_type).map_err(|source| {
                ImportError::Layer {
                    digest: layer.digest.clone(),
                    source,
                }
            })?;
            let dir = self.snapshots().begin_layer()?;
            let file = self.content().open_blob(&layer.digest)?;
            let u = unpack_layer(
                io::BufReader::with_capacity(1 << 17, file),
                &dir.path(),
                &UnpackOptions::default(),
            )
            .map_err(|source| ImportError::Layer {
                digest: layer.digest.clone(),
                source,
            })?;
            if u.diff_id != diff_ids[i] {
                return Err(ImportError::DiffId {
                    digest: layer.digest.clone(),
                    expected: diff_ids[i].clone(),
                    actual: u.diff_id,
                });
            }
            dir.commit(&chains[i], i.checked_sub(1).map(|p| &chains[p]))?;
        }
        let record = ImageRecord {
            manifest_digest: manifest_digest.clone(),
            config_digest: manifest.config.digest.clone(),
            index_digest,
            size: top.len() as u64
                + manifest.config.size
                + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            platform: config.platform(),
            pinned: false,
            names: Vec::new(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids,
            chain_id: chains.last().cloned(),
            created_unix: now_unix(),
        };
        let stored = self.metadata().put_image(&record, c.name.as_deref())?;
        info!(image = ?c.name, manifest = %manifest_digest, "imported");
        Ok(stored)
    }
}

/// `busybox:1` → `docker.io/library/busybox:1`; names that do not parse are kept as given.
fn normalise(name: &str) -> String {
    name.parse::<Reference>()
        .map_or_else(|_| name.to_owned(), |r| r.to_string())
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path, file: &str) -> Result<T, ImportError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ImportError::Json {
        file: file.to_owned(),
        source,
    })
}

/// `dir/rel` for a relative path without `..`.
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, ImportError> {
    let p = Path::new(rel);
    let ok = p.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !ok || rel.is_empty() {
        return Err(ImportError::BadPath(rel.to_owned()));
    }
    Ok(dir.join(p))
}

fn file_digest(path: &Path) -> Result<Digest, ImportError> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut r = DigestReader::new(io::BufReader::new(f), Algorithm::Sha256);
    io::copy(&mut r, &mut io::sink()).map_err(io_err("read", path))?;
    Ok(r.finish().0)
}

fn copy_verified(
    store: &ImageStore,
    src: &Path,
    digest: &Digest,
    size: u64,
) -> Result<(), ImportError> {
    let mut f = File::open(src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ImportError::Content(ContentError::NotFound(digest.clone())),
        _ => io_err("open", src)(e),
    })?;
    let mut w = store.content().writer(digest, Some(size))?;
    w.restart()?;
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", src))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(|e| w.unwrap_io(e))?;
    }
    w.commit()?;
    Ok(())
}

/// A temporary directory under the store root (same filesystem), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(parent: &Path) -> Result<TempDir, ImportError> {
    // Bounded: a handful of names, each tried once.
    for attempt in 0..16u32 {
        let name = format!("import-{}-{}-{attempt}", std::process::id(), now_unix());
        let p = parent.join(name);
        match fs::create_dir(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create dir", &p)(e)),
        }
    }
    Err(io_err("create dir", parent)(io::Error::from(
        io::ErrorKind::AlreadyExists,
    )))
}
