//! Containers: CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ListContainers, ContainerStatus, UpdateContainerResources, ReopenContainerLog, ExecSync,
//! the container stats RPCs, GetContainerEvents and the list streams (StreamContainers,
//! StreamContainerStats) — one file per RPC family, as containerd's CRI plugin
//! (`internal/cri/server/container_*.go`). State lives in [`crate::store::container`]; the
//! processes are berth-shim monitors (which outlive berthd) and the handler's OCI runtime.

mod create;
mod error;
mod events;
mod exec;
mod idmapped_snapshot;
mod idmapped_volumes;
pub(crate) mod image;
mod image_volumes;
mod monitor;
mod oci;
mod oom_watch;
mod remove;
mod sandbox_view;
mod start;
mod stats;
mod status;
mod stop;
mod stop_signal;
mod stream;
mod sweep;
mod update;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use cri_api::v1 as cri;
use image_store::ImageStore;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::Status;

use super::handler_features::HandlerFeatures;
use super::sandbox::SandboxService;
use crate::config::Config;
use crate::shim_client::{default_shim_binary, Shim};
use crate::store::container::{Container, ContainerStore};

pub use error::ContainerError;
pub(crate) use oci::OciRuntime;
pub(crate) use stats::cgroup_usage;

pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// The container half of the RuntimeService.
#[derive(Clone)]
pub struct ContainerService {
    inner: Arc<Containers>,
}

/// What every container operation shares (cloned into blocking tasks).
pub(crate) struct Containers {
    config: Arc<Config>,
    images: Arc<ImageStore>,
    store: ContainerStore,
    events: broadcast::Sender<cri::ContainerEventResponse>,
    /// Exit notifications: the watcher's wake-up, StopContainer's waiters.
    exit_events: Arc<monitor::ExitEvents>,
    /// The sandbox service, for the pod status in events.
    sandboxes: std::sync::OnceLock<SandboxService>,
    shim_binary: PathBuf,
    /// Facts about the node the spec builder needs, probed once.
    host: crate::spec::HostInfo,
    /// What each handler's runtime can do (whether berthd idmaps volumes for it).
    features: Arc<HandlerFeatures>,
    /// OOM kills the exit watcher saw in running containers' memory.events.
    oom_kills: oom_watch::OomKills,
    /// The last CPU usage of each container's stats, for `usage_nano_cores`.
    cpu: crate::service::cpu_rate::CpuSamples,
}

