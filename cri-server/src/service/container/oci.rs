//! The OCI runtime of a container's RuntimeClass handler, driven through runc's command line:
//! `start`, `kill`, `delete --force`, `update --resources -`, `exec --process`, each with
//! `--systemd-cgroup` for a container under the systemd cgroup driver. Blocking.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use super::error::ContainerError;
use crate::config::{CgroupDriver, Config};
use crate::sealed_runtime::{self, SealedRuntime};

/// One handler's runtime binary and its `--root`, for containers under one cgroup driver.
#[derive(Debug, Clone)]
pub(crate) struct OciRuntime {
    pub path: PathBuf,
    pub root: PathBuf,
    /// The container's cgroup driver (`--systemd-cgroup` on every command under systemd).
    pub cgroup_driver: CgroupDriver,
    /// berthd's sealed copy of `path`, run instead of it when set ([`Self::with_sealed_copy`]).
    sealed: Option<Arc<SealedRuntime>>,
}

impl OciRuntime {
    /// The runtime of `handler` for containers under `cgroup_driver` (a container's own:
    /// [`crate::store::container::ContainerMeta::cgroup_driver`]).
    pub fn for_handler(
        config: &Config,
        handler: &str,
        cgroup_driver: CgroupDriver,
    ) -> Option<OciRuntime> {
        config.runtimes.get(handler).map(|h| OciRuntime {
            path: h.path.clone(),
            root: h.root.clone(),
            cgroup_driver,
            sealed: None,
        })
    }

    /// The same runtime, run from berthd's sealed copy of its binary (if it gets one): for the
    /// commands that enter a container (`exec`), which then need not copy the runtime
    /// themselves. Commands from [`Self::command`] must be spawned while `self` lives.
    pub fn with_sealed_copy(mut self) -> Self {
        self.sealed = sealed_runtime::sealed_copy(&self.path);
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = match &self.sealed {
            Some(copy) => copy.command(),
            None => Command::new(&self.path),
        };
        cmd.arg("--root")
            .arg(&self.root)
            .args(self.cgroup_driver.runtime_flags());
        cmd
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn run(
        &self,
        id: &str,
        op: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, ContainerError> {
        let err = |message: String| ContainerError::Runtime {
            id: id.to_owned(),
            runtime: self.name(),
            op,
            message,
        };
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| err(e.to_string()))?;
        if let (Some(data), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(data).map_err(|e| err(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
        if out.status.success() {
            Ok(out)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(err(format!("{} ({})", stderr.trim(), out.status)))
        }
    }

    pub fn start(&self, id: &str) -> Result<(), ContainerError> {
        self.run(id, "start", &["start", id], None).map(drop)
    }

    /// Sends `signal` (e.g. `SIGTERM`) to the init, or with `all` to every process.
    pub fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), ContainerError> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        self.run(id, "kill", &args, None).map(drop)
    }

    /// `delete --force`; a container the runtime does not know is already deleted.
    pub fn delete(&self, id: &str) -> Result<(), ContainerError> {
        match self.run(id, "delete", &["delete", "--force", id], None) {
            Ok(_) => Ok(()),
            Err(ContainerError::Runtime { ref message, .. })
                if message.contains("does not exist") || !self.root.join(id).exists() =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `update --resources -` with OCI `linux.resources` JSON.
    pub fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), ContainerError> {
        let json = serde_json::to_vec(resources).expect("resources serialize");
        self.run(
            id,
            "update",
            &["update", "--resources", "-", id],
            Some(&json),
        )
        .map(drop)
    }

    /// The foreground `exec --process <file> --pid-file <file> <id>` command (the caller owns
    /// its stdio and its lifetime).
    pub fn exec_command(&self, id: &str, process: &Path, pid_file: &Path) -> Command {
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--process")
            .arg(process)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn runtime(driver: CgroupDriver) -> OciRuntime {
        let mut config = Config::default();
        config.runtimes.insert(
            "crun".into(),
            crate::config::RuntimeHandler {
                path: "/usr/bin/crun".into(),
                root: "/run/berth/runtimes/crun".into(),
            },
        );
        OciRuntime::for_handler(&config, "crun", driver).unwrap()
    }

    #[test]
    fn every_command_carries_systemd_cgroup_under_systemd() {
        let rt = runtime(CgroupDriver::Systemd);
        let base = ["--root", "/run/berth/runtimes/crun", "--systemd-cgroup"];
        assert_eq!(args(&rt.command()), base);
        let exec = rt.exec_command("c1", Path::new("/p.json"), Path::new("/pid"));
        assert_eq!(exec.get_program(), "/usr/bin/crun");
        assert_eq!(
            args(&exec)[..4],
            [
                "--root",
                "/run/berth/runtimes/crun",
                "--systemd-cgroup",
                "exec"
            ]
        );
        let rt = runtime(CgroupDriver::Cgroupfs);
        assert_eq!(args(&rt.command()), base[..2]);
        assert!(
            !args(&rt.exec_command("c1", Path::new("/p.json"), Path::new("/pid")))
                .contains(&"--systemd-cgroup".to_owned())
        );
    }
}
