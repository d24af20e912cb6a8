//! `delete`: remove a stopped (or, with `--force`, any) container: its processes, its cgroup
//! and its record, then run the poststop hooks.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};

use super::state::{Container, Root};
use super::{ContainerId, ContainerStatus};
use crate::error::{Result, RuntimeError};
use crate::hooks::{self, HookKind};
use crate::rootfs::host_mount_ns;

const KILL_TIMEOUT: Duration = Duration::from_secs(10);

pub fn delete(root: &Root, id: &ContainerId, force: bool) -> Result<()> {
    let container = match root.load(id) {
        Ok(c) => c,
        Err(RuntimeError::NotFound(_)) => {
            // A directory without state.json is a create that never finished.
            let dir = root.container_dir(id);
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(|e| RuntimeError::io("remove", &dir, e))?;
            }
            return if force {
                Ok(())
            } else {
                Err(RuntimeError::NotFound(id.to_string()))
            };
        }
        Err(e) => return Err(e),
    };
    match container.status() {
        ContainerStatus::Stopped => {}
        ContainerStatus::Created => kill_and_wait(&container)?,
        status @ (ContainerStatus::Running
        | ContainerStatus::Paused
        | ContainerStatus::Creating) => {
            if !force {
                return Err(RuntimeError::WrongStatus {
                    id: id.to_string(),
                    op: "delete",
                    status,
                });
            }
            kill_and_wait(&container)?;
        }
    }
    destroy(&container)
}

/// SIGKILL to every process of the container (thawing a paused one so that it can die) and a
/// bounded wait for the init to be gone.
fn kill_and_wait(container: &Container) -> Result<()> {
    let cgroup = container.cgroup()?;
    let _ = cgroup.kill_all(Signal::SIGKILL);
    let _ = kill(container.pid(), Signal::SIGKILL);
    let _ = cgroup.thaw();
    let deadline = Instant::now() + KILL_TIMEOUT;
    while container.init_alive() {
        if Instant::now() >= deadline {
            return Err(RuntimeError::Timeout {
                what: format!("container {} to die after SIGKILL", container.state.id),
                seconds: KILL_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn destroy(container: &Container) -> Result<()> {
    let cgroup = container.cgroup()?;
    if !container.state.own_pid_ns {
        // Without its own PID namespace, the container's other processes outlive its init.
        let _ = cgroup.kill_all(Signal::SIGKILL);
    }
    cgroup.remove()?;
    if let Some(before) = container.state.host_mount_ns {
        // The container's mounts in the host's mount namespace (no namespace of its own took
        // them away with it).
        host_mount_ns::unmount_rootfs(&container.state.rootfs, before.rootfs_mounts_before)?;
    }
    let state = serde_json::to_string(&container.oci_state()).expect("state serializes");
    if let Err(e) = hooks::run(
        HookKind::Poststop,
        &HookKind::Poststop.of(&container.spec),
        &state,
    ) {
        tracing::warn!(container = %container.state.id, error = %e, "poststop hook failed");
    }
    fs::remove_dir_all(&container.dir).map_err(|e| RuntimeError::io("remove", &container.dir, e))
}
