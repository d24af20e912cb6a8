//! CRI calls the root tests share: pulling, running a pod and a container in it, reading a
//! sandbox's verbose info, waiting for an event, tearing a pod down. Each panics naming the
//! call that failed, so a test's failure says which step broke. Also the busybox image the
//! tests run, pushed to a registry of the test's own, and the starts the tests share (a
//! registry, berthd, the image pulled).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::node::{self, Leftovers, Node};
use super::pods::Pods;
use super::support::{push, Registry};

pub type Rt = RuntimeServiceClient<Channel>;
pub type Events = tonic::Streaming<cri::ContainerEventResponse>;

/// A registry of the test's own serving the busybox fixture as `<host>/berth/busybox:v1`
/// (see [`node::build_busybox`]); kept alive by the test.
pub struct Busybox {
    pub registry: Registry,
    _work: tempfile::TempDir,
    pub image: String,
}

impl Busybox {
    pub fn push() -> Busybox {
        let registry = super::support::registry();
        let work = tempfile::tempdir().unwrap();
        let layout = node::build_busybox(work.path());
        let image = format!("{}/berth/busybox:v1", registry.host);
        push(&layout, "v1", &image, &[]);
        Busybox {
            registry,
            _work: work,
            image,
        }
    }

    /// The registry's `host:port` (for `registry.insecure`).
    pub fn host(&self) -> String {
        self.registry.host.clone()
    }
}

/// The start most container tests share: the busybox image in a registry of the test's own,
/// berthd (a [`Node`]) on a temp dir allowed to pull from it over plain HTTP, a guard
/// for what a failed test leaves, a client, and the image pulled. Bind as
/// `(fx, dir, guard, node, rt, image_ref)`: bindings drop in reverse, so the guard cleans up
/// before the temp dir goes.
pub async fn busybox_node() -> (Busybox, tempfile::TempDir, Leftovers, Node, Rt, String) {
    let fx = Busybox::push();
    let dir = tempfile::tempdir().expect("temp dir");
    let guard = Leftovers::new(dir.path());
    let node = Node::start(dir.path(), &[fx.host()]).await;
    let rt = Rt::new(node.channel.clone());
    let image_ref = pull(&node.channel, &fx.image).await;
    (fx, dir, guard, node, rt, image_ref)
}

/// The start the pod tests share: [`Pods`] on test network `n` (its `TestNet`) that
/// may pull from `registry` (`host:port`) over plain HTTP, a guard for what a failed test
/// leaves, a client, and `images` pulled through the CRI. Bind as `(pods, guard, rt)`.
pub async fn pods_pulling(n: u32, registry: String, images: &[&str]) -> (Pods, Leftovers, Rt) {
    let pods = Pods::start_with(n, |c| c.registry.insecure = vec![registry]).await;
    let guard = Leftovers::new(pods.dir.path());
    let rt = pods.client().await;
    for image in images {
        pull(&pods.channel().await, image).await;
    }
    (pods, guard, rt)
}

/// Pulls `image` through the CRI; returns its image_ref.
pub async fn pull(channel: &Channel, image: &str) -> String {
    ImageServiceClient::new(channel.clone())
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage {image}: {e:?}"))
        .into_inner()
        .image_ref
}

/// A container named `name` running `sh -c script` from `image`, labelled `app=name`.
pub fn shell_container(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        labels: HashMap::from([("app".to_owned(), name.to_owned())]),
        ..Default::default()
    }
}

/// What the kubelet asks for a hostNetwork pod: the node's network, a PID namespace per
/// container (shareProcessNamespace off), the pod's IPC.
fn host_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A hostNetwork pod `name` (namespace `default`) logging under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(host_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A [`shell_container`] for a [`pod_config`] pod: logging to `<name>/0.log`, in the pod's
/// namespaces, with stdin and a TTY as asked.
pub fn container_config(
    name: &str,
    image: &str,
    script: &str,
    stdin: bool,
    tty: bool,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        log_path: format!("{name}/0.log"),
        stdin,
        tty,
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(host_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..shell_container(name, image, script)
    }
}

/// RunPodSandbox with `handler` ("" for the default); the sandbox ID or berthd's error.
pub async fn try_run_pod(
    rt: &mut Rt,
    config: &cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: handler.into(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// RunPodSandbox with `handler` ("" for the default); returns the sandbox ID.
pub async fn run_pod(rt: &mut Rt, config: &cri::PodSandboxConfig, handler: &str) -> String {
    try_run_pod(rt, config, handler)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox ({handler:?}): {e:?}"))
}

/// CreateContainer in `pod`; the container ID or berthd's error.
pub async fn create_container(
    rt: &mut Rt,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// StartContainer.
pub async fn start_container(rt: &mut Rt, id: &str) -> Result<(), tonic::Status> {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .map(drop)
}

/// CreateContainer + StartContainer in `pod`; returns the container ID.
pub async fn run_container(
    rt: &mut Rt,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let id = create_container(rt, pod, pod_config, config)
        .await
        .expect("CreateContainer");
    start_container(rt, &id).await.expect("StartContainer");
    id
}

/// StopPodSandbox + RemovePodSandbox.
pub async fn remove_pod(rt: &mut Rt, pod: &str) {
    remove_pod_for(rt, pod, pod).await
}

/// StopPodSandbox + RemovePodSandbox; a failure names `what` (the case: a handler, a pod).
pub async fn remove_pod_for(rt: &mut Rt, pod: &str, what: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: StopPodSandbox: {e}"));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: RemovePodSandbox: {e}"));
}

/// PodSandboxStatus (verbose): the status and berthd's verbose `info` (pid, image, spec…).
pub async fn pod_status(rt: &mut Rt, pod: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
    let r = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).expect("verbose info is JSON");
    (r.status.expect("a status"), info)
}

/// GetContainerEvents from now on.
pub async fn events(rt: &mut Rt) -> Events {
    rt.get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event that `wanted` accepts, within `timeout`; None if none came. Panics if the
/// stream ends.
pub async fn next_event(
    events: &mut Events,
    timeout: Duration,
    wanted: impl Fn(&cri::ContainerEventResponse) -> bool,
) -> Option<cri::ContainerEventResponse> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match tokio::time::timeout(left.min(Duration::from_secs(1)), events.message()).await {
            Ok(Ok(Some(e))) if wanted(&e) => return Some(e),
            Ok(Ok(Some(_))) | Err(_) => {}
            other => panic!("event stream ended: {other:?}"),
        }
    }
}

/// The value of metric `name` whose label `key` is `value` (any, without a label).
pub fn metric(
    descriptors: &[cri::MetricDescriptor],
    metrics: &[cri::Metric],
    name: &str,
    label: Option<(&str, &str)>,
) -> Option<u64> {
    let d = descriptors.iter().find(|d| d.name == name)?;
    metrics
        .iter()
        .find(|m| {
            m.name == name
                && label.is_none_or(|(k, v)| {
                    d.label_keys
                        .iter()
                        .position(|x| x == k)
                        .is_some_and(|i| m.label_values[i] == v)
                })
        })
        .and_then(|m| m.value.as_ref().map(|v| v.value))
}
