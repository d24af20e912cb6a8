//! The CRI client: gRPC over berthd's unix socket, with errors a person understands.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::resolve::{self, Named};

/// The client of berthd's own admin service (tag, save, load).
pub mod admin {
    #![allow(clippy::all)]
    tonic::include_proto!("berth.admin.v1");
}

pub const DEFAULT_ADDRESS: &str = "unix:///run/berth/berth.sock";

/// berthd's two CRI services over one connection (clones share it).
#[derive(Clone)]
pub struct Cri {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    /// berth's own image service beside the CRI (`berth.admin.v1.Images`).
    pub admin: admin::images_client::ImagesClient<Channel>,
}

/// The socket path of an address: `unix:///path` or a bare path.
pub fn socket_path(address: &str) -> Result<PathBuf> {
    if let Some(p) = address.strip_prefix("unix://") {
        return Ok(PathBuf::from(p));
    }
    if address.contains("://") {
        bail!("unsupported address {address:?}: berthd listens on a unix socket (unix:///path)");
    }
    Ok(PathBuf::from(address))
}

pub async fn connect(address: &str) -> Result<Cri> {
    let path = socket_path(address)?;
    // A plain connect first, for an error that says what to do.
    if let Err(e) = std::os::unix::net::UnixStream::connect(&path) {
        return Err(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
                "berthd is not running (nothing listens on {}): start it with `scripts/run` \
                 or `systemctl start berthd`, or point --address / BERTH_ADDRESS at its socket",
                path.display()
            ),
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "permission denied on {}: run berth as root (sudo berth …)",
                path.display()
            ),
            _ => anyhow!(e).context(format!("connect to berthd at {}", path.display())),
        });
    }
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .context("connect to berthd")?;
    Ok(Cri {
        rt: RuntimeServiceClient::new(channel.clone()),
        img: ImageServiceClient::new(channel.clone()),
        admin: admin::images_client::ImagesClient::new(channel).max_decoding_message_size(8 << 20),
    })
}

/// An RPC's answer, or its status as an error that names the call.
pub fn answer<T>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) -> Result<T> {
    r.map(tonic::Response::into_inner).map_err(|s| {
        let msg = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_owned()
        };
        anyhow!("{what}: {msg}")
    })
}

impl Cri {
    pub async fn containers(&mut self) -> Result<Vec<cri::Container>> {
        let r = self
            .rt
            .list_containers(cri::ListContainersRequest::default())
            .await;
        Ok(answer(r, "list containers")?.containers)
    }

    pub async fn pods(&mut self) -> Result<Vec<cri::PodSandbox>> {
        let r = self
            .rt
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await;
        Ok(answer(r, "list pods")?.items)
    }

    pub async fn images(&mut self) -> Result<Vec<cri::Image>> {
        let r = self
            .img
            .list_images(cri::ListImagesRequest::default())
            .await;
        Ok(answer(r, "list images")?.images)
    }

    pub async fn resolve_container(&mut self, query: &str) -> Result<String> {
        let items: Vec<Named> = self
            .containers()
            .await?
            .into_iter()
            .map(|c| Named {
                names: c.metadata.map(|m| vec![m.name]).unwrap_or_default(),
                id: c.id,
            })
            .collect();
        resolve::resolve("container", query, &items)
    }

    pub async fn resolve_pod(&mut self, query: &str) -> Result<String> {
        let items: Vec<Named> = self
            .pods()
            .await?
            .into_iter()
            .map(|p| Named {
                names: p.metadata.map(|m| vec![m.name]).unwrap_or_default(),
                id: p.id,
            })
            .collect();
        resolve::resolve("pod", query, &items)
    }

    /// An image by ID (prefix), repo tag or repo digest, as typed or normalized
    /// (`busybox` → `docker.io/library/busybox:latest`).
    pub async fn resolve_image(&mut self, query: &str) -> Result<String> {
        let items: Vec<Named> = self
            .images()
            .await?
            .into_iter()
            .map(|i| Named {
                names: i.repo_tags.into_iter().chain(i.repo_digests).collect(),
                id: i.id,
            })
            .collect();
        let normalized = resolve::normalize_image(query);
        if items.iter().any(|i| i.names.contains(&normalized)) {
            return resolve::resolve("image", &normalized, &items);
        }
        resolve::resolve("image", query, &items)
    }

    pub async fn container_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse> {
        let r = self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose,
            })
            .await;
        answer(r, "container status")
    }
}
