//! Observing exits: the shim writes `exit.json` when a container's init exits; the monitor
//! (a poll over running containers) and the RPCs that care (stop, status, remove) turn it into
//! the Exited state, with OOMKilled when the container's cgroup saw an OOM kill. At startup,
//! [`recover`] re-adopts every shim left by a previous berthd.

use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_runtime::shim_protocol::ExitRecord;
use chrono::Utc;
use k8s_cri::v1 as cri;

use super::error::ContainerError;
use super::Containers;
use crate::store::container::{Container, ExitReason, State};

/// How often running containers are checked for an exit record.
const POLL: Duration = Duration::from_millis(200);

/// Starts the monitor; it ends once the service is dropped.
pub(super) fn spawn(inner: Weak<Containers>) {
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!("no async runtime: container exits are observed only on request");
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { break };
            let _ = tokio::task::spawn_blocking(move || check_running(&inner)).await;
        }
    });
}

fn check_running(inner: &Containers) {
    for c in inner.store.list() {
        if c.status().state.is_running() && ExitRecord::path(&c.meta.shim_dir).exists() {
            if let Err(e) = observe_exit(inner, &c) {
                tracing::warn!(container = %c.id(), error = %e, "cannot record the container's exit");
            }
        }
    }
}

/// Moves a Created or Running container whose init exited to Exited (once; later calls see
/// Exited and return true). False while it runs. Blocking.
pub(super) fn observe_exit(inner: &Containers, c: &Container) -> Result<bool, ContainerError> {
    if matches!(c.status().state, State::Exited { .. }) {
        return Ok(true);
    }
    let record = ExitRecord::load(&c.meta.shim_dir).map_err(|source| ContainerError::Io {
        id: c.id().to_owned(),
        op: "read exit record in",
        path: c.meta.shim_dir.clone(),
        source,
    })?;
    let Some(record) = record else {
        return Ok(false);
    };
    // Before the runtime's delete removes the cgroup: did the OOM killer strike?
    let oom = oom_killed(inner, c);
    let changed = c.update(|s| {
        let started_at = match &s.state {
            State::Exited { .. } => return Ok::<_, ContainerError>(false),
            State::Created => None,
            State::Running { started_at, .. } => Some(*started_at),
        };
        s.state = State::Exited {
            started_at,
            finished_at: record.exited_at,
            code: record.exit_code,
            reason: ExitReason::of_exit(record.exit_code, oom),
            message: String::new(),
        };
        Ok(true)
    })?;
    if changed {
        tracing::info!(container = %c.id(), pod = %c.meta.sandbox_id, exit_code = record.exit_code, oom, "container exited");
        super::events::publish(inner, c, cri::ContainerEventType::ContainerStoppedEvent);
    }
    Ok(true)
}

/// Marks a container whose shim vanished without an exit record.
fn mark_lost(inner: &Containers, c: &Container, why: String) -> Result<(), ContainerError> {
    c.update(|s| {
        let started_at = match &s.state {
            State::Exited { .. } => return Ok::<_, ContainerError>(()),
            State::Created => None,
            State::Running { started_at, .. } => Some(*started_at),
        };
        s.state = State::Exited {
            started_at,
            finished_at: Utc::now(),
            code: 255,
            reason: ExitReason::Unknown,
            message: why,
        };
        Ok(())
    })?;
    super::events::publish(inner, c, cri::ContainerEventType::ContainerStoppedEvent);
    Ok(())
}

/// Whether the OOM killer killed a process in the container's cgroup.
pub(super) fn oom_killed(inner: &Containers, c: &Container) -> bool {
    let count =
        berth_cgroups::CgroupPath::from_spec(Some(&c.meta.cgroups_path), c.id(), inner.systemd())
            .and_then(|p| berth_cgroups::manager(&p))
            .and_then(|m| m.oom_kill_count());
    match count {
        Ok(n) => n > 0,
        Err(e) => {
            tracing::debug!(container = %c.id(), error = %e, "no OOM kill count");
            false
        }
    }
}

/// Re-adopts the containers of a previous berthd: an exit recorded while berthd was down
/// becomes Exited with its real code; a container whose shim is gone without a record is
/// Exited with reason Unknown. Blocking.
pub(super) fn recover(inner: &Arc<Containers>) {
    for c in inner.store.list() {
        let state = c.status().state;
        let pid = match state {
            State::Exited { .. } => continue,
            State::Created => 0,
            State::Running { pid, .. } => pid,
        };
        let result = match observe_exit(inner, &c) {
            Ok(true) => Ok(()),
            Ok(false) => match inner.shim(&c, pid).state() {
                Ok(_) => {
                    tracing::info!(container = %c.id(), state = state.name(), "re-adopted container");
                    Ok(())
                }
                // The shim may have written its record between the two checks.
                Err(e) => match observe_exit(inner, &c) {
                    Ok(true) => Ok(()),
                    Ok(false) => mark_lost(inner, &c, format!("berth-shim is gone: {e}")),
                    Err(e) => Err(e),
                },
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(container = %c.id(), error = %e, "cannot re-adopt container");
        }
    }
}
