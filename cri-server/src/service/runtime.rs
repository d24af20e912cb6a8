//! RuntimeService: version, status, runtime config here; the pod sandbox and container RPCs,
//! their stats and their list streams (KEP-5825, [`super::list_stream`]) go to the sandbox
//! and container services.

use std::sync::{Arc, Mutex};

use cri_api::v1 as cri;
use cri_api::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::container::{ContainerService, EventStream as ContainerEvents};
use super::handler_features::HandlerFeatures;
use super::list_stream::ListStream;
use super::sandbox::SandboxService;
use super::streaming::{StreamingBackend, StreamingError};
use crate::config::{CgroupDriver, Config};
use image_store::ImageStore;

/// CRI API version berth implements.
pub const CRI_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "berth";
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// RuntimeConfig: the cgroup driver in use (resolved at start), which the kubelet (1.34+)
/// adopts.
fn runtime_config_of(config: &Config) -> cri::RuntimeConfigResponse {
    let driver = match config.cgroup_driver() {
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
    };
    cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}

/// A CRI streaming request the server refused.
/// Whether a host-network pod can have its own user namespace: the default handler (listed
/// under "") joins user namespaces and mounts recursively read-only, which the host's /sys
/// bound into such a pod needs.
fn userns_host_network(handlers: &[cri::RuntimeHandler]) -> bool {
    handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features.as_ref())
        .is_some_and(|f| f.user_namespaces && f.recursive_read_only_mounts)
}

