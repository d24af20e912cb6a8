//! The pods benchmark's CRI client: the same calls, with the same configs, against either
//! daemon — what a kubelet sends to start a BestEffort pod of one container and to tear it
//! down. Every call is bounded by a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::pod_daemon::Daemon;

/// Limit for one CRI call.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// One pod's start, per call as the kubelet sees it.
#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    pub run: Duration,
    pub create: Duration,
    /// StartContainer + the ContainerStatus that says running.
    pub start: Duration,
    pub total: Duration,
}

#[derive(Clone)]
pub struct Client {
    pub name: &'static str,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    logs: PathBuf,
    cgroup_root: String,
    image: String,
}

async fn bounded<T>(
    what: &str,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => bail!("{what}: {:?}: {}", s.code(), s.message()),
        Err(_) => bail!("{what}: no answer in {CALL_TIMEOUT:?}"),
    }
}

impl Client {
    pub async fn new(d: &Daemon, image: &str) -> Result<Client> {
        let ch = d.channel().await?;
        Ok(Client {
            name: d.kind.name(),
            rt: RuntimeServiceClient::new(ch.clone()),
            images: ImageServiceClient::new(ch),
            logs: d.dir.join("logs"),
            cgroup_root: d.cgroup_root.clone(),
            image: image.to_owned(),
        })
    }

    pub async fn pull(&self, image: &str) -> Result<()> {
        let mut c = self.images.clone();
        bounded(
            &format!("PullImage {image}"),
            c.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .await?;
        Ok(())
    }

    fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.logs.join(name).display().to_string(),
            labels: HashMap::from([("app".to_owned(), "bench".to_owned())]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{name}", self.cgroup_root),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_config(&self) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "main".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "main/0.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox + CreateContainer + StartContainer, then ContainerStatus must say
    /// running. Returns the pod's ID and the times of the calls (the total: from the first
    /// call to that status).
    pub async fn start_pod(&self, name: &str) -> Result<(String, StartTimes)> {
        let mut rt = self.rt.clone();
        let config = self.pod_config(name);
        let t = Instant::now();
        let pod = bounded(
            "RunPodSandbox",
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }),
        )
        .await?
        .pod_sandbox_id;
        let run = t.elapsed();
        let id = bounded(
            "CreateContainer",
            rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(self.container_config()),
                sandbox_config: Some(config),
            }),
        )
        .await
        .with_context(|| format!("pod {pod}"))?
        .container_id;
        let create = t.elapsed() - run;
        bounded(
            "StartContainer",
            rt.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await?;
        let status = bounded(
            "ContainerStatus",
            rt.container_status(cri::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            }),
        )
        .await?
        .status
        .context("ContainerStatus without a status")?;
        let total = t.elapsed();
        if status.state != cri::ContainerState::ContainerRunning as i32 {
            bail!("container of pod {pod} is {:?}, not running", status.state);
        }
        let times = StartTimes {
            run,
            create,
            start: total - run - create,
            total,
        };
        Ok((pod, times))
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub async fn teardown(&self, pod: &str) -> Result<Duration> {
        let mut rt = self.rt.clone();
        let t = Instant::now();
        bounded(
            "StopPodSandbox",
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            }),
        )
        .await?;
        bounded(
            "RemovePodSandbox",
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            }),
        )
        .await?;
        Ok(t.elapsed())
    }

    /// Tears down every pod the daemon still has (after a failure); returns how many.
    pub async fn remove_all(&self) -> Result<usize> {
        let mut rt = self.rt.clone();
        let pods = bounded(
            "ListPodSandbox",
            rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        )
        .await?
        .items;
        for p in &pods {
            self.teardown(&p.id).await?;
        }
        Ok(pods.len())
    }
}

/// A pod network, a PID namespace per container, the pod's IPC (the kubelet's defaults).
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}
