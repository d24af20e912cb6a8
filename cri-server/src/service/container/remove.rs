//! RemoveContainer (containerd: `container_remove.go`): a running container is killed first;
//! then the runtime's `delete --force`, the shim's end, the rootfs unmounted, its snapshot
//! removed (in a user-namespaced pod the rootfs mount is the idmapped one: one unmount), the
//! container's directories and record deleted. An unknown ID is not an error (the
//! CRI wants RemoveContainer idempotent). The CRI log file stays: it is the kubelet's.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::shim_protocol::SHIM_PID_FILE;
use cri_api::v1 as cri;

use super::error::{blocking, ContainerError};
use super::{stop, Containers};
use crate::store::container::Container;
use crate::store::StoreError;

/// How long a shim may take to exit after its container was deleted.
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn remove(
    inner: &Arc<Containers>,
    req: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, ContainerError> {
    match inner.get(&req.container_id) {
        Ok(c) => remove_container(inner, c).await?,
        Err(ContainerError::Store(StoreError::NotFound { .. })) => {}
        Err(e) => return Err(e),
    }
    Ok(cri::RemoveContainerResponse {})
}

pub(super) async fn remove_container(
    inner: &Arc<Containers>,
    c: Arc<Container>,
) -> Result<(), ContainerError> {
    if !c.set_removing(true) {
        return Err(ContainerError::Removing {
            id: c.id().to_owned(),
        });
    }
    let result = async {
        stop::stop(inner, c.clone(), 0).await?;
        let (inner, c) = (inner.clone(), c.clone());
        blocking("remove container", move || teardown(&inner, &c)).await
    }
    .await;
    if result.is_err() {
        c.set_removing(false);
    }
    result
}

fn teardown(inner: &Containers, c: &Container) -> Result<(), ContainerError> {
    let id = c.id();
    inner.runtime(c)?.delete(id)?;
    inner.cpu.forget(id);
    wait_shim_gone(&c.meta.shim_dir);
    crate::shim_client::remove_socket(&inner.config.shim_socket_dir, &c.meta.shim_dir);
    match image_store::unmount(&c.meta.rootfs) {
        Ok(()) => {}
        Err(image_store::MountError::Sys { source, .. })
            // Not mounted (any more), or the mount point is gone.
            if source.raw_os_error() == Some(nix::libc::EINVAL)
                || source.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ContainerError::Mount {
                id: id.to_owned(),
                source,
            })
        }
    }
    super::image_volumes::try_release(inner, id, &c.meta.image_volumes)?;
    super::idmapped_volumes::release(id, &c.meta.dir)?;
    match inner.images.snapshots().remove(&c.meta.snapshot_key) {
        Ok(()) | Err(image_store::SnapshotError::NotFound(_)) => {}
        Err(source) => {
            return Err(ContainerError::Snapshot {
                id: id.to_owned(),
                source,
            })
        }
    }
    // Nothing else should be mounted under the container's dir; whatever is (a mount a crashed
    // step left) is detached first, since remove_dir_all would descend into it.
    for m in crate::service::sandbox::mounts_under(&c.meta.dir)
        .into_iter()
        .rev()
    {
        tracing::warn!(container = %id, mount = %m.display(), "detaching a leftover mount");
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            ContainerError::Io {
                id: id.to_owned(),
                op: "unmount",
                path: m.clone(),
                source: e.into(),
            }
        })?;
    }
    match std::fs::remove_dir_all(&c.meta.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ContainerError::Io {
                id: id.to_owned(),
                op: "remove",
                path: c.meta.dir.clone(),
                source,
            })
        }
    }
    inner.store.delete(id)?;
    inner.oom_kills.forget(id);
    // As containerd: the pod's status and its remaining containers' statuses.
    super::events::publish(inner, c, cri::ContainerEventType::ContainerDeletedEvent);
    tracing::info!(container = %id, pod = %c.meta.sandbox_id, "container removed");
    Ok(())
}

/// Waits (bounded) until the shim whose pid is in `shim_dir` has exited.
pub(super) fn wait_shim_gone(shim_dir: &Path) {
    let Some(pid) = std::fs::read_to_string(shim_dir.join(SHIM_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !crate::process_watch::wait_gone(pid, SHIM_EXIT_WAIT) {
        tracing::warn!(shim_pid = pid, dir = %shim_dir.display(), "berth-shim did not exit");
    }
}
