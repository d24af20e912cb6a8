//! What CreateContainer needs to know about the pod sandbox, read from the sandbox store.

use cri_api::v1 as cri;

use super::error::{blocking, ContainerError};
use crate::config::CgroupDriver;
use crate::service::sandbox::SandboxService;
use crate::spec::SandboxFiles;
use crate::store::sandbox::SandboxState;
use crate::store::StoreError;

/// A ready sandbox, as a container sees it.
#[derive(Debug, Clone)]
pub(super) struct SandboxView {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    /// The pause process (namespaces are joined through /proc/<pid>/ns/*).
    pub pid: i32,
    pub runtime_handler: String,
    /// The pod's cgroup; the container's is `<parent>/<id>` (`<parent>:berth:<id>`).
    pub cgroup_parent: String,
    /// The pod's cgroup driver, which its containers share.
    pub cgroup_driver: CgroupDriver,
    pub files: SandboxFiles,
}

/// The sandbox `id` (or unique prefix), which must be ready.
pub(super) async fn lookup(
    sandboxes: &SandboxService,
    id: &str,
) -> Result<SandboxView, ContainerError> {
    if id.is_empty() {
        return Err(ContainerError::Missing {
            rpc: "CreateContainer",
            what: "pod_sandbox_id",
        });
    }
    let sandbox = sandboxes.sandbox(id).map_err(|e| match e {
        StoreError::NotFound { .. } => ContainerError::SandboxNotFound { id: id.to_owned() },
        other => ContainerError::Store(other),
    })?;
    let (checked, service) = (sandbox.clone(), sandboxes.clone());
    let state = blocking("check the pod sandbox", move || {
        Ok(service.refresh(&checked)?)
    })
    .await?;
    let SandboxState::Ready { pid } = state else {
        return Err(ContainerError::SandboxNotReady {
            id: sandbox.meta.id.clone(),
        });
    };
    let meta = &sandbox.meta;
    Ok(SandboxView {
        id: meta.id.clone(),
        config: meta.config.clone(),
        pid,
        runtime_handler: meta.runtime.handler.clone(),
        cgroup_parent: meta.cgroup_parent.clone(),
        cgroup_driver: meta.cgroup_driver(),
        files: SandboxFiles {
            hostname: meta.files.hostname.clone(),
            hosts: meta.files.hosts.clone(),
            resolv_conf: meta.files.resolv_conf.clone(),
            shm: meta.files.shm.clone(),
        },
    })
}
