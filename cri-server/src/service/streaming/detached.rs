//! A TTY exec under runc or crun: they refuse `--console-socket` in the foreground, so the
//! runtime runs `exec --detach` and exits once the process started. The process is then
//! reparented to the nearest child subreaper among its ancestors — which berthd must not be
//! (its shims double-fork to be adopted by init). So berthd forks a small helper that makes
//! itself a child subreaper, runs the runtime, adopts the exec'd process when the runtime
//! exits, reaps it and reports its wait status over a pipe — what containerd's shim and CRI-O's
//! conmon do for the same command.
//!
//! The helper is a fork of the multi-threaded berthd that never execs: between fork and
//! `_exit` it makes only async-signal-safe system calls on memory prepared before the fork.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::libc;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};

/// How the detached exec ended, as the helper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    /// The runtime failed (its wait status): the process did not start.
    RuntimeFailed(i32),
    /// The exec'd process ended with this wait status.
    Exited(i32),
    /// The runtime succeeded but the process named in the pid file was never adopted.
    Lost,
}

impl Report {
    const RUNTIME_FAILED: i32 = 1;
    const EXITED: i32 = 2;
    const LOST: i32 = 3;

    fn decode(bytes: [u8; 8]) -> Option<Report> {
        let kind = i32::from_ne_bytes(bytes[..4].try_into().ok()?);
        let status = i32::from_ne_bytes(bytes[4..].try_into().ok()?);
        match kind {
            Self::RUNTIME_FAILED => Some(Report::RuntimeFailed(status)),
            Self::EXITED => Some(Report::Exited(status)),
            Self::LOST => Some(Report::Lost),
            _ => None,
        }
    }
}

/// The exit code of a wait status (128+N for a signal).
pub(super) fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        128
    }
}

/// Everything the helper touches, allocated before the fork.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    pid_file: CString,
    devnull: OwnedFd,
    stderr: OwnedFd,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Starts `command` (the runtime's `exec --detach …`, writing `pid_file`) under a subreaper
/// helper; its stderr goes to `stderr_log`. The returned future-free handle is waited on with
/// [`Helper::wait`] (blocking): it resolves once the exec'd process ended (or the runtime
/// failed), and reaps the helper. Dropping the handle without waiting leaves the helper to
/// finish on its own; [`Helper::wait`] must still run somewhere to reap it.
pub(super) fn spawn(command: &Command, pid_file: &Path, stderr_log: &Path) -> io::Result<Helper> {
    let program = cstring(command.get_program())?;
    let mut argv = vec![program.clone()];
    for a in command.get_args() {
        argv.push(cstring(a)?);
    }
    let prepared = Prepared {
        program,
        argv,
        pid_file: cstring(pid_file.as_os_str())?,
        devnull: above_stdio(open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)?,
        stderr: above_stdio(open(
            stderr_log,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?)?,
    };
    let mut argv_ptrs: Vec<*const libc::c_char> =
        prepared.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (report_rd, report_wr) = pipe2(OFlag::O_CLOEXEC)?;
    let report_wr = above_stdio(report_wr)?;

    // SAFETY: the child runs only `helper_main`, which makes async-signal-safe system calls on
    // memory allocated above (no allocation, no locks, no Rust runtime) and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        helper_main(&prepared, &argv_ptrs, report_wr.as_raw_fd());
    }
    drop(report_wr);
    Ok(Helper {
        pid: Pid::from_raw(pid),
        report: std::fs::File::from(report_rd),
    })
}

/// A descriptor numbered 3 or more (the helper's stdio slots are overwritten first).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The report pipe's number in the helper (stdio below it, every other descriptor closed).
const REPORT_FD: libc::c_int = 3;

/// The forked helper: subreaper, runtime child, reaping, report, `_exit`. Never returns.
fn helper_main(p: &Prepared, argv: &[*const libc::c_char], report: libc::c_int) -> ! {
    // SAFETY: every call below is async-signal-safe (prctl, sigaction via signal, sigprocmask,
    // fork, dup2, fcntl, close_range, execv, waitpid, open, read, close, write, _exit) and
    // every pointer refers to memory prepared before the fork that stays alive until `_exit`.
    unsafe {
        // Keep nothing of berthd's: its sockets (CRI and streaming connections, listeners)
        // must close when berthd closes them, not when this helper ends. All of the fds
        // used here are above 2, so the dup2s cannot clobber one another.
        libc::dup2(p.devnull.as_raw_fd(), 0);
        libc::dup2(p.devnull.as_raw_fd(), 1);
        libc::dup2(p.stderr.as_raw_fd(), 2);
        if report != REPORT_FD {
            libc::dup2(report, REPORT_FD);
        }
        libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        if libc::syscall(libc::SYS_close_range, REPORT_FD + 1, libc::c_uint::MAX, 0) != 0 {
            for fd in REPORT_FD + 1..65536 {
                libc::close(fd);
            }
        }
        let report = REPORT_FD;
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // berthd's SIGCHLD handler (tokio's) must not run here.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let runtime = libc::fork();
        if runtime == 0 {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execv(p.program.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        if runtime < 0 {
            send(report, Report::RUNTIME_FAILED, 127 << 8);
        }
        // Children reaped before the target is known (the exec'd process may be reaped before
        // the runtime's own exit is seen).
        let mut early: [(libc::pid_t, libc::c_int); 8] = [(0, 0); 8];
        let mut target: libc::pid_t = 0;
        loop {
            let mut status: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid < 0 {
                if nix::errno::Errno::last_raw() == libc::EINTR {
                    continue;
                }
                // ECHILD: nothing left to adopt.
                send(report, Report::LOST, 0);
            }
            if pid == runtime {
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    send(report, Report::RUNTIME_FAILED, status);
                }
                target = read_pid(p.pid_file.as_ptr());
                if target <= 0 {
                    send(report, Report::LOST, 0);
                }
                for &(early_pid, early_status) in &early {
                    if early_pid == target {
                        send(report, Report::EXITED, early_status);
                    }
                }
            } else if target != 0 && pid == target {
                send(report, Report::EXITED, status);
            } else if target == 0 {
                if let Some(slot) = early.iter_mut().find(|(p, _)| *p == 0) {
                    *slot = (pid, status);
                }
            }
        }
    }
}

/// Writes the report and ends the helper.
///
/// # Safety
/// Only in the forked helper (it calls `_exit`).
unsafe fn send(fd: libc::c_int, kind: i32, status: i32) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&kind.to_ne_bytes());
    buf[4..].copy_from_slice(&status.to_ne_bytes());
    // SAFETY: `buf` is a live 8-byte buffer; write and _exit are async-signal-safe.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(0)
    }
}

