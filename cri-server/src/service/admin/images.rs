//! `berth.admin.v1.Images`: Pull (for a given platform), Tag (a new name on a stored image),
//! Export (the image store's archive, streamed in chunks as it is written) and Import (chunks
//! streamed into the image store's archive import). The store's functions are blocking; they
//! run on blocking threads and meet the async side through bounded channels, so a slow client
//! slows the export down instead of buffering the archive in memory.

use std::io::{self, Read, Write};
use std::sync::Arc;

use image_store::{
    Credentials, Image, ImageStore, ImportOptions, Platform, PullOptions, Reference,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use super::proto::images_server::{Images, ImagesServer};
use super::proto::{
    Chunk, ExportRequest, ImportRequest, ImportResponse, ImportedImage, PullProgress, PullRequest,
    PullResponse, TagRequest, TagResponse,
};

/// Bytes per exported chunk (gRPC's default message limit is 4 MiB).
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the blocking side and the client.
const IN_FLIGHT: usize = 4;

/// The admin Images service on berthd's image store.
pub struct AdminImages {
    store: Arc<ImageStore>,
}

impl AdminImages {
    pub fn new(store: Arc<ImageStore>) -> Self {
        Self { store }
    }

    /// As a tonic service (imports of large archives: chunks up to 8 MiB).
    pub fn into_server(self) -> ImagesServer<Self> {
        ImagesServer::new(self).max_decoding_message_size(8 << 20)
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// The store record `query` names: a name (normalised), a manifest digest (the store's ID),
/// or a CRI image ID (config digest, `sha256:` optional, or an unambiguous prefix of it).
fn find(store: &ImageStore, query: &str) -> Result<Image, Status> {
    let query = query.trim();
    if query.is_empty() {
        return Err(Status::invalid_argument("an image name or ID is required"));
    }
    if let Some(img) = store.image(query).map_err(|e| internal("look up", e))? {
        return Ok(img);
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let images = store.images().map_err(|e| internal("list images", e))?;
        let mut matching: Vec<Image> = images
            .into_iter()
            .filter(|i| {
                i.config_digest.hex().starts_with(hex) || i.manifest_digest.hex().starts_with(hex)
            })
            .collect();
        matching.sort_by_key(|i| i.config_digest.to_string());
        matching.dedup_by(|a, b| a.config_digest == b.config_digest);
        match matching.len() {
            0 => {}
            1 => return Ok(matching.remove(0)),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{query} is ambiguous: it prefixes several images' IDs"
                )))
            }
        }
    }
    Err(Status::not_found(format!("image {query} not found")))
}

/// `os/architecture[/variant]`.
fn platform(spec: &str) -> Result<Platform, Status> {
    let parts: Vec<&str> = spec.trim().split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
            os: (*os).to_owned(),
            architecture: (*arch).to_owned(),
            variant: parts
                .get(2)
                .filter(|v| !v.is_empty())
                .map(|v| (*v).to_owned()),
        }),
        _ => Err(Status::invalid_argument(format!(
            "platform {spec:?}: expected os/architecture[/variant], e.g. linux/arm64"
        ))),
    }
}

/// A pull request's reference and options: its platform and credentials (none: the image
/// store falls back to docker's config.json, as for the CRI's PullImage; the registry hosts
/// config is the store's, shared with the CRI).
fn pull_request(req: PullRequest) -> Result<(Reference, PullOptions), Status> {
    let reference: Reference = req.image.trim().parse().map_err(|e| {
        Status::invalid_argument(format!("pull {:?}: not a valid reference: {e}", req.image))
    })?;
    let platform = match req.platform.trim() {
        "" => None,
        p => Some(platform(p)?),
    };
    let credentials = if !req.username.is_empty() {
        Credentials::Basic {
            username: req.username,
            password: req.password,
        }
    } else if !req.token.is_empty() {
        Credentials::Bearer(req.token)
    } else {
        Credentials::Anonymous
    };
    info!(image = %reference, platform = ?platform, "pulling image (admin)");
    Ok((
        reference,
        PullOptions {
            credentials,
            platform,
        },
    ))
}

