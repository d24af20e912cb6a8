//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
//! ListPodSandbox, the sandbox stats RPCs and their list streams — one file per RPC family,
//! after containerd's `internal/cri/server/podsandbox/`. Records live in
//! [`crate::store::sandbox`]; the pause process runs under a berth-shim, which outlives berthd.
//!
//! Blocking work (CNI plugins, mounts, the OCI runtime, checkpoint writes) runs on blocking
//! threads; no lock is held across it except the sandbox's own lifecycle lock, so pods start
//! and stop in parallel.

mod cgroup;
mod error;
mod files;
mod image;
mod network;
mod oci;
mod remove;
mod run;
mod stats;
mod status;
mod stop;
mod stream;
mod sweep;
mod update;

use std::path::PathBuf;
use std::sync::Arc;

use cni::NetnsDir;
use cri_api::v1 as cri;
use image_store::ImageStore;
use tonic::Status;

use super::container::ContainerService;
use crate::config::Config;
use crate::store::sandbox::{Sandbox, SandboxState, SandboxStore};
use crate::store::StoreError;

pub use error::SandboxError;
use network::PodNetwork;
pub(crate) use sweep::mounts_under;

/// The sandbox half of the RuntimeService.
#[derive(Clone)]
pub struct SandboxService {
    inner: Arc<Sandboxes>,
}

/// What every sandbox operation shares (cloned into blocking tasks).
struct Sandboxes {
    config: Arc<Config>,
    store: SandboxStore,
    network: PodNetwork,
    netns: NetnsDir,
    /// Where berth's helper binaries are looked for: next to berthd, then next to the
    /// `berth` runtime handler's binary (the same place in an installation; in tests, the
    /// cargo target dir).
    helper_dirs: Vec<PathBuf>,
    shim_binary: PathBuf,
    stats: crate::service::cpu_rate::CpuSamples,
    /// Facts about the node the spec builder needs (probed once).
    host: crate::spec::HostInfo,
    /// The image store (the configured sandbox image, its snapshots).
    images: Arc<ImageStore>,
    /// One pull of the sandbox image at a time.
    image_pulls: tokio::sync::Mutex<()>,
    /// Told when a sandbox's pause has exited (its Stopped event), once per sandbox.
    on_exit: std::sync::OnceLock<ExitListener>,
}

/// Receives a sandbox's ID and status when its pause has exited.
pub type ExitListener = Box<dyn Fn(&str, cri::PodSandboxStatus) + Send + Sync>;

impl SandboxService {
    /// Loads every sandbox record (`<root>/cri/sandboxes`); a sandbox whose pause exited
    /// while berthd was down becomes NotReady. Blocking file reads: called once, at startup.
    pub fn new(config: Arc<Config>, images: Arc<ImageStore>) -> Self {
        let (store, errors) =
            SandboxStore::open_sandboxes(config.root.join("cri").join("sandboxes"));
        for e in errors {
            tracing::error!(error = %e, "cannot load a sandbox record");
        }
        let helper_dirs = helper_dirs(&config);
        // The built-in pause image is installed now, before any request can race with it
        // (see `pause::ensure`); a failure here is logged and met again by RunPodSandbox.
        if config.sandbox.image.is_empty() {
            if let Err(e) = crate::pause::ensure(&config.root, &helper_dirs) {
                tracing::warn!(error = %e, "cannot install the built-in pause image yet");
            }
        }
        let mut bin_dirs = config.cni.bin_dirs.clone();
        bin_dirs.extend(helper_dirs.iter().cloned());
        let network = PodNetwork::new(
            config.cni.conf_dir.clone(),
            bin_dirs,
            config.root.join("cni").join("results"),
        );
        let shim_binary = helper_dirs
            .iter()
            .map(|d| d.join("berth-shim"))
            .find(|p| p.is_file())
            .unwrap_or_else(crate::shim_client::default_shim_binary);
        let service = Self {
            inner: Arc::new(Sandboxes {
                netns: NetnsDir::new(config.state.join("netns")),
                config,
                store,
                network,
                helper_dirs,
                shim_binary,
                stats: Default::default(),
                host: crate::spec::HostInfo::probe(),
                images,
                image_pulls: tokio::sync::Mutex::new(()),
                on_exit: std::sync::OnceLock::new(),
            }),
        };
        sweep::orphans(&service.inner);
        service
    }

    /// The sandbox with this ID or unique ID prefix (for the container service).
    pub fn sandbox(&self, id: &str) -> Result<Arc<Sandbox>, StoreError> {
        self.inner.store.get(id)
    }

    /// Every sandbox (for the container service).
    pub fn sandboxes(&self) -> Vec<Arc<Sandbox>> {
        self.inner.store.list()
    }

