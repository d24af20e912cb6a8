//! StartContainer (containerd: `container_start.go`): `<runtime> start`, Created → Running. A
//! start that fails leaves the container Exited with reason StartError and the cause.

use std::sync::Arc;

use berth_runtime::shim_protocol::INIT_PID_FILE;
use chrono::Utc;
use cri_api::v1 as cri;

use super::error::{blocking, ContainerError};
use super::{monitor, Containers};
use crate::store::container::{ExitReason, State};

/// The exit code of a container that could not start (containerd's `errorStartExitCode`).
const START_ERROR_EXIT_CODE: i32 = 128;

pub(super) async fn start(
    inner: &Arc<Containers>,
    req: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, ContainerError> {
    let c = inner.get(&req.container_id)?;
    let inner = inner.clone();
    blocking("start container", move || {
        let status = c.status();
        if status.removing {
            return Err(ContainerError::Removing {
                id: c.id().to_owned(),
            });
        }
        if !status.state.can_start() {
            return Err(ContainerError::WrongState {
                id: c.id().to_owned(),
                state: status.state.name(),
                op: "start",
            });
        }
        let runtime = inner.runtime(&c)?;
        let pid = std::fs::read_to_string(c.meta.shim_dir.join(INIT_PID_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(0);
        // Taken before the start: the process cannot begin earlier, and a process that exits at
        // once must not look finished before it started.
        let started_at = Utc::now();
        if let Err(e) = runtime.start(c.id()) {
            // It may have died as a created container (killed, or the shim gone).
            if !monitor::observe_exit(&inner, &c).unwrap_or(false) {
                c.update(|s| {
                    s.state = State::Exited {
                        started_at: None,
                        finished_at: Utc::now(),
                        code: START_ERROR_EXIT_CODE,
                        reason: ExitReason::StartError,
                        message: e.to_string(),
                    };
                    Ok::<_, ContainerError>(())
                })?;
            }
            return Err(e);
        }
        c.update(|s| {
            match &mut s.state {
                state if state.can_start() => *state = State::Running { pid, started_at },
                // Its exit was recorded (by the exit watcher) before we got here: it did start.
                State::Exited {
                    started_at: recorded @ None,
                    ..
                } => *recorded = Some(started_at),
                _ => {}
            }
            Ok::<_, ContainerError>(())
        })?;
        tracing::info!(container = %c.id(), pod = %c.meta.sandbox_id, pid, "container started");
        super::events::publish(&inner, &c, cri::ContainerEventType::ContainerStartedEvent);
        // A process that exits at once: record it now rather than at the next poll.
        monitor::observe_exit(&inner, &c)?;
        Ok(cri::StartContainerResponse {})
    })
    .await
}