/// The PID in a pid file, 0 if unreadable. Async-signal-safe: a stack buffer, no allocation.
///
/// # Safety
/// `path` is a NUL-terminated string.
unsafe fn read_pid(path: *const libc::c_char) -> libc::pid_t {
    // SAFETY: `path` is NUL-terminated (caller) and `buf` is a live stack buffer of the size
    // passed to read.
    unsafe {
        let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let mut buf = [0u8; 32];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        let mut pid: libc::pid_t = 0;
        for &b in buf.iter().take(n.max(0) as usize) {
            match b {
                b'0'..=b'9' => pid = pid.saturating_mul(10).saturating_add(i32::from(b - b'0')),
                _ => break,
            }
        }
        pid
    }
}

/// The berthd side of a running helper.
pub(super) struct Helper {
    pid: Pid,
    report: std::fs::File,
}

impl Helper {
    /// The helper's PID (alive until the exec'd process ended or the runtime failed).
    pub(super) fn pid(&self) -> Option<i32> {
        Some(self.pid.as_raw())
    }

    /// Blocks until the helper reports, then reaps it. `None` if it died without a report.
    pub(super) fn wait(mut self) -> Option<Report> {
        use std::io::Read;
        let mut buf = [0u8; 8];
        let report = match self.report.read_exact(&mut buf) {
            Ok(()) => Report::decode(buf),
            Err(_) => None,
        };
        loop {
            match waitpid(self.pid, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(WaitStatus::StillAlive) => continue,
                _ => break,
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `runc exec --detach`: starts a process that outlives it, writes its PID
    /// and exits 0; the helper adopts that process and reports its exit code.
    #[test]
    fn adopts_the_detached_process_and_reports_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "sh -c 'sleep 0.3; exit 7' & echo $! > {}; exit 0",
            pid_file.display()
        ));
        let helper = spawn(&cmd, &pid_file, &dir.path().join("stderr")).unwrap();
        let report = helper.wait().unwrap();
        assert_eq!(report, Report::Exited(7 << 8));
        let Report::Exited(status) = report else {
            unreachable!()
        };
        assert_eq!(exit_code(status), 7);
    }

    #[test]
    fn a_failing_runtime_is_reported_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("echo nope >&2; exit 5");
        let log = dir.path().join("stderr");
        let helper = spawn(&cmd, &dir.path().join("pid"), &log).unwrap();
        let Some(Report::RuntimeFailed(status)) = helper.wait() else {
            panic!("runtime failure not reported")
        };
        assert_eq!(exit_code(status), 5);
        assert_eq!(std::fs::read_to_string(log).unwrap(), "nope\n");
    }

    #[test]
    fn the_helper_keeps_none_of_the_parents_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fds = dir.path().join("fds");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("ls /proc/$PPID/fd > {}", fds.display()));
        let helper = spawn(&cmd, &dir.path().join("pid"), &dir.path().join("stderr")).unwrap();
        assert_eq!(helper.wait(), Some(Report::Lost));
        let listed = std::fs::read_to_string(&fds).unwrap();
        let mut listed: Vec<i32> = listed.lines().map(|l| l.parse().unwrap()).collect();
        listed.sort();
        assert_eq!(listed, vec![0, 1, 2, 3], "listener fd {:?} leaked", held);
    }
}