/// A `Write` that sends what it gets, in CHUNK-sized messages, to the export's stream.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Chunk, Status>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Chunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A `Read` over the import's chunks (received on the async side).
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.cur = next?;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[tonic::async_trait]
impl Images for AdminImages {
    async fn pull(&self, req: Request<PullRequest>) -> Result<Response<PullResponse>, Status> {
        let (reference, opts) = pull_request(req.into_inner())?;
        let image = self
            .store
            .pull(&reference, &opts)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(PullResponse {
            name: reference.to_string(),
            image_id: image.config_digest.to_string(),
        }))
    }

    type PullWithProgressStream = ReceiverStream<Result<PullProgress, Status>>;

    async fn pull_with_progress(
        &self,
        req: Request<PullRequest>,
    ) -> Result<Response<Self::PullWithProgressStream>, Status> {
        let (reference, opts) = pull_request(req.into_inner())?;
        let rx = super::pull_stream::pull_with_progress(self.store.clone(), reference, opts);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn tag(&self, req: Request<TagRequest>) -> Result<Response<TagResponse>, Status> {
        let req = req.into_inner();
        let target: Reference = req.target.trim().parse().map_err(|e| {
            Status::invalid_argument(format!("tag {:?}: not a valid name: {e}", req.target))
        })?;
        if target.tag().is_none() {
            return Err(Status::invalid_argument(format!(
                "tag {:?}: a tag name is needed (a digest cannot be assigned)",
                req.target
            )));
        }
        let store = self.store.clone();
        let name = target.to_string();
        let (name, id) = tokio::task::spawn_blocking(move || {
            let img = find(&store, &req.source)?;
            store
                .metadata()
                .put_image(&img, Some(&name))
                .map_err(|e| internal(&format!("tag {name}"), e))?;
            info!(image = %img.config_digest, name = %name, "tagged");
            Ok::<_, Status>((name, img.config_digest.to_string()))
        })
        .await
        .map_err(|e| internal("tag", e))??;
        Ok(Response::new(TagResponse { name, image_id: id }))
    }

    type ExportStream = ReceiverStream<Result<Chunk, Status>>;

    async fn export(
        &self,
        req: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let queries = req.into_inner().images;
        if queries.is_empty() {
            return Err(Status::invalid_argument("export: name at least one image"));
        }
        let store = self.store.clone();
        // Resolved before the stream starts, so a missing image is the call's status.
        let lookup = store.clone();
        let names = tokio::task::spawn_blocking(move || {
            queries
                .iter()
                .map(|q| {
                    let img = find(&lookup, q)?;
                    // The name asked for when the image has it (so the archive carries it).
                    let normalised = q.parse::<Reference>().ok().map(|r| r.to_string());
                    Ok(normalised
                        .filter(|n| img.names.contains(n))
                        .unwrap_or_else(|| img.manifest_digest.to_string()))
                })
                .collect::<Result<Vec<String>, Status>>()
        })
        .await
        .map_err(|e| internal("export", e))??;
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter {
                buf: Vec::with_capacity(CHUNK),
                tx: tx.clone(),
            };
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let result = store
                .export_archive(&refs, &mut w)
                .and_then(|()| w.flush().map_err(image_store::ExportError::Write));
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(internal("export", e)));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn import(
        &self,
        req: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<ImportResponse>, Status> {
        let mut incoming = req.into_inner();
        let first = incoming.message().await?.unwrap_or_default();
        let base_name =
            match first.base_name.trim() {
                "" => None,
                b => Some(b.parse::<Reference>().map_err(|e| {
                    Status::invalid_argument(format!("import: base name {b:?}: {e}"))
                })?),
            };
        let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
        let store = self.store.clone();
        let import = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            };
            let opts = ImportOptions {
                base_name,
                ..Default::default()
            };
            store.import_archive(reader, &opts)
        });
        let mut data = first.data;
        let mut receive_error = None;
        loop {
            // A failed import stops reading: the receiver is gone.
            if !data.is_empty() && tx.send(Ok(std::mem::take(&mut data))).await.is_err() {
                break;
            }
            match incoming.message().await {
                Ok(Some(m)) => data = m.data,
                Ok(None) => break,
                Err(e) => {
                    // The archive is cut short: the import fails rather than reading a prefix.
                    let cut = io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string());
                    let _ = tx.send(Err(cut)).await;
                    receive_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let result = import.await.map_err(|e| internal("import", e))?;
        if let Some(e) = receive_error {
            return Err(e);
        }
        let images = result.map_err(|e| Status::invalid_argument(e.to_string()))?;
        info!(images = images.len(), "imported");
        Ok(Response::new(ImportResponse {
            images: images
                .into_iter()
                .map(|i| ImportedImage {
                    names: i.names,
                    image_id: i.config_digest.to_string(),
                })
                .collect(),
        }))
    }
}
