//! berth-shim: the per-container monitor (like containerd's shim or CRI-O's conmon).
//!
//! berthd runs `berth-shim --id … --bundle … --state-dir …`. The shim forks: the foreground
//! half waits for a readiness line and prints it (one JSON [`Ready`] line on stdout), then exits,
//! so berthd never has to reap a long-lived child. The background half detaches (setsid), makes
//! itself a child subreaper, creates the container through the OCI runtime with its stdio on
//! pipes (or a pty through the console socket), writes the CRI log file, serves attach, resize
//! and reopen-log on `shim.sock`, and, when the container's init exits, records the exit status
//! atomically in `exit.json`. It does not depend on berthd: a restarted berthd re-adopts it.

mod control;
mod output;
mod runtime_copy;
mod trim;

use std::fs::{self, File};
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_runtime::atomic_file;
use berth_runtime::cri_log::Stream;
use berth_runtime::process::console;
use berth_runtime::shim_protocol::{ExitRecord, Ready, INIT_PID_FILE, SHIM_PID_FILE, SOCKET};
use berth_runtime::sys;
use clap::Parser;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use control::Shared;
use output::{Output, Stdin};
use runtime_copy::RuntimeCopy;

/// How long the output of an exited container may still drain (from processes that inherited
/// its stdio) before the exit is recorded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(name = "berth-shim", version, about = "berth's per-container monitor")]
struct Args {
    #[arg(long)]
    id: String,
    #[arg(long)]
    bundle: PathBuf,
    /// The OCI runtime binary (runc's command line).
    #[arg(long)]
    runtime: PathBuf,
    /// berthd's sealed memfd copy of the runtime binary, as a path into berthd's
    /// `/proc/PID/fd`: opened at start, run for `create` and closed right after it;
    /// `--runtime` stays its name for messages.
    #[arg(long = "runtime-copy", value_name = "PATH")]
    runtime_copy: Option<PathBuf>,
    /// The runtime's `--root`.
    #[arg(long = "runtime-root")]
    runtime_root: PathBuf,
    /// The shim's own directory: sockets, pid files, exit record, logs.
    #[arg(long = "state-dir")]
    state_dir: PathBuf,
    /// The control socket (berthd gives a short path, so that it fits sun_path whatever the
    /// state directory); default `<state-dir>/shim.sock`.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The CRI log file of the container.
    #[arg(long = "log-path")]
    log_path: Option<PathBuf>,
    /// Keep the container's stdin open for attach.
    #[arg(long)]
    stdin: bool,
    /// Close stdin when the first attach session ends.
    #[arg(long = "stdin-once")]
    stdin_once: bool,
    /// Start the container in the runtime call that creates it (`run --detach`): for a pause,
    /// which needs nothing done between the two; saves a runtime exec on every pod start.
    #[arg(long)]
    start: bool,
    /// Run the runtime with `--systemd-cgroup` (berthd's systemd cgroup driver: the
    /// container's cgroup is a systemd scope unit).
    #[arg(long = "systemd-cgroup")]
    systemd_cgroup: bool,
}

fn main() -> ExitCode {
    // The shim's threads (output pumps, control socket) allocate little: one malloc arena for
    // all of them instead of one each (each would keep its own heap resident).
    sys::limit_malloc_arenas(1);
    let args = Args::parse();
    let (ready_read, ready_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            println!(
                "{}",
                serde_json::to_string(&Ready::Failed {
                    error: format!("pipe: {e}")
                })
                .unwrap()
            );
            return ExitCode::FAILURE;
        }
    };
    match sys::fork() {
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_write);
            // One line: the shim keeps running (with the pipe closed) after it.
            let mut line = String::new();
            let _ = std::io::BufReader::new(File::from(ready_read)).read_line(&mut line);
            let ready =
                serde_json::from_str::<Ready>(line.trim()).unwrap_or_else(|_| Ready::Failed {
                    error: "the shim exited before reporting".into(),
                });
            println!(
                "{}",
                serde_json::to_string(&ready).expect("ready serializes")
            );
            match ready {
                Ready::Created { .. } => ExitCode::SUCCESS,
                Ready::Failed { .. } => ExitCode::FAILURE,
            }
        }
        Ok(ForkResult::Child) => {
            drop(ready_read);
            let mut ready = Some(File::from(ready_write));
            let code = match supervise(&args, &mut ready) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(container = %args.id, error = %format!("{e:#}"), "shim failed");
                    if let Some(mut ready) = ready {
                        let failed = Ready::Failed {
                            error: format!("{e:#}"),
                        };
                        let _ = writeln!(
                            ready,
                            "{}",
                            serde_json::to_string(&failed).expect("ready serializes")
                        );
                    }
                    1
                }
            };
            sys::exit_child(code)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::to_string(&Ready::Failed {
                    error: format!("fork: {e}")
                })
                .unwrap()
            );
            ExitCode::FAILURE
        }
    }
}

