//! The few system calls the benchmarks need that std does not offer: running a command and
//! reaping it with `wait4` (for its rusage), pidfds (bounded waits on any process), and the
//! child-subreaper bit (so that container inits orphaned by `create` become our children, as
//! they become a shim's). Every `unsafe` block of the crate lives here.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a command run by [`run_measured`] ended.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From just before spawn to the return of `wait4`.
    pub elapsed: Duration,
    /// `ru_maxrss` of the reaped process, KiB: the high-water RSS of the process (across
    /// `execve`, so a re-exec is included) and of the children it waited for.
    pub max_rss_kib: u64,
    /// Exit code, or 128 + signal.
    pub code: i32,
    pub timed_out: bool,
}

/// Runs `cmd` with stdin and stdout on /dev/null and stderr into `stderr`, and waits at most
/// `timeout` for it (killing it after that).
pub fn run_measured(mut cmd: Command, stderr: File, timeout: Duration) -> io::Result<Measured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let start = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    // The std handle is never waited on: we reap the process ourselves, with wait4.
    drop(child);
    let pidfd = pidfd_open(pid)?;
    let timed_out = !wait_readable(&pidfd, timeout)?;
    if timed_out {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let (status, usage) = wait4(pid)?;
    let elapsed = start.elapsed();
    Ok(Measured {
        elapsed,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        code: decode_status(status),
        timed_out,
    })
}

fn decode_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    }
}

/// Blocking `wait4` on one process, retried on EINTR.
pub fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A pidfd for any process; it polls readable once the process has exited.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the pidfd's process exits; false if `timeout` passed first.
pub fn wait_readable(pidfd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return Ok(true),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Makes this process the reaper of orphaned descendants (container inits after `create`).
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Reaps one specific child if it is ours; returns its exit code (128 + signal) when known.
pub fn reap(pid: libc::pid_t) -> Option<i32> {
    match waitpid(Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reaps every exited child without blocking (orphans handed to us as subreaper).
pub fn reap_zombies() {
    for _ in 0..10_000 {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
