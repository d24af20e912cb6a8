//! ImageService on the image store (crate image-store): one file per RPC, as containerd's CRI
//! plugin. The CRI image ID is the image's config digest (`sha256:…`), as containerd reports it;
//! store records sharing a config digest (one image pulled through several manifests) are one
//! CRI image.

mod convert;
mod error;
mod fs_info;
mod list;
mod lookup;
mod pull;
mod remove;
mod stream;

use std::collections::BTreeSet;
use std::sync::Arc;

use cri_api::v1 as cri;
use cri_api::v1::image_service_server::ImageService;
use image_store::{ImageStore, StoreConfig, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::service::list_stream::ListStream;

pub use error::ImageServiceError;

/// Opens the image store under the configured root (`content/`, `snapshots/`, `metadata.db`
/// directly in `root`, as docs/architecture.md lays it out), with the configured plain-HTTP registries.
pub fn open_store(config: &Config) -> Result<ImageStore, StoreError> {
    let mut store = StoreConfig::new(&config.root);
    store.registry.insecure_hosts = config.registry.insecure.clone();
    // containerd's hosts.toml layout (mirrors, CAs, plain HTTP), read per pull.
    store.registry.config_path = Some(config.registry.config_path.clone());
    ImageStore::open(store)
}

/// The CRI ImageService.
pub struct Images {
    store: Arc<ImageStore>,
    /// RuntimeClass handlers an ImageSpec may name.
    handlers: BTreeSet<String>,
    /// Wakes the GC worker; capacity 1, so removals coalesce into one run.
    gc: mpsc::Sender<()>,
    /// The last ImageFsInfo measurement.
    fs_usage: fs_info::FsUsageCache,
}

impl Images {
    /// The service and its GC worker. The worker ends once the service is dropped (after the
    /// GC run in progress); await its handle to shut down cleanly.
    pub fn new(store: Arc<ImageStore>, config: &Config) -> (Self, JoinHandle<()>) {
        let (gc, rx) = mpsc::channel(1);
        let worker = tokio::spawn(gc_worker(store.clone(), rx));
        let images = Images {
            store,
            handlers: config.runtimes.keys().cloned().collect(),
            gc,
            fs_usage: fs_info::FsUsageCache::default(),
        };
        (images, worker)
    }

    /// Asks for a GC run (blobs and snapshots no image references any more).
    fn request_gc(&self) {
        // Full: a run is already queued and will see this removal too.
        let _ = self.gc.try_send(());
    }
}

async fn gc_worker(store: Arc<ImageStore>, mut requests: mpsc::Receiver<()>) {
    while requests.recv().await.is_some() {
        let result = store.gc().await;
        match result {
            Ok(report) => {
                for failure in &report.failures {
                    tracing::warn!(error = %failure, "image gc: cannot remove");
                }
                tracing::info!(
                    blobs = report.blobs_removed.len(),
                    snapshots = report.snapshots_removed.len(),
                    failures = report.failures.len(),
                    "image gc done"
                );
            }
            Err(e) => tracing::warn!(error = %e, "image gc failed"),
        }
    }
}

/// Runs store work (database reads, blob reads, directory walks) off the async threads.
async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, ImageServiceError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ImageServiceError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ImageServiceError::Task { what, source })?
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        Ok(Response::new(list::list(self, req.into_inner()).await?))
    }

    type StreamImagesStream = ListStream<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Ok(Response::new(stream::stream(self, req.into_inner())))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        Ok(Response::new(list::status(self, req.into_inner()).await?))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        Ok(Response::new(pull::pull(self, req.into_inner()).await?))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        Ok(Response::new(remove::remove(self, req.into_inner()).await?))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        Ok(Response::new(fs_info::fs_info(self).await?))
    }
}
