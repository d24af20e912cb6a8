//! StopContainer (containerd: `container_stop.go`): the image's StopSignal (default SIGTERM)
//! through the runtime's `kill`, then
//! SIGKILL to every process once the timeout passes; done when the shim recorded the exit.
//! Stopping a container that is not running does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_runtime::shim_protocol::ExitRecord;

use super::error::{blocking, ContainerError};
use super::{monitor, Containers};
use crate::store::container::{Container, State};

/// How long a SIGKILLed container may take to be reaped and recorded.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// The backstop of the wait for an exit (the exit watcher wakes it first).
const POLL: Duration = Duration::from_millis(250);

pub(super) async fn stop(
    inner: &Arc<Containers>,
    c: Arc<Container>,
    timeout_secs: i64,
) -> Result<(), ContainerError> {
    if !refresh(inner, &c).await? {
        return Ok(());
    }
    let runtime = inner.runtime(&c)?;
    if timeout_secs > 0 {
        let (r, id) = (runtime.clone(), c.id().to_owned());
        let signal = c
            .meta
            .stop_signal
            .clone()
            .unwrap_or_else(|| "SIGTERM".to_owned());
        let sig = signal.clone();
        let sent = blocking("signal container", move || r.kill(&id, &sig, false)).await;
        if let Err(e) = sent {
            if !refresh(inner, &c).await? {
                return Ok(());
            }
            tracing::warn!(container = %c.id(), signal = %signal, error = %e, "stop signal failed; killing");
        } else {
            tracing::info!(container = %c.id(), pod = %c.meta.sandbox_id, signal = %signal, timeout_secs, "container signalled");
        }
        let timeout = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
        if wait_exit(inner, &c, timeout).await {
            refresh(inner, &c).await?;
            return Ok(());
        }
    }
    let (r, id) = (runtime, c.id().to_owned());
    let killed = blocking("kill container", move || r.kill(&id, "SIGKILL", true)).await;
    if let Err(e) = killed {
        if !refresh(inner, &c).await? {
            return Ok(());
        }
        tracing::warn!(container = %c.id(), error = %e, "SIGKILL failed; waiting for the exit anyway");
    }
    if !wait_exit(inner, &c, KILL_WAIT).await {
        return Err(ContainerError::StopTimeout {
            id: c.id().to_owned(),
            secs: KILL_WAIT.as_secs(),
        });
    }
    refresh(inner, &c).await?;
    tracing::info!(container = %c.id(), pod = %c.meta.sandbox_id, "container stopped");
    Ok(())
}

/// Records an exit the shim wrote; true while the container runs.
async fn refresh(inner: &Arc<Containers>, c: &Arc<Container>) -> Result<bool, ContainerError> {
    let (inner, c) = (inner.clone(), c.clone());
    blocking("observe container exit", move || {
        if !c.status().state.is_running() {
            return Ok(false);
        }
        Ok(!monitor::observe_exit(&inner, &c)?)
    })
    .await
}

/// Waits (bounded) for the shim's exit record; true once it exists. Woken by the exit
/// watcher; a slow poll backs it up.
pub(super) async fn wait_exit(inner: &Containers, c: &Container, timeout: Duration) -> bool {
    let path = ExitRecord::path(&c.meta.shim_dir);
    let deadline = Instant::now() + timeout;
    loop {
        let exited = inner.exit_events.exited.notified();
        tokio::pin!(exited);
        exited.as_mut().enable();
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return true;
        }
        if matches!(c.status().state, State::Exited { .. }) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = tokio::time::timeout(POLL.min(deadline - now), exited).await;
    }
}
