//! Exec for the streaming server: `<runtime> --root <root> exec --process <file> --pid-file
//! <file> <id>` in the foreground, its exit code being the process's. Without a TTY the
//! runtime's stdio are pipes to the client; with one, the process gets a pty whose master comes
//! back over `--console-socket` (resizes go to it with TIOCSWINSZ). runc and crun need
//! `--detach` with a console socket: then a subreaper helper ([`super::detached`]) adopts the
//! process and reports its exit status. When the future is dropped the exec'd process is
//! SIGKILLed by its PID (from the pid file, waited for if the runtime has not written it yet);
//! the runtime then ends with it.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_streaming::{BackendError, ExitStatus, Output, StreamIo};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::{JoinHandle, JoinSet};

use super::detached::{self, Report};
use crate::process_watch::alive;
use crate::service::container::OciRuntime;
use crate::store::container::Container;

/// How long output may keep flowing (from processes the command left behind) after it exited.
const DRAIN: Duration = Duration::from_secs(2);
/// How long the runtime has to send the pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Ctrl-D: what closing stdin means on a terminal.
const EOT: u8 = 0x04;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The runtime process of one exec.
enum Runner {
    /// The runtime runs as long as the process and exits with its code.
    Foreground(tokio::process::Child),
    /// `exec --detach` under a subreaper helper, waited for on a blocking thread (which also
    /// reaps the helper if the exec is abandoned).
    Detached(JoinHandle<Option<Report>>),
}

/// How the runtime process ended.
enum Ended {
    /// The exec'd process's exit code (128+N for signal N).
    Code(i32),
    /// The runtime failed before the process ran (its exit code).
    RuntimeFailed(i32),
    /// The process ran but its status could not be learned.
    Lost,
}

impl Runner {
    async fn wait(&mut self, started: impl Fn() -> bool) -> io::Result<Ended> {
        match self {
            Runner::Foreground(child) => {
                let status = child.wait().await?;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                Ok(if code != 0 && !started() {
                    Ended::RuntimeFailed(code)
                } else {
                    Ended::Code(code)
                })
            }
            Runner::Detached(task) => Ok(match task.await.map_err(io::Error::other)? {
                Some(Report::Exited(status)) => Ended::Code(detached::exit_code(status)),
                Some(Report::RuntimeFailed(status)) => {
                    Ended::RuntimeFailed(detached::exit_code(status))
                }
                Some(Report::Lost) | None => Ended::Lost,
            }),
        }
    }
}

