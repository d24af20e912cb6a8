//! Serving the CRI on a unix socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;
use image_store::ImageStore;
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
    #[error(transparent)]
    ShimSocketDir(#[from] crate::shim_client::SocketDirError),
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
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves RuntimeService and ImageService (on the image store under `config.root`) on
/// `listener` until `shutdown` completes.
pub async fn serve(
    config: Arc<Config>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // berthd resolved it already; a config built otherwise (tests) gets this host's default.
    let config = match config.cgroup.driver {
        Some(_) => config,
        None => Arc::new(
            Config::clone(&config)
                .with_resolved_cgroup_driver(crate::cgroup_driver::HostFacts::probe),
        ),
    };
    crate::shim_client::prepare_socket_dir(&config.shim_socket_dir)?;
    let store = image::open_store(&config).map_err(|source| ServeError::ImageStore {
        path: config.root.clone(),
        source,
    })?;
    let store = Arc::new(store);
    let (images, image_gc) = Images::new(store.clone(), &config);
    let admin = crate::service::admin::AdminImages::new(store.clone()).into_server();
    let mut runtime = Runtime::new(config, store.clone());
    runtime.start_streaming().await?;
    // Graceful shutdown waits for open streams (a kubelet's GetContainerEvents never ends), so
    // it is bounded: after SHUTDOWN_GRACE the remaining connections are dropped.
    let served = {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(runtime))
            .add_service(ImageServiceServer::new(images))
            .add_service(admin)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop_rx.changed().await;
            });
        tokio::pin!(server);
        tokio::select! {
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
        }
        // The server and its services are dropped here.
    };
    // The image GC worker ends after its current run.
    let _ = image_gc.await;
    release_store(store).await;
    served?;
    Ok(())
}

/// How long [`serve`] waits at its end for the image store's last users to let go of it.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `store` is the image store's last reference, then drops it: the
/// database is closed when [`serve`] returns, so a server started next on the same root (a
/// restart within one process) can open it. The holders let go shortly after the services
/// are dropped — the streaming server's tasks end at their next poll once aborted, blocking
/// jobs finish — unless a client kept a stream open past the shutdown grace.
async fn release_store(store: Arc<ImageStore>) {
    let deadline = tokio::time::Instant::now() + STORE_RELEASE_WAIT;
    while Arc::strong_count(&store) > 1 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                holders = Arc::strong_count(&store) - 1,
                "the image store is still in use at shutdown"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
