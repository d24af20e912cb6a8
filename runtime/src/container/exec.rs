//! `exec`: run another process inside a running container, in all its namespaces and its
//! cgroup, with the container's seccomp filter and the given process attributes.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Process;

use super::create::{forward_seccomp_listener, write_pid_file};
use super::state::Container;
use super::ContainerStatus;
use crate::error::{Result, RuntimeError};
use crate::process::namespaces::NamespacePlan;
use crate::process::stage1;
use crate::process::sync::{self, ToChild, ToParent};
use crate::process::{console, env_bytes, init};
use crate::sys;

#[derive(Debug)]
pub struct ExecOptions {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
}

/// A started exec process. Without `detach`, the runtime is its subreaper and can wait for it.
#[derive(Debug)]
pub struct Exec {
    pub pid: Pid,
    /// The pty master when the process has a terminal and no console socket was given.
    pub pty: Option<OwnedFd>,
}

pub fn exec(container: &Container, opts: ExecOptions) -> Result<Exec> {
    container.require("exec", ContainerStatus::can_exec)?;
    let terminal = opts.process.terminal().unwrap_or(false);
    // A terminal without a console socket: the runtime receives the pty itself (and proxies it).
    let (console, own_pty) = match (&opts.console_socket, terminal) {
        (Some(path), _) => (
            Some(OwnedFd::from(UnixStream::connect(path).map_err(|e| {
                RuntimeError::io("connect to the console socket", path, e)
            })?)),
            None,
        ),
        (None, true) => {
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| RuntimeError::io("socketpair", "console", e))?;
            (Some(OwnedFd::from(theirs)), Some(ours))
        }
        (None, false) => (None, None),
    };
    let plan = NamespacePlan::for_exec(container.pid())?;
    let cgroup = container.cgroup()?;
    let seccomp = container
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone());
    if !opts.detach {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| RuntimeError::sys("become a child subreaper", e))?;
    }
    let (parent, child) = sync::pair()?;
    let process = opts.process.clone();
    let env_bytes = env_bytes::for_exec(
        &container.spec,
        process.env().as_deref().unwrap_or_default(),
    );
    let preserve = opts.preserve_fds;
    let stage1_pid = match sys::fork().map_err(|e| RuntimeError::sys("fork stage 1", e))? {
        ForkResult::Child => {
            drop(parent);
            if let Err(e) = init::set_oom_score_adj(&process) {
                stage1::fail(&child, "oom_score_adj", &e);
            }
            stage1::run(child, &plan, |sync| {
                init::run_exec(process, seccomp, env_bytes, console, preserve, sync)
            })
        }
        ForkResult::Parent { child: pid } => pid,
    };
    drop(child);
    drop(console);
    let id = container.state.id.clone();
    let result = (|| -> Result<Pid> {
        cgroup.add_task(stage1_pid)?;
        parent.send(&ToChild::Go)?;
        let mut pid = None;
        loop {
            let (msg, fds) = match parent.recv_with_fds::<ToParent>()? {
                Some((msg, fds)) => (Some(msg), fds),
                None => (None, Vec::new()),
            };
            match msg {
                Some(ToParent::SeccompListener) => {
                    let mut state = container.oci_state();
                    state.pid = pid.map(|p: Pid| p.as_raw()).unwrap_or_default();
                    forward_seccomp_listener(&container.spec, &state, &fds)?;
                    parent.send(&ToChild::SeccompListenerSent)?;
                }
                Some(ToParent::ChildPid { pid: p }) => {
                    pid = Some(Pid::from_raw(p));
                    let _ = waitpid(stage1_pid, None);
                    parent.send(&ToChild::Proceed)?;
                }
                Some(ToParent::Error { stage, message }) => {
                    return Err(RuntimeError::Init {
                        id: id.clone(),
                        stage,
                        message,
                    })
                }
                Some(other) => {
                    return Err(RuntimeError::Init {
                        id: id.clone(),
                        stage: "exec".into(),
                        message: format!("unexpected {other:?}"),
                    })
                }
                // The sync socket is close-on-exec: EOF after the pid means execve succeeded.
                None => {
                    return pid.ok_or_else(|| RuntimeError::Init {
                        id: id.clone(),
                        stage: "exec".into(),
                        message: "the process exited before it was set up".into(),
                    })
                }
            }
        }
    })();
    let pid = match result {
        Ok(pid) => pid,
        Err(e) => {
            let _ = nix::sys::signal::kill(stage1_pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(stage1_pid, None);
            return Err(e);
        }
    };
    let pty = match own_pty {
        Some(sock) => Some(receive_pty(&sock)?),
        None => None,
    };
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, pid)?;
    }
    Ok(Exec { pid, pty })
}

fn receive_pty(sock: &UnixStream) -> Result<OwnedFd> {
    console::recv_fd(sock).map(|(_, fd)| fd)
}

/// Waits for a process the runtime is the (sub)reaper of; its exit code, or 128+signal.
pub fn wait_exit(pid: Pid) -> Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys(format!("wait for process {pid}"), e)),
        }
    }
}