    /// Sets who hears of pause exits (set once, at startup: the container events).
    pub fn on_pause_exit(&self, listener: ExitListener) {
        let _ = self.inner.on_exit.set(listener);
    }

    /// A Ready sandbox whose pause exited becomes NotReady, and its Stopped event goes out
    /// (from whichever caller saw the exit first: the exit watcher, a status, a create).
    /// Returns the state. Blocking.
    pub fn refresh(&self, sandbox: &Sandbox) -> Result<SandboxState, StoreError> {
        self.inner.refresh(sandbox)
    }

    pub async fn run(
        &self,
        req: cri::RunPodSandboxRequest,
        containers: &ContainerService,
    ) -> Result<cri::RunPodSandboxResponse, Status> {
        let response = run::run(&self.inner, req).await?;
        let id = &response.pod_sandbox_id;
        for kind in [
            cri::ContainerEventType::ContainerCreatedEvent,
            cri::ContainerEventType::ContainerStartedEvent,
        ] {
            containers.publish_sandbox_event(id, kind, self.cri_status(id));
        }
        Ok(response)
    }

    pub async fn stop(
        &self,
        req: cri::StopPodSandboxRequest,
        containers: &ContainerService,
    ) -> Result<cri::StopPodSandboxResponse, Status> {
        stop::stop(&self.inner, &req.pod_sandbox_id, containers)
            .await
            .map(|()| cri::StopPodSandboxResponse {})
    }

    pub async fn remove(
        &self,
        req: cri::RemovePodSandboxRequest,
        containers: &ContainerService,
    ) -> Result<cri::RemovePodSandboxResponse, Status> {
        remove::remove(&self.inner, &req.pod_sandbox_id, containers)
            .await
            .map(|()| cri::RemovePodSandboxResponse {})
    }

    pub async fn status(
        &self,
        req: cri::PodSandboxStatusRequest,
        containers: &ContainerService,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        status::status(&self.inner, req, containers).await
    }

    /// UpdatePodSandboxResources: records the pod's new overhead and resources (see
    /// `update` for why the pod cgroup is not written).
    pub async fn update_resources(
        &self,
        req: cri::UpdatePodSandboxResourcesRequest,
    ) -> Result<cri::UpdatePodSandboxResourcesResponse, Status> {
        update::update_resources(&self.inner, req).await
    }

    /// The CRI status of sandbox `id` from its record (no I/O), for container events.
    pub fn cri_status(&self, id: &str) -> Option<cri::PodSandboxStatus> {
        let sandbox = self.inner.store.get(id).ok()?;
        Some(status::cri_status(&sandbox, &sandbox.state()))
    }

    pub async fn list(
        &self,
        req: cri::ListPodSandboxRequest,
    ) -> Result<cri::ListPodSandboxResponse, Status> {
        status::list(&self.inner, req).await
    }

    pub async fn stats(
        &self,
        req: cri::PodSandboxStatsRequest,
        containers: &ContainerService,
    ) -> Result<cri::PodSandboxStatsResponse, Status> {
        stats::stats(&self.inner, req, containers).await
    }

    pub async fn list_stats(
        &self,
        req: cri::ListPodSandboxStatsRequest,
        containers: &ContainerService,
    ) -> Result<cri::ListPodSandboxStatsResponse, Status> {
        stats::list_stats(&self.inner, req, containers).await
    }

    pub async fn metrics(
        &self,
        containers: &ContainerService,
    ) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
        stats::metrics(&self.inner, containers).await
    }

    /// Whether pod networking is ready (for the NetworkReady condition), and why not: the
    /// network config loads and every plugin of it is installed.
    pub fn network_ready(&self) -> Result<(), String> {
        self.inner.network.ready()
    }
}

impl Sandboxes {
    /// The cgroup driver new pods get (a pod keeps the one it was made under:
    /// [`crate::store::sandbox::SandboxMeta::cgroup_driver`]).
    fn cgroup_driver(&self) -> crate::config::CgroupDriver {
        self.config.cgroup_driver()
    }

    /// See [`SandboxService::refresh`].
    fn refresh(&self, sandbox: &Sandbox) -> Result<SandboxState, StoreError> {
        if sandbox.observe_exit()? {
            self.exited(sandbox);
        }
        Ok(sandbox.state())
    }

    /// Tells the listener that `sandbox`'s pause exited (its caller made it NotReady).
    fn exited(&self, sandbox: &Sandbox) {
        if let Some(listener) = self.on_exit.get() {
            listener(
                &sandbox.meta.id,
                status::cri_status(sandbox, &sandbox.state()),
            );
        }
    }
}

/// berthd's own directory, then the `berth` runtime handler's.
fn helper_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
    {
        dirs.push(dir);
    }
    if let Some(dir) = config
        .runtimes
        .get("berth")
        .and_then(|h| h.path.parent().map(PathBuf::from))
    {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Runs blocking work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f).await?
}