/// A private (0700, from mkdtemp) directory for the console socket, removed when dropped.
struct ConsoleDir(PathBuf);

impl ConsoleDir {
    fn create() -> Result<ConsoleDir> {
        let template = std::env::temp_dir().join("berth-pty-XXXXXX");
        nix::unistd::mkdtemp(&template)
            .map(ConsoleDir)
            .with_context(|| {
                format!(
                    "create the console socket's directory {}",
                    template.display()
                )
            })
    }
}

impl Drop for ConsoleDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Points stdin/stdout/stderr at /dev/null: the shim must not hold the pipes of whoever
/// started it.
fn detach_stdio() -> Result<()> {
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

fn init_logging(state_dir: &Path) {
    if let Ok(file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("shim.log"))
    {
        let _ = tracing_subscriber::fmt()
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .try_init();
    }
}

/// The last error the runtime logged (`--log-format json`), for a failed create.
fn runtime_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_owned())
    })
}

fn pipe() -> Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    Ok((File::from(r), File::from(w)))
}

fn supervise(args: &Args, ready: &mut Option<File>) -> Result<()> {
    let runtime_copy = args
        .runtime_copy
        .as_deref()
        .map(RuntimeCopy::open)
        .transpose()?;
    detach_stdio()?;
    nix::unistd::setsid().context("setsid")?;
    fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("create {}", args.state_dir.display()))?;
    init_logging(&args.state_dir);
    let dir = &args.state_dir;
    // Replaced atomically, not synced: the pid of a process means nothing after the machine
    // crash that a sync would guard against, and the state dir is a tmpfs on a node.
    atomic_file::replace(
        &dir.join(SHIM_PID_FILE),
        std::process::id().to_string().as_bytes(),
        0o644,
    )?;
    // The container's init is the runtime's grandchild; it must become ours when the runtime exits.
    nix::sys::prctl::set_child_subreaper(true).context("become a child subreaper")?;

    let runtime_log = dir.join("runtime.log");
    let mut cmd = match &runtime_copy {
        Some(copy) => copy.command(&args.runtime),
        None => Command::new(&args.runtime),
    };
    cmd.arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(&runtime_log)
        .arg("--log-format")
        .arg("json");
    if args.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    if args.start {
        cmd.arg("run").arg("--detach");
    } else {
        cmd.arg("create");
    }
    cmd.arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(dir.join(INIT_PID_FILE));

    // Whether the container gets a pty is its config's business (process.terminal).
    // (The spec itself is dropped here: the shim keeps nothing of it for the container's life.)
    let terminal = berth_runtime::container::create::load_bundle(&args.bundle)?
        .1
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // The console socket lives in a private (0700) temp dir, as containerd's shim does: a path
    // under the state dir would not fit sun_path (108 bytes) for every --state a node may use.
    let mut console_dir = None;
    let mut console_listener = None;
    let (mut out_read, mut err_read, mut in_write) = (None, None, None);
    if terminal {
        let tmp = ConsoleDir::create()?;
        let console_path = tmp.0.join("pty.sock");
        console_listener = Some(
            UnixListener::bind(&console_path)
                .with_context(|| format!("bind the console socket {}", console_path.display()))?,
        );
        cmd.arg("--console-socket").arg(&console_path);
        console_dir = Some(tmp);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    } else {
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        cmd.stdout(ow).stderr(ew);
        if args.stdin {
            let (ir, iw) = pipe()?;
            cmd.stdin(ir);
            in_write = Some(iw);
        } else {
            cmd.stdin(Stdio::null());
        }
        out_read = Some(or);
        err_read = Some(er);
    }
    cmd.arg(&args.id);
    let status = cmd.status();
    // The runtime is not run again: a shim that lives as long as its container must not pin
    // this copy of it (berthd makes a new one when the binary is upgraded).
    drop(runtime_copy);
    let status = status.with_context(|| format!("run {}", args.runtime.display()))?;
    // The Command (and with it our copies of the container's pipe ends) is gone now.
    drop(cmd);
    if !status.success() {
        let why = runtime_error(&runtime_log).unwrap_or_else(|| format!("{status}"));
        bail!("create container {}: {why}", args.id);
    }
    let init_pid: i32 = fs::read_to_string(dir.join(INIT_PID_FILE))
        .context("read the init pid")?
        .trim()
        .parse()
        .context("parse the init pid")?;

    let output = Output::new(args.log_path.clone()).context("open the container log")?;
    let mut pumps = Vec::new();
    let mut pty = None;
    let stdin;
    if let Some(listener) = console_listener {
        let (stream, _) = listener.accept().context("accept on the console socket")?;
        let (_, master) = console::recv_fd(&stream)?;
        drop(console_dir.take());
        let master = Arc::new(master);
        pumps.push(output.pump(
            File::from(master.as_fd().try_clone_to_owned()?),
            Stream::Stdout,
        ));
        stdin = Stdin::new(
            args.stdin
                .then(|| master.as_fd().try_clone_to_owned().map(File::from))
                .transpose()?,
        );
        pty = Some(master);
    } else {
        pumps.push(output.pump(out_read.take().expect("stdout pipe"), Stream::Stdout));
        pumps.push(output.pump(err_read.take().expect("stderr pipe"), Stream::Stderr));
        stdin = Stdin::new(in_write.take());
    }

    let exited = Arc::new(Mutex::new(None));
    let socket = args.socket.clone().unwrap_or_else(|| dir.join(SOCKET));
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("bind the shim socket {}", socket.display()))?;
    control::serve(
        listener,
        Shared {
            output: output.clone(),
            stdin,
            stdin_once: args.stdin_once,
            pty: pty.clone(),
            init_pid,
            exited: exited.clone(),
        },
    );

    let created = Ready::Created {
        shim_pid: std::process::id() as i32,
        init_pid,
    };
    if let Some(mut ready) = ready.take() {
        writeln!(
            ready,
            "{}",
            serde_json::to_string(&created).expect("ready serializes")
        )?;
    }
    tracing::info!(container = %args.id, init_pid, "container created");
    // Start-up is over: what it left resident (code, stack, heap) is given back.
    let trimmed = trim::after_start_up();
    tracing::debug!(container = %args.id, file = trimmed.file, stack = trimmed.stack,
        heap = trimmed.heap_released, "start-up memory dropped");

    let record = wait_for_init(Pid::from_raw(init_pid))?;
    drain(pumps, DRAIN_TIMEOUT);
    output.finish();
    let json = serde_json::to_vec(&record).expect("exit record serializes");
    atomic_file::write(&ExitRecord::path(dir), &json, 0o644)?;
    *exited.lock().expect("exit lock") = Some(record.clone());
    tracing::info!(container = %args.id, exit_code = record.exit_code, "container exited");
    let _ = fs::remove_file(&socket);
    drop(pty);
    Ok(())
}

/// Reaps every child (as a subreaper the shim inherits the container's orphans) until the
/// init has exited.
fn wait_for_init(init: Pid) -> Result<ExitRecord> {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => {
                return Ok(ExitRecord {
                    exit_code: code,
                    signal: None,
                    exited_at: chrono::Utc::now(),
                })
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                return Ok(ExitRecord {
                    exit_code: 128 + sig as i32,
                    signal: Some(sig as i32),
                    exited_at: chrono::Utc::now(),
                })
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                // The init is not our child (it was reparented elsewhere): poll for it.
                if nix::sys::signal::kill(init, None).is_err() {
                    return Ok(ExitRecord {
                        exit_code: 255,
                        signal: None,
                        exited_at: chrono::Utc::now(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => bail!("wait for the container: {e}"),
        }
    }
}

/// Waits (bounded) for the output pumps to reach EOF.
fn drain(pumps: Vec<std::thread::JoinHandle<()>>, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for p in pumps {
        while !p.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if p.is_finished() {
            let _ = p.join();
        }
    }
}
