//! Containers: CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ListContainers, ContainerStatus, UpdateContainerResources, ReopenContainerLog, ExecSync,
//! the container stats RPCs and GetContainerEvents. (Being written: issue 5.)

use std::pin::Pin;
use std::sync::Arc;

use image_store::ImageStore;
use k8s_cri::v1 as cri;
use tokio_stream::Stream;
use tonic::Status;

use super::not_yet;
use super::sandbox::SandboxService;
use crate::config::Config;

const WHY: &str = "containers are being built (issue 5)";

pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// The container half of the RuntimeService.
pub struct ContainerService {
    #[allow(dead_code)]
    config: Arc<Config>,
    #[allow(dead_code)]
    images: Arc<ImageStore>,
}

impl ContainerService {
    pub fn new(config: Arc<Config>, images: Arc<ImageStore>) -> Self {
        Self { config, images }
    }

    pub async fn create(
        &self,
        _req: cri::CreateContainerRequest,
        _sandboxes: &SandboxService,
    ) -> Result<cri::CreateContainerResponse, Status> {
        Err(not_yet("CreateContainer", WHY))
    }
    pub async fn start(
        &self,
        _req: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse, Status> {
        Err(not_yet("StartContainer", WHY))
    }
    pub async fn stop(
        &self,
        _req: cri::StopContainerRequest,
    ) -> Result<cri::StopContainerResponse, Status> {
        Err(not_yet("StopContainer", WHY))
    }
    pub async fn remove(
        &self,
        _req: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse, Status> {
        Err(not_yet("RemoveContainer", WHY))
    }
    pub async fn list(
        &self,
        _req: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse, Status> {
        Err(not_yet("ListContainers", WHY))
    }
    pub async fn status(
        &self,
        _req: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        Err(not_yet("ContainerStatus", WHY))
    }
    pub async fn update_resources(
        &self,
        _req: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse, Status> {
        Err(not_yet("UpdateContainerResources", WHY))
    }
    pub async fn reopen_log(
        &self,
        _req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse, Status> {
        Err(not_yet("ReopenContainerLog", WHY))
    }
    pub async fn exec_sync(
        &self,
        _req: cri::ExecSyncRequest,
    ) -> Result<cri::ExecSyncResponse, Status> {
        Err(not_yet("ExecSync", WHY))
    }
    pub async fn stats(
        &self,
        _req: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse, Status> {
        Err(not_yet("ContainerStats", WHY))
    }
    pub async fn list_stats(
        &self,
        _req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse, Status> {
        Err(not_yet("ListContainerStats", WHY))
    }
    pub async fn events(&self, _req: cri::GetEventsRequest) -> Result<EventStream, Status> {
        Err(not_yet("GetContainerEvents", WHY))
    }

    /// Stops every container of a sandbox (StopPodSandbox), SIGTERM then SIGKILL after
    /// `timeout_secs`.
    pub async fn stop_all_in_sandbox(
        &self,
        _sandbox_id: &str,
        _timeout_secs: i64,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Removes every container of a sandbox (RemovePodSandbox).
    pub async fn remove_all_in_sandbox(&self, _sandbox_id: &str) -> Result<(), Status> {
        Ok(())
    }
}
