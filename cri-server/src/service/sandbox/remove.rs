//! RemovePodSandbox: stop first if needed, remove the pod's containers, `delete --force` the
//! pause container, then every file, mount, netns and cgroup of the pod, and the record.
//! Removing an unknown sandbox succeeds (the CRI: idempotent).

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::error::{Result, SandboxError};
use super::stop::{find_for_teardown, stop_locked};
use super::{blocking, cgroup, files, image, oci, Sandboxes};
use crate::service::container::ContainerService;
use crate::store::sandbox::Sandbox;

pub(super) async fn remove(
    ctx: &Arc<Sandboxes>,
    id: &str,
    containers: &ContainerService,
) -> Result<(), Status> {
    let Some(sandbox) = find_for_teardown(ctx, id, "RemovePodSandbox")? else {
        return Ok(());
    };
    let pod = sandbox.meta.pod();
    let _lifecycle = sandbox.lifecycle().lock().await;
    if ctx.store.get(&sandbox.meta.id).is_err() {
        return Ok(()); // removed while we waited
    }
    tracing::info!(pod = %pod, sandbox = %sandbox.meta.id, "RemovePodSandbox");
    remove_locked(ctx, &sandbox, containers)
        .await
        .map_err(|e| e.into_status(&pod))
}

async fn remove_locked(
    ctx: &Arc<Sandboxes>,
    sandbox: &Arc<Sandbox>,
    containers: &ContainerService,
) -> Result<()> {
    let state = sandbox.state();
    if state.is_ready() || !state.is_released() {
        stop_locked(ctx, sandbox, containers).await?;
    }
    containers
        .remove_all_in_sandbox(&sandbox.meta.id)
        .await
        .map_err(|status| SandboxError::Containers {
            what: "remove the pod's containers",
            status: Box::new(status),
        })?;
    // The Deleted event carries the pod's last status, as containerd's does (the kubelet's
    // evented PLEG drops an event without one, and drops the pod from its cache on this one).
    let last_status = super::status::cri_status(sandbox, &sandbox.state());
    let (ctx, sb) = (ctx.clone(), sandbox.clone());
    blocking(move || {
        let sandbox = sb;
        let meta = &sandbox.meta;
        oci::delete(&meta.runtime, meta.cgroup_driver(), &meta.id)?;
        oci::reap_shim(&meta.shim_dir(), Duration::from_secs(5));
        crate::shim_client::remove_socket(&ctx.config.shim_socket_dir, &meta.shim_dir());
        // Stop released these; again in case a crash came in between.
        if let Some(netns) = &meta.netns {
            cni::netns::remove_pinned(netns)?;
        }
        super::network::remove_userns(&meta.state_dir)?;
        files::unmount_shm(&meta.files)?;
        if meta.image.is_some() {
            image::release_rootfs(&ctx.images, &meta.id, &meta.rootfs())?;
        }
        if meta.owns_cgroup_parent {
            cgroup::remove(&meta.cgroup_parent, &meta.id, meta.cgroup_driver())?;
        }
        files::remove_dir(&meta.state_dir)?;
        ctx.stats.forget(&meta.id);
        ctx.store.delete(&meta.id)?;
        tracing::info!(pod = %meta.pod(), sandbox = %meta.id, "sandbox removed");
        Ok(())
    })
    .await?;
    containers.publish_sandbox_event(
        &sandbox.meta.id,
        cri_api::v1::ContainerEventType::ContainerDeletedEvent,
        Some(last_status),
    );
    Ok(())
}
