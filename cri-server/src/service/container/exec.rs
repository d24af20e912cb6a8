//! ExecSync (containerd: `container_execsync.go`): the handler's runtime runs the command in
//! the container (`exec --process`), its stdout and stderr captured up to 16 MiB each (more is
//! dropped, as containerd's capped writer does), bounded by the request's timeout: a command
//! still running then is SIGKILLed and the RPC fails with DeadlineExceeded, as containerd's.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::{blocking, ContainerError};
use super::oci::OciRuntime;
use super::Containers;
use crate::store::container::Container;

/// Most output kept per stream (containerd's `maxStreamSize`).
pub(super) const MAX_STREAM: usize = 16 * 1024 * 1024;
/// How long output may keep flowing (from processes the command left behind) after it exited.
const DRAIN: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(5);

pub(super) async fn exec_sync(
    inner: &Arc<Containers>,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, ContainerError> {
    if req.cmd.is_empty() {
        return Err(ContainerError::Missing {
            rpc: "ExecSync",
            what: "cmd",
        });
    }
    let c = inner.get(&req.container_id)?;
    let state = c.status().state;
    if !state.is_running() {
        return Err(ContainerError::WrongState {
            id: c.id().to_owned(),
            state: state.name(),
            op: "exec (it is not running)",
        });
    }
    let runtime = inner.runtime(&c)?;
    blocking("exec in container", move || {
        run(&c, &runtime.with_sealed_copy(), &req.cmd, req.timeout)
    })
    .await
}

fn run(
    c: &Container,
    runtime: &OciRuntime,
    cmd: &[String],
    timeout_secs: i64,
) -> Result<cri::ExecSyncResponse, ContainerError> {
    let id = c.id();
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ContainerError::Io {
            id: id.to_owned(),
            op,
            path,
            source,
        }
    };
    let dir = ExecDir::create(&c.meta.dir).map_err(io_err("create exec dir in", &c.meta.dir))?;
    let spec_path = c.meta.bundle.join("config.json");
    let spec: serde_json::Value = std::fs::read(&spec_path)
        .map_err(io_err("read", &spec_path))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                io_err("parse", &spec_path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
        })?;
    let mut process = spec.get("process").cloned().unwrap_or_default();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(false);
    if let Some(p) = process.as_object_mut() {
        p.remove("consoleSize");
    }
    let process_path = dir.path().join("process.json");
    std::fs::write(&process_path, serde_json::to_vec(&process).expect("json"))
        .map_err(io_err("write", &process_path))?;
    let pid_file = dir.path().join("pid");

    let mut child = runtime
        .exec_command(id, &process_path, &pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("run", &runtime.path))?;
    let (tx, rx) = mpsc::channel();
    for (n, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(pipe) = pipe {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send((n, read_capped(pipe)));
            });
        }
    }
    drop(tx);

    let deadline = (timeout_secs > 0)
        .then(|| Instant::now() + Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0)));
    let (status, timed_out) =
        wait(&mut child, deadline, &pid_file).map_err(io_err("wait for", &runtime.path))?;

    let mut out = [Vec::new(), Vec::new()];
    let drain_until = Instant::now() + DRAIN;
    for _ in 0..2 {
        let left = drain_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((n, data)) => out[n] = data,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = out;
    if timed_out {
        return Err(ContainerError::ExecTimeout {
            id: id.to_owned(),
            cmd: cmd.join(" "),
            secs: timeout_secs,
        });
    }
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if code != 0 && !pid_file.exists() {
        // The process never started: the runtime's own failure.
        return Err(ContainerError::Runtime {
            id: id.to_owned(),
            runtime: runtime.path.display().to_string(),
            op: "exec",
            message: String::from_utf8_lossy(&stderr).trim().to_owned(),
        });
    }
    Ok(cri::ExecSyncResponse {
        stdout,
        stderr,
        exit_code: code,
    })
}

static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// A directory for one exec's process.json and pid file, removed on drop.
struct ExecDir(std::path::PathBuf);

impl ExecDir {
    fn create(parent: &Path) -> std::io::Result<ExecDir> {
        let n = EXEC_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("exec-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        Ok(ExecDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ExecDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for the runtime; past the deadline the exec'd process is SIGKILLed (the runtime then
/// reports its death). Returns the runtime's status and whether the deadline passed.
fn wait(
    child: &mut Child,
    deadline: Option<Instant>,
    pid_file: &Path,
) -> std::io::Result<(std::process::ExitStatus, bool)> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let pid = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            match pid {
                Some(pid) if pid > 0 => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                // Not started yet: stop the runtime itself.
                _ => {
                    let _ = child.kill();
                }
            }
            let status = child.wait()?;
            return Ok((status, true));
        }
        std::thread::sleep(POLL);
    }
}

/// Reads to the end, keeping the first [`MAX_STREAM`] bytes.
fn read_capped(mut pipe: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = MAX_STREAM.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped() {
        let data = vec![b'x'; MAX_STREAM + 100];
        assert_eq!(read_capped(&data[..]).len(), MAX_STREAM);
        assert_eq!(read_capped(&b"hi\n"[..]), b"hi\n");
    }
}
