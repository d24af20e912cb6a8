//! Serving the CRI on a unix socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::service::{image, image::Images, runtime::Runtime};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {path}: {source}")]
    Listen {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open the image store at {path}: {source}")]
    ImageStore {
        path: std::path::PathBuf,
        #[source]
        source: image_store::StoreError,
    },
    #[error("start the streaming server: {0}")]
    Streaming(#[from] crate::service::streaming::StreamingError),
    #[error("serve the CRI: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds the CRI socket (replacing a stale one; only root may connect).
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// How long shutdown waits for open RPC streams.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves RuntimeService and ImageService (on the image store under `config.root`) on
/// `listener` until `shutdown` completes.
pub async fn serve(
    config: Arc<Config>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let store = image::open_store(&config).map_err(|source| ServeError::ImageStore {
        path: config.root.clone(),
        source,
    })?;
    let store = Arc::new(store);
    let (images, image_gc) = Images::new(store.clone(), &config);
    let admin = crate::service::admin::AdminImages::new(store.clone()).into_server();
    let mut runtime = Runtime::new(config, store);
    runtime.start_streaming().await?;
    // Graceful shutdown waits for open streams (a kubelet's GetContainerEvents never ends), so
    // it is bounded: after SHUTDOWN_GRACE the remaining connections are dropped.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(runtime))
        .add_service(ImageServiceServer::new(images))
        .add_service(admin)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            let _ = stop_rx.changed().await;
        });
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "closing streams still open at shutdown");
                    Ok(())
                }
            }
        }
    };
    // The services are dropped: the image GC worker ends after its current run.
    let _ = image_gc.await;
    served?;
    Ok(())
}
