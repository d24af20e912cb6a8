//! StopPodSandbox: the pod's containers, then, side by side, the pause (SIGKILL; its exit
//! awaited, bounded) and the network (CNI DEL, even when the netns is already gone), the netns,
//! the pod's user namespace pin and /dev/shm.
//! The sandbox stays listed, NotReady, until RemovePodSandbox. Idempotent: each step is.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::error::{Result, SandboxError};
use super::{blocking, files, oci, Sandboxes};
use crate::service::container::ContainerService;
use crate::store::sandbox::{PauseExit, Sandbox, SandboxState};
use crate::store::StoreError;

/// How long the pause may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn stop(
    ctx: &Arc<Sandboxes>,
    id: &str,
    containers: &ContainerService,
) -> Result<(), Status> {
    let Some(sandbox) = find_for_teardown(ctx, id, "StopPodSandbox")? else {
        return Ok(());
    };
    let pod = sandbox.meta.pod();
    let _lifecycle = sandbox.lifecycle().lock().await;
    if ctx.store.get(&sandbox.meta.id).is_err() {
        return Ok(()); // removed while we waited
    }
    tracing::info!(pod = %pod, sandbox = %sandbox.meta.id, "StopPodSandbox");
    stop_locked(ctx, &sandbox, containers)
        .await
        .map_err(|e| e.into_status(&pod))
}

/// The sandbox Stop and Remove act on; `None` for an unknown one. Both are idempotent: "must
/// not return an error if all relevant resources have already been reclaimed" (the CRI).
pub(super) fn find_for_teardown(
    ctx: &Sandboxes,
    id: &str,
    rpc: &'static str,
) -> Result<Option<Arc<Sandbox>>, Status> {
    match ctx.store.get(id) {
        Ok(s) => Ok(Some(s)),
        Err(StoreError::NotFound { .. }) => {
            tracing::info!(sandbox = id, rpc, "unknown sandbox: nothing to do");
            Ok(None)
        }
        Err(e) => Err(SandboxError::from(e).into_status(id)),
    }
}

/// Stops a sandbox whose lifecycle lock the caller holds (Stop, and Remove of a sandbox
/// still running).
pub(super) async fn stop_locked(
    ctx: &Arc<Sandboxes>,
    sandbox: &Arc<Sandbox>,
    containers: &ContainerService,
) -> Result<()> {
    let id = &sandbox.meta.id;
    // Timeout 0: the kubelet stopped them gracefully already; what is left is killed.
    containers
        .stop_all_in_sandbox(id, 0)
        .await
        .map_err(|status| SandboxError::Containers {
            what: "stop the pod's containers",
            status: Box::new(status),
        })?;
    let (ctx, sb) = (ctx.clone(), sandbox.clone());
    blocking(move || {
        let sandbox = sb;
        if sandbox.state().is_released() {
            return kill_pause(&ctx, &sandbox);
        }
        // The pause's end and the network's teardown need nothing of each other (the netns
        // is pinned): side by side. Each is idempotent; a failure of either leaves the sandbox
        // unreleased for the next Stop to finish.
        let (killed, released) = std::thread::scope(|s| {
            let killed = s.spawn(|| kill_pause(&ctx, &sandbox));
            let released = release(&ctx, &sandbox);
            (killed.join().expect("kill_pause does not panic"), released)
        });
        killed?;
        released?;
        sandbox.update(|s| {
            if let SandboxState::NotReady { released, .. } = s {
                *released = true;
            }
        })?;
        tracing::info!(pod = %sandbox.meta.pod(), sandbox = %sandbox.meta.id, "sandbox stopped");
        Ok(())
    })
    .await
}

/// Kills the pause if it runs and records its exit: the sandbox is NotReady afterwards. The
/// Stopped event goes out from whoever records the exit: here, or the exit watcher when it
/// sees the shim's record first.
fn kill_pause(ctx: &Sandboxes, sandbox: &Sandbox) -> Result<()> {
    let meta = &sandbox.meta;
    let SandboxState::Ready { pid } = ctx.refresh(sandbox)? else {
        return Ok(());
    };
    oci::kill(&meta.runtime, meta.cgroup_driver(), &meta.id, pid)?;
    let exit = oci::wait_exit(&meta.shim_dir(), pid, KILL_WAIT)?;
    if sandbox.mark_exited(exit.map(PauseExit::from))? {
        ctx.exited(sandbox);
    }
    Ok(())
}

/// Tears the pod's network and mounts down. Idempotent.
fn release(ctx: &Sandboxes, sandbox: &Sandbox) -> Result<()> {
    let meta = &sandbox.meta;
    if let Some(netns) = &meta.netns {
        ctx.network.detach(&meta.id, netns, &meta.config)?;
        cni::netns::remove_pinned(netns)?;
    }
    super::network::remove_userns(&meta.state_dir)?;
    files::unmount_shm(&meta.files)?;
    Ok(())
}