impl ContainerService {
    /// Loads every container record (`<root>/cri/containers`), re-adopts the shims (a
    /// container that exited while berthd was down gets its recorded exit), and starts the
    /// exit monitor. Blocking file reads: called once, at startup.
    pub fn new(
        config: Arc<Config>,
        images: Arc<ImageStore>,
        features: Arc<HandlerFeatures>,
    ) -> Self {
        let dir = config.root.join("cri").join("containers");
        let (store, errors) = ContainerStore::open(dir);
        for e in errors {
            tracing::error!(error = %e, "cannot load a container record");
        }
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Containers {
            shim_binary: shim_binary(&config),
            host: crate::spec::HostInfo {
                cdi_spec_dirs: config.cdi.spec_dirs.clone(),
                ..crate::spec::HostInfo::probe()
            },
            config,
            images,
            store,
            events,
            exit_events: Arc::new(
                monitor::ExitEvents::new().expect("a pipe to wake the exit watcher"),
            ),
            sandboxes: std::sync::OnceLock::new(),
            features,
            oom_kills: oom_watch::OomKills::default(),
            cpu: Default::default(),
        });
        monitor::recover(&inner);
        sweep::orphans(&inner);
        monitor::spawn(Arc::downgrade(&inner));
        Self { inner }
    }

    pub async fn create(
        &self,
        req: cri::CreateContainerRequest,
        sandboxes: &SandboxService,
    ) -> Result<cri::CreateContainerResponse, Status> {
        let sandbox = sandbox_view::lookup(sandboxes, &req.pod_sandbox_id).await?;
        Ok(create::create(&self.inner, req, sandbox).await?)
    }
    pub async fn start(
        &self,
        req: cri::StartContainerRequest,
    ) -> Result<cri::StartContainerResponse, Status> {
        Ok(start::start(&self.inner, req).await?)
    }
    pub async fn stop(
        &self,
        req: cri::StopContainerRequest,
    ) -> Result<cri::StopContainerResponse, Status> {
        // StopContainer is idempotent: a container that is gone (removed, or never known) is
        // stopped, as containerd answers.
        let c = match self.inner.get(&req.container_id) {
            Ok(c) => c,
            Err(ContainerError::Store(crate::store::StoreError::NotFound { .. })) => {
                tracing::debug!(container = %req.container_id, "stop: no such container");
                return Ok(cri::StopContainerResponse {});
            }
            Err(e) => return Err(e.into()),
        };
        stop::stop(&self.inner, c, req.timeout).await?;
        Ok(cri::StopContainerResponse {})
    }
    pub async fn remove(
        &self,
        req: cri::RemoveContainerRequest,
    ) -> Result<cri::RemoveContainerResponse, Status> {
        Ok(remove::remove(&self.inner, req).await?)
    }
    pub async fn list(
        &self,
        req: cri::ListContainersRequest,
    ) -> Result<cri::ListContainersResponse, Status> {
        Ok(status::list(&self.inner, req))
    }
    pub async fn status(
        &self,
        req: cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        Ok(status::status(&self.inner, req).await?)
    }
    pub async fn update_resources(
        &self,
        req: cri::UpdateContainerResourcesRequest,
    ) -> Result<cri::UpdateContainerResourcesResponse, Status> {
        Ok(update::update_resources(&self.inner, req).await?)
    }
    pub async fn reopen_log(
        &self,
        req: cri::ReopenContainerLogRequest,
    ) -> Result<cri::ReopenContainerLogResponse, Status> {
        Ok(update::reopen_log(&self.inner, req).await?)
    }
    pub async fn exec_sync(
        &self,
        req: cri::ExecSyncRequest,
    ) -> Result<cri::ExecSyncResponse, Status> {
        Ok(exec::exec_sync(&self.inner, req).await?)
    }
    pub async fn stats(
        &self,
        req: cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse, Status> {
        Ok(stats::stats(&self.inner, req).await?)
    }
    pub async fn list_stats(
        &self,
        req: cri::ListContainerStatsRequest,
    ) -> Result<cri::ListContainerStatsResponse, Status> {
        Ok(stats::list_stats(&self.inner, req).await?)
    }
    pub async fn events(&self, _req: cri::GetEventsRequest) -> Result<EventStream, Status> {
        Ok(events::subscribe(&self.inner))
    }

    /// Stops every container of a sandbox (StopPodSandbox), SIGTERM then SIGKILL after
    /// `timeout_secs`, all at once.
    pub async fn stop_all_in_sandbox(
        &self,
        sandbox_id: &str,
        timeout_secs: i64,
    ) -> Result<(), Status> {
        let mut stops = tokio::task::JoinSet::new();
        for c in self.inner.in_sandbox(sandbox_id) {
            let inner = self.inner.clone();
            stops.spawn(async move { stop::stop(&inner, c, timeout_secs).await });
        }
        let mut first_error = None;
        while let Some(joined) = stops.join_next().await {
            let result = joined.unwrap_or_else(|source| {
                Err(ContainerError::Task {
                    what: "stop container",
                    source,
                })
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Removes every container of a sandbox (RemovePodSandbox).
    pub async fn remove_all_in_sandbox(&self, sandbox_id: &str) -> Result<(), Status> {
        for c in self.inner.in_sandbox(sandbox_id) {
            remove::remove_container(&self.inner, c).await?;
        }
        Ok(())
    }

    /// A running container, its handler's OCI runtime and its shim (for the streaming
    /// server's exec and attach).
    pub(crate) fn running(&self, id: &str) -> Result<(Arc<Container>, OciRuntime, Shim), Status> {
        let c = self.inner.get(id)?;
        let state = c.status().state;
        let crate::store::container::State::Running { pid, .. } = state else {
            return Err(ContainerError::WrongState {
                id: c.id().to_owned(),
                state: state.name(),
                op: "exec or attach (it is not running)",
            }
            .into());
        };
        let runtime = self.inner.runtime(&c)?;
        let shim = self.inner.shim(&c, pid);
        Ok((c, runtime, shim))
    }

    /// The metrics of the running containers of a sandbox (ListPodSandboxMetrics). Blocking.
    pub fn metrics_in_sandbox(
        &self,
        sandbox_id: &str,
        pod: &cri::PodSandboxMetadata,
    ) -> Vec<cri::ContainerMetrics> {
        stats::metrics_in_sandbox(&self.inner, sandbox_id, pod)
    }

    /// The statuses of the containers of a sandbox (PodSandboxStatus.containers_statuses).
    pub async fn statuses_in_sandbox(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<cri::ContainerStatus>, Status> {
        Ok(status::in_sandbox(&self.inner, sandbox_id).await?)
    }

    /// Lets container events carry their pod's status (set once, at startup).
    pub fn set_sandboxes(&self, sandboxes: SandboxService) {
        let _ = self.inner.sandboxes.set(sandboxes);
    }

    /// Publishes an event about a pod sandbox itself (its ID as `container_id`, as containerd
    /// does), with its status and its containers'.
    pub fn publish_sandbox_event(
        &self,
        sandbox_id: &str,
        kind: cri::ContainerEventType,
        status: Option<cri::PodSandboxStatus>,
    ) {
        events::publish_sandbox(&self.inner, sandbox_id, kind, status);
    }

    /// What publishes a sandbox's Stopped event when its pause exits (for the sandbox
    /// service; it holds the container service weakly, the other way round being strong).
    pub fn sandbox_stopped_publisher(&self) -> crate::service::sandbox::ExitListener {
        let inner = Arc::downgrade(&self.inner);
        Box::new(move |sandbox_id, status| {
            if let Some(inner) = inner.upgrade() {
                events::publish_sandbox(
                    &inner,
                    sandbox_id,
                    cri::ContainerEventType::ContainerStoppedEvent,
                    Some(status),
                );
            }
        })
    }

    /// IDs of the containers of a sandbox (for the sandbox's status and stats).
    pub fn ids_in_sandbox(&self, sandbox_id: &str) -> Vec<String> {
        self.inner
            .in_sandbox(sandbox_id)
            .iter()
            .map(|c| c.id().to_owned())
            .collect()
    }
}

impl Containers {
    fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        if id.is_empty() {
            return Err(ContainerError::Missing {
                rpc: "container",
                what: "container_id",
            });
        }
        Ok(self.store.get(id)?)
    }

    fn in_sandbox(&self, sandbox_id: &str) -> Vec<Arc<Container>> {
        self.store
            .list()
            .into_iter()
            .filter(|c| c.meta.sandbox_id == sandbox_id)
            .collect()
    }

    fn runtime(&self, c: &Container) -> Result<OciRuntime, ContainerError> {
        let driver = c.meta.cgroup_driver();
        OciRuntime::for_handler(&self.config, &c.meta.runtime_handler, driver).ok_or_else(|| {
            ContainerError::UnknownHandler {
                name: c.meta.name.clone(),
                handler: c.meta.runtime_handler.clone(),
            }
        })
    }

    fn shim(&self, c: &Container, pid: i32) -> Shim {
        Shim {
            id: c.meta.id.clone(),
            state_dir: c.meta.shim_dir.clone(),
            socket: crate::shim_client::socket_path(&self.config.shim_socket_dir, &c.meta.shim_dir),
            init_pid: pid,
        }
    }
}

/// The container's cgroup (under systemd, the cgroupfs directory of its scope unit), from its
/// cgroupsPath under the driver it was made with: for stats and OOM kills.
fn cgroup_path(c: &Container) -> Result<berth_cgroups::CgroupPath, berth_cgroups::CgroupError> {
    berth_cgroups::CgroupPath::from_spec(
        Some(&c.meta.cgroups_path),
        c.id(),
        c.meta.cgroup_driver().is_systemd(),
    )
}

/// The shim installed next to the berth runtime (or next to berthd).
fn shim_binary(config: &Config) -> PathBuf {
    config
        .runtimes
        .get("berth")
        .and_then(|h| h.path.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.exists())
        .unwrap_or_else(default_shim_binary)
}