pub(super) async fn exec(
    c: &Container,
    runtime: &OciRuntime,
    cmd: Vec<String>,
    tty: bool,
    io: StreamIo,
) -> Result<ExitStatus, BackendError> {
    if cmd.is_empty() {
        return Err(BackendError::Runtime("exec: empty command".into()));
    }
    let id = c.id();
    // From berthd's sealed copy of the runtime, which then need not copy itself — except for
    // a detached exec: its helper closes every descriptor it did not open before it runs the
    // runtime (runc or crun, which seal themselves).
    let runtime = &if tty && detaches_with_console(runtime) {
        runtime.clone()
    } else {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.with_sealed_copy())
            .await
            .map_err(|e| BackendError::Runtime(format!("exec in {id}: {e}").into()))?
    };
    let dir = ExecDir::create()?;
    let dir_path = dir.path().to_owned();
    let process_path = dir.path().join("process.json");
    let pid_file = dir.path().join("pid");
    write_process(&c.meta.bundle.join("config.json"), &cmd, tty, &process_path)?;

    let mut command = runtime.command();
    command
        .arg("exec")
        .arg("--process")
        .arg(&process_path)
        .arg("--pid-file")
        .arg(&pid_file);
    let console = if tty {
        let sock = dir.path().join("console.sock");
        let listener = UnixListener::bind(&sock)?;
        command.arg("--console-socket").arg(&sock);
        if detaches_with_console(runtime) {
            command.arg("--detach");
        }
        Some(listener)
    } else {
        None
    };
    command.arg(id);
    let detach = console.is_some() && detaches_with_console(runtime);
    let mut stdio = (None, None, None);
    let runtime_pid;
    let mut runner = if detach {
        let log = dir.path().join("runtime.stderr");
        let helper = detached::spawn(&command, &pid_file, &log).map_err(|e| {
            BackendError::Runtime(
                format!("exec in {id}: run {}: {e}", runtime.path.display()).into(),
            )
        })?;
        runtime_pid = helper.pid();
        Runner::Detached(tokio::task::spawn_blocking(move || helper.wait()))
    } else {
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(if io.stdin.is_some() && !tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if io.stdout.is_some() && !tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if io.stderr.is_some() && !tty {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().map_err(|e| {
            BackendError::Runtime(
                format!("exec in {id}: run {}: {e}", runtime.path.display()).into(),
            )
        })?;
        stdio = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        runtime_pid = child.id().and_then(|p| i32::try_from(p).ok());
        Runner::Foreground(child)
    };
    // From here on, dropping the future kills the exec'd process.
    let mut guard = KillGuard {
        pid_file: pid_file.clone(),
        runtime_pid,
        dir: Some(dir),
        armed: true,
    };

    let StreamIo {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let (child_stdin, child_stdout, child_stderr) = stdio;
    // Set when the process's end was seen before its terminal was picked up.
    let mut early_end = None;
    let mut copies = JoinSet::new();
    let mut input = JoinSet::new();
    match console {
        None => {
            if let (Some(mut from), Some(mut to)) = (stdin, child_stdin) {
                input.spawn(async move {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    let _ = to.shutdown().await;
                });
            }
            if let (Some(mut from), Some(mut to)) = (child_stdout, stdout) {
                copies.spawn(async move {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    let _ = to.shutdown().await;
                });
            }
            if let (Some(mut from), Some(mut to)) = (child_stderr, stderr) {
                copies.spawn(async move {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    let _ = to.shutdown().await;
                });
            }
        }
        Some(listener) => {
            // Biased: a terminal already handed over wins over an end seen at the same time.
            let master = tokio::select! {
                biased;
                m = receive_master(&listener) => m?,
                ended = runner.wait(|| false) => match ended? {
                    // The process ran and has already ended (a command that exits or is killed
                    // at once, seen before the terminal was picked up): its status is the
                    // answer; a terminal handed over meanwhile still carries its output.
                    Ended::Code(code) => {
                        early_end = Some(Ended::Code(code));
                        match tokio::time::timeout(DRAIN, receive_master(&listener)).await {
                            Ok(Ok(m)) => m,
                            _ => {
                                // Ended and reaped: nothing left to kill.
                                guard.armed = false;
                                return finish(id, runtime, &dir_path, Ended::Code(code));
                            }
                        }
                    }
                    other => {
                        let how = match other {
                            Ended::RuntimeFailed(c) | Ended::Code(c) => format!("exit code {c}"),
                            Ended::Lost => "status unknown".into(),
                        };
                        return Err(BackendError::Runtime(format!(
                            "exec in {id}: {} exited ({how}) before handing over the terminal{}",
                            runtime.path.display(),
                            runtime_stderr(&dir_path),
                        ).into()));
                    }
                }
            };
            let master = std::sync::Arc::new(register(master)?);
            if let Some(mut resize) = resize {
                let m = master.clone();
                input.spawn(async move {
                    while let Some(size) = resize.recv().await {
                        if let Err(e) =
                            berth_runtime::sys::set_winsize(m.get_ref(), size.height, size.width)
                        {
                            tracing::debug!(error = %e, "resize exec terminal");
                        }
                    }
                });
            }
            if let Some(from) = stdin {
                input.spawn(pty_input(master.clone(), from));
            }
            if let Some(to) = stdout {
                copies.spawn(pty_output(master.clone(), to));
            }
        }
    }

    let ended = match early_end {
        Some(ended) => ended,
        None => runner.wait(|| pid_file.exists()).await?,
    };
    guard.armed = false;
    drop(input);
    let _ =
        tokio::time::timeout(DRAIN, async { while copies.join_next().await.is_some() {} }).await;
    finish(id, runtime, &dir_path, ended)
}

/// The answer for an exec that ended as `ended`.
fn finish(
    id: &str,
    runtime: &OciRuntime,
    dir_path: &Path,
    ended: Ended,
) -> Result<ExitStatus, BackendError> {
    match ended {
        Ended::Code(code) => Ok(ExitStatus::from_code(code)),
        Ended::RuntimeFailed(code) => Err(BackendError::Runtime(
            format!(
                "exec in {id}: {} failed (exit code {code}){}",
                runtime.path.display(),
                runtime_stderr(dir_path)
            )
            .into(),
        )),
        Ended::Lost => Err(BackendError::Runtime(
            format!(
                "exec in {id}: the process ran detached from {} and its exit status is unknown",
                runtime.path.display()
            )
            .into(),
        )),
    }
}

/// What a detached runtime wrote on stderr, as a suffix for an error message.
fn runtime_stderr(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("runtime.stderr")) {
        Ok(s) if !s.trim().is_empty() => format!(": {}", s.trim()),
        _ => String::new(),
    }
}

/// The container's process from its bundle with `args` = `cmd` and `terminal` = `tty`.
fn write_process(spec_path: &Path, cmd: &[String], tty: bool, to: &Path) -> io::Result<()> {
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(spec_path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut process = spec.get("process").cloned().unwrap_or_default();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(tty);
    if let Some(p) = process.as_object_mut() {
        p.remove("consoleSize");
    }
    std::fs::write(to, serde_json::to_vec(&process).expect("json"))
}

/// Accepts the runtime's connection on the console socket and takes the pty master from it.
async fn receive_master(listener: &UnixListener) -> Result<OwnedFd, BackendError> {
    let (conn, _) = tokio::time::timeout(CONSOLE_TIMEOUT, listener.accept())
        .await
        .map_err(|_| BackendError::Runtime("exec: no terminal from the runtime".into()))??;
    let conn = conn.into_std()?;
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(CONSOLE_TIMEOUT))?;
    let (_, fd) =
        tokio::task::spawn_blocking(move || berth_runtime::process::console::recv_fd(&conn))
            .await
            .map_err(|e| BackendError::Runtime(Box::new(e)))?
            .map_err(|e| BackendError::Runtime(Box::new(e)))?;
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        &fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(fd)
}

/// Registers the pty master with tokio's reactor. The only unsafe code of berthd.
fn register(master: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor (an OwnedFd moved into it), so it stays open
    // for as long as it is registered and is closed only after deregistration.
    unsafe { AsyncFd::register(master) }.map_err(|e| e.into())
}

/// Client stdin → pty master; EOF becomes Ctrl-D.
async fn pty_input(master: std::sync::Arc<AsyncFd<OwnedFd>>, mut from: berth_streaming::Stdin) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = write_all(&master, &[EOT]).await;
                return;
            }
            Ok(n) => n,
        };
        if write_all(&master, &buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn write_all(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut ready = master.writable().await?;
        match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Pty master → client stdout, until the terminal hangs up (EIO once every slave is closed).
async fn pty_output(master: std::sync::Arc<AsyncFd<OwnedFd>>, mut to: Output) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let Ok(mut ready) = master.readable().await else {
            break;
        };
        match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(io::Error::from))
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Err(_would_block) => continue,
        }
    }
    let _ = to.shutdown().await;
}

