//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
//! ListPodSandbox and the sandbox stats RPCs. (Being written: issue 5.)

use std::sync::Arc;

use image_store::ImageStore;
use k8s_cri::v1 as cri;
use tonic::Status;

use super::container::ContainerService;
use super::not_yet;
use crate::config::Config;

const WHY: &str = "pod sandboxes are being built (issue 5)";

/// The sandbox half of the RuntimeService.
pub struct SandboxService {
    #[allow(dead_code)]
    config: Arc<Config>,
    #[allow(dead_code)]
    images: Arc<ImageStore>,
}

impl SandboxService {
    pub fn new(config: Arc<Config>, images: Arc<ImageStore>) -> Self {
        Self { config, images }
    }

    pub async fn run(
        &self,
        _req: cri::RunPodSandboxRequest,
        _containers: &ContainerService,
    ) -> Result<cri::RunPodSandboxResponse, Status> {
        Err(not_yet("RunPodSandbox", WHY))
    }

    pub async fn stop(
        &self,
        _req: cri::StopPodSandboxRequest,
        _containers: &ContainerService,
    ) -> Result<cri::StopPodSandboxResponse, Status> {
        Err(not_yet("StopPodSandbox", WHY))
    }

    pub async fn remove(
        &self,
        _req: cri::RemovePodSandboxRequest,
        _containers: &ContainerService,
    ) -> Result<cri::RemovePodSandboxResponse, Status> {
        Err(not_yet("RemovePodSandbox", WHY))
    }

    pub async fn status(
        &self,
        _req: cri::PodSandboxStatusRequest,
        _containers: &ContainerService,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        Err(not_yet("PodSandboxStatus", WHY))
    }

    pub async fn list(
        &self,
        _req: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse, Status> {
        Err(not_yet("ListPodSandbox", WHY))
    }

    pub async fn stats(
        &self,
        _req: cri::PodSandboxStatsRequest,
        _containers: &ContainerService,
    ) -> Result<cri::PodSandboxStatsResponse, Status> {
        Err(not_yet("PodSandboxStats", WHY))
    }

    pub async fn list_stats(
        &self,
        _req: cri::ListPodSandboxStatsRequest,
        _containers: &ContainerService,
    ) -> Result<cri::ListPodSandboxStatsResponse, Status> {
        Err(not_yet("ListPodSandboxStats", WHY))
    }

    /// Whether pod networking is ready (for the NetworkReady condition), and why not.
    pub fn network_ready(&self) -> Result<(), String> {
        Err("berth: pod networking (CNI) is not wired into berthd yet".into())
    }
}
