//! The pause container through its OCI runtime (runc's command line, with
//! `--systemd-cgroup` for a pod under the systemd cgroup driver) and its shim: `kill`,
//! `delete --force`, and waiting for the shim's exit record (its shim creates and starts it).
//! Blocking.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::shim_protocol::{ExitRecord, SHIM_PID_FILE};

use super::error::{Result, SandboxError};
use crate::config::CgroupDriver;
use crate::process_watch::{alive, wait_gone};
use crate::store::sandbox::RuntimeRef;

/// How often [`wait_exit`] looks for the exit record while the shim still runs.
const RECHECK: Duration = Duration::from_millis(20);

/// `<runtime> --root <root> [--systemd-cgroup] <args…> <id> <tail…>`.
fn command(
    rt: &RuntimeRef,
    driver: CgroupDriver,
    args: &[&str],
    id: &str,
    tail: &[&str],
) -> Command {
    let mut cmd = Command::new(&rt.path);
    cmd.arg("--root")
        .arg(&rt.root)
        .args(driver.runtime_flags())
        .args(args)
        .arg(id)
        .args(tail);
    cmd
}

/// Runs [`command`]; its stderr is the error message.
fn run(
    rt: &RuntimeRef,
    driver: CgroupDriver,
    op: &'static str,
    args: &[&str],
    id: &str,
    tail: &[&str],
) -> Result<()> {
    let err = |message| SandboxError::Runtime {
        runtime: rt.path.clone(),
        op,
        id: id.to_owned(),
        message,
    };
    let out = command(rt, driver, args, id, tail)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(err(format!("{}: {}", out.status, stderr.trim())))
}

/// Sends SIGKILL to the pause. An error from the runtime only counts if the process is still
/// alive afterwards (runtimes refuse to signal a stopped container); then the pid is
/// signalled directly.
pub fn kill(rt: &RuntimeRef, driver: CgroupDriver, id: &str, pid: i32) -> Result<()> {
    let Err(e) = run(rt, driver, "kill", &["kill"], id, &["KILL"]) else {
        return Ok(());
    };
    if !alive(pid) {
        return Ok(());
    }
    tracing::warn!(sandbox = id, pid, error = %e, "runtime kill failed; signalling the pause directly");
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(_) => Err(e),
    }
}

/// `delete --force`: the runtime's state and the container's cgroup go. A container the
/// runtime does not know is fine.
pub fn delete(rt: &RuntimeRef, driver: CgroupDriver, id: &str) -> Result<()> {
    match run(rt, driver, "delete", &["delete", "--force"], id, &[]) {
        Ok(()) => Ok(()),
        Err(e) if !rt.root.join(id).exists() => {
            tracing::debug!(sandbox = id, error = %e, "runtime delete of an unknown container");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Waits until the shim recorded the exit of the pause (or, without a shim record, until the
/// process is gone), at most `limit`.
pub fn wait_exit(shim_dir: &Path, pid: i32, limit: Duration) -> Result<Option<ExitRecord>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(record)) = ExitRecord::load(shim_dir) {
            return Ok(Some(record));
        }
        let shim = shim_pid(shim_dir).filter(|&p| alive(p));
        if !alive(pid) && shim.is_none() {
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SandboxError::StopTimeout {
                secs: limit.as_secs(),
            });
        }
        // The shim records the exit and then ends: wake when it does (or the pause, when it
        // has no shim), and look again at least every RECHECK.
        wait_gone(shim.unwrap_or(pid), RECHECK.min(left));
    }
}

/// Waits (bounded) for the shim process to end after its container exited; kills it if it
/// lingers (it has nothing left to do).
pub fn reap_shim(shim_dir: &Path, limit: Duration) {
    let Some(pid) = shim_pid(shim_dir) else {
        return;
    };
    if !wait_gone(pid, limit) && is_shim(pid) {
        tracing::warn!(
            pid,
            "berth-shim still running after its container exited; killing it"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn shim_pid(shim_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(shim_dir.join(SHIM_PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn is_shim(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim().starts_with("berth-shim"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn systemd_pods_run_the_runtime_with_systemd_cgroup() {
        let rt = RuntimeRef {
            handler: "runc".into(),
            path: "/usr/sbin/runc".into(),
            root: "/run/berth/runtimes/runc".into(),
        };
        let cmd = command(&rt, CgroupDriver::Systemd, &["kill"], "p1", &["KILL"]);
        assert_eq!(cmd.get_program(), "/usr/sbin/runc");
        assert_eq!(
            args(&cmd),
            [
                "--root",
                "/run/berth/runtimes/runc",
                "--systemd-cgroup",
                "kill",
                "p1",
                "KILL"
            ]
        );
        let cmd = command(
            &rt,
            CgroupDriver::Cgroupfs,
            &["delete", "--force"],
            "p1",
            &[],
        );
        assert_eq!(
            args(&cmd),
            [
                "--root",
                "/run/berth/runtimes/runc",
                "delete",
                "--force",
                "p1"
            ]
        );
    }
}