/// Whether the runtime refuses `--console-socket` in the foreground (runc, crun: a terminal
/// needs `--detach`); berth-runtime supervises a console-socket exec and returns its exit code.
fn detaches_with_console(runtime: &OciRuntime) -> bool {
    runtime.path.file_name() != Some(std::ffi::OsStr::new("berth-runtime"))
}

fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
}

/// How long a guard of an abandoned exec waits for the runtime to write the pid file.
const PID_FILE_WAIT: Duration = Duration::from_secs(30);

/// SIGKILLs the exec'd process (PID from the pid file) unless disarmed; the runtime then ends
/// on its own (a foreground runtime with its process). If the runtime has not written the pid
/// file yet, a thread waits for it (while the runtime — or the detached exec's helper — lives,
/// at most [`PID_FILE_WAIT`], after which a hung runtime is killed) to kill the process then;
/// the exec directory lives until the guard is done with it.
struct KillGuard {
    pid_file: PathBuf,
    runtime_pid: Option<i32>,
    dir: Option<ExecDir>,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let kill_exec = |pid_file: &Path| {
            read_pid(pid_file).map(|pid| {
                tracing::debug!(pid, "client gone: killing the exec'd process");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            })
        };
        if kill_exec(&self.pid_file).is_some() {
            return;
        }
        let pid_file = self.pid_file.clone();
        let runtime = self.runtime_pid;
        let dir = self.dir.take();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + PID_FILE_WAIT;
            while std::time::Instant::now() < deadline {
                if kill_exec(&pid_file).is_some() {
                    break;
                }
                if !runtime.is_some_and(alive) {
                    // The runtime is gone: its pid file is there now or never will be.
                    let _ = kill_exec(&pid_file);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(pid) = runtime.filter(|&p| alive(p)) {
                tracing::warn!(
                    pid,
                    "exec: the runtime hung without starting the process; killing it"
                );
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            drop(dir);
        });
    }
}

/// A private directory (short path: it holds the console socket) for one exec, removed on drop.
struct ExecDir(PathBuf);

impl ExecDir {
    fn create() -> io::Result<ExecDir> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-exec-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_gets_the_command_and_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("config.json");
        std::fs::write(
            &spec,
            r#"{"process":{"args":["sh"],"cwd":"/","env":["A=1"],"consoleSize":{"height":1,"width":2}}}"#,
        )
        .unwrap();
        let out = dir.path().join("process.json");
        write_process(&spec, &["echo".into(), "hi".into()], true, &out).unwrap();
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(p["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(p["terminal"], serde_json::json!(true));
        assert_eq!(p["env"], serde_json::json!(["A=1"]));
        assert!(p.get("consoleSize").is_none());
    }
}