fn streaming_status(e: berth_streaming::RequestError) -> Status {
    match e {
        berth_streaming::RequestError::TooManyInFlight { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        berth_streaming::RequestError::Entropy(_) => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

pub struct Runtime {
    config: Arc<Config>,
    pod_cidr: Mutex<String>,
    sandboxes: SandboxService,
    containers: ContainerService,
    streaming: Option<berth_streaming::StreamingServer>,
    /// What each handler's runtime can do (probed at the first lookup and again when its
    /// binary changed); shared with the container service.
    features: Arc<HandlerFeatures>,
}

impl Runtime {
    pub fn new(config: Arc<Config>, images: Arc<ImageStore>) -> Self {
        let sandboxes = SandboxService::new(config.clone(), images.clone());
        let features = Arc::new(HandlerFeatures::new());
        let containers = ContainerService::new(config.clone(), images, features.clone());
        containers.set_sandboxes(sandboxes.clone());
        sandboxes.on_pause_exit(containers.sandbox_stopped_publisher());
        Self {
            sandboxes,
            containers,
            config,
            pod_cidr: Mutex::new(String::new()),
            streaming: None,
            features,
        }
    }

    /// Starts the exec/attach/port-forward server on `[streaming] address`.
    pub async fn start_streaming(&mut self) -> Result<(), StreamingError> {
        let backend = StreamingBackend::new(self.containers.clone(), self.sandboxes.clone());
        self.streaming = Some(super::streaming::start(&self.config.streaming, backend).await?);
        Ok(())
    }

    fn streaming(&self) -> Result<&berth_streaming::StreamingServer, Status> {
        self.streaming
            .as_ref()
            .ok_or_else(|| Status::unavailable("berth: the streaming server is not running"))
    }

    /// RuntimeStatus's handlers: each configured one, and the default again under the name
    /// "" (as containerd lists it: a pod with no RuntimeClass asks for ""), with what its
    /// runtime can do — asked at the first Status and again whenever its binary changed.
    async fn runtime_handlers(&self) -> Vec<cri::RuntimeHandler> {
        let default = self.config.default_runtime.clone();
        let paths: Vec<_> = self
            .config
            .runtimes
            .iter()
            .map(|(name, h)| (name.clone(), h.path.clone()))
            .collect();
        let features = self.features.clone();
        tokio::task::spawn_blocking(move || {
            let probed: Vec<_> = paths
                .into_iter()
                .map(|(name, path)| (name, features.of(&path)))
                .collect();
            let default = probed
                .iter()
                .find(|(name, _)| *name == default)
                .map(|(_, f)| (String::new(), *f));
            default
                .into_iter()
                .chain(probed)
                .map(|(name, f)| cri::RuntimeHandler {
                    name,
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: f.rro_mounts,
                        user_namespaces: f.user_namespaces(),
                    }),
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// The pod CIDR the kubelet last gave with UpdateRuntimeConfig.
    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.lock().expect("pod cidr lock").clone()
    }

    fn conditions(&self) -> Vec<cri::RuntimeCondition> {
        let handler = &self.config.runtimes[&self.config.default_runtime];
        let runtime_ready = handler.path.exists();
        vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: runtime_ready,
                reason: if runtime_ready {
                    String::new()
                } else {
                    "RuntimeBinaryMissing".into()
                },
                message: if runtime_ready {
                    String::new()
                } else {
                    format!("OCI runtime {} not found", handler.path.display())
                },
            },
            match self.sandboxes.network_ready() {
                Ok(()) => cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Err(message) => cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message,
                },
            },
        ]
    }
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: RUNTIME_VERSION.into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let mut info = std::collections::HashMap::new();
        if req.get_ref().verbose {
            info.insert("config".to_owned(), self.config.to_toml());
            info.insert("podCIDR".to_owned(), self.pod_cidr());
        }
        let handlers = self.runtime_handlers().await;
        let userns_host_network = userns_host_network(&handlers);
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: self.conditions(),
            }),
            info,
            runtime_handlers: handlers,
            features: Some(cri::RuntimeFeatures {
                // SupplementalGroupsPolicy Strict is honoured (spec::process), and
                // ContainerStatus.user reports the groups the container runs with.
                supplemental_groups_policy: true,
                // KEP-5607: a host-network pod in its own user namespace gets the host's
                // /sys bound recursively read-only (spec::mounts::sysfs_for_userns), so it
                // works where the default handler joins user namespaces and mounts rro
                // (cri-server/tests/userns.rs runs one under every handler).
                user_namespaces_host_network: userns_host_network,
                // KEP-5855: noexec, nodev and nosuid reach the bind's OCI options (every
                // runtime remounts with them); other options are refused (spec::mounts).
                mount_options: true,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_config_of(&self.config)))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *self.pod_cidr.lock().expect("pod cidr lock") = cidr;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        self.sandboxes
            .run(req.into_inner(), &self.containers)
            .await
            .map(Response::new)
    }
    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.sandboxes
            .stop(req.into_inner(), &self.containers)
            .await
            .map(Response::new)
    }
    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.sandboxes
            .remove(req.into_inner(), &self.containers)
            .await
            .map(Response::new)
    }
    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        self.sandboxes
            .status(req.into_inner(), &self.containers)
            .await
            .map(Response::new)
    }
    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        self.sandboxes
            .list(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        self.containers
            .create(req.into_inner(), &self.sandboxes)
            .await
            .map(Response::new)
    }
    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.containers
            .start(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        self.containers
            .stop(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.containers
            .remove(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        self.containers
            .list(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        self.containers
            .status(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        self.containers
            .update_resources(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.containers
            .reopen_log(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        self.containers
            .exec_sync(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let req = req.into_inner();
        self.containers.running(&req.container_id)?;
        let url = self.streaming()?.exec_url(&req).map_err(streaming_status)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }
    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let req = req.into_inner();
        self.containers.running(&req.container_id)?;
        let url = self
            .streaming()?
            .attach_url(&req)
            .map_err(streaming_status)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }
    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let req = req.into_inner();
        if !req.pod_sandbox_id.is_empty() {
            self.sandboxes.sandbox(&req.pod_sandbox_id).map_err(|e| {
                Status::not_found(format!("pod sandbox {}: {e}", req.pod_sandbox_id))
            })?;
        }
        let url = self
            .streaming()?
            .port_forward_url(&req)
            .map_err(streaming_status)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }
    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        self.containers
            .stats(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        self.containers
            .list_stats(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        self.sandboxes
            .stats(req.into_inner(), &self.containers)
            .await
            .map(Response::new)
    }
    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        self.sandboxes
            .list_stats(req.into_inner(), &self.containers)
            .await
            .map(Response::new)
    }
    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "berth: CheckpointContainer needs CRIU, which berth does not use",
        ))
    }

    async fn checkpoint_pod(
        &self,
        _: Request<cri::CheckpointPodRequest>,
    ) -> Result<Response<cri::CheckpointPodResponse>, Status> {
        Err(Status::unimplemented(
            "berth: CheckpointPod needs CRIU, which berth does not use",
        ))
    }
    async fn restore_pod(
        &self,
        _: Request<cri::RestorePodRequest>,
    ) -> Result<Response<cri::RestorePodResponse>, Status> {
        Err(Status::unimplemented(
            "berth: RestorePod needs CRIU, which berth does not use",
        ))
    }
    async fn update_pod_sandbox_resources(
        &self,
        req: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        self.sandboxes
            .update_resources(req.into_inner())
            .await
            .map(Response::new)
    }

    type StreamPodSandboxesStream = ListStream<cri::StreamPodSandboxesResponse>;
    async fn stream_pod_sandboxes(
        &self,
        req: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        Ok(Response::new(self.sandboxes.stream(req.into_inner())))
    }
    type StreamContainersStream = ListStream<cri::StreamContainersResponse>;
    async fn stream_containers(
        &self,
        req: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        Ok(Response::new(self.containers.stream(req.into_inner())))
    }
    type StreamContainerStatsStream = ListStream<cri::StreamContainerStatsResponse>;
    async fn stream_container_stats(
        &self,
        req: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        Ok(Response::new(
            self.containers.stream_stats(req.into_inner()),
        ))
    }
    type StreamPodSandboxStatsStream = ListStream<cri::StreamPodSandboxStatsResponse>;
    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.sandboxes.stream_stats(req, &self.containers),
        ))
    }
    type StreamPodSandboxMetricsStream = ListStream<cri::StreamPodSandboxMetricsResponse>;
    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        Ok(Response::new(
            self.sandboxes.stream_metrics(&self.containers),
        ))
    }

    type GetContainerEventsStream = ContainerEvents;

    async fn get_container_events(
        &self,
        req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        self.containers
            .events(req.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: super::metrics::descriptors(),
        }))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        self.sandboxes
            .metrics(&self.containers)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup_driver::HostFacts;

    fn reported(config: Config) -> i32 {
        runtime_config_of(&config).linux.unwrap().cgroup_driver
    }

    #[test]
    fn runtime_config_reports_the_resolved_driver() {
        let systemd_v2 = || HostFacts {
            systemd_booted: true,
            cgroup2: true,
        };
        let plain = || HostFacts {
            systemd_booted: false,
            cgroup2: false,
        };
        let detected = Config::default().with_resolved_cgroup_driver(systemd_v2);
        assert_eq!(reported(detected), cri::CgroupDriver::Systemd as i32);
        let detected = Config::default().with_resolved_cgroup_driver(plain);
        assert_eq!(reported(detected), cri::CgroupDriver::Cgroupfs as i32);
        let mut explicit = Config::default();
        explicit.cgroup.driver = Some(CgroupDriver::Cgroupfs);
        let explicit = explicit.with_resolved_cgroup_driver(systemd_v2);
        assert_eq!(reported(explicit), cri::CgroupDriver::Cgroupfs as i32);
    }

    #[test]
    fn userns_host_network_follows_the_default_handler() {
        let handler = |name: &str, userns: bool, rro: bool| cri::RuntimeHandler {
            name: name.into(),
            features: Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: rro,
                user_namespaces: userns,
            }),
        };
        assert!(userns_host_network(&[
            handler("", true, true),
            handler("runc", true, true)
        ]));
        // Another handler's support does not count; each feature is needed.
        assert!(!userns_host_network(&[
            handler("", false, true),
            handler("crun", true, true)
        ]));
        assert!(!userns_host_network(&[handler("", true, false)]));
        assert!(!userns_host_network(&[]));
    }
}
