//! `start`: release init from the exec FIFO, then run the poststart hooks.

use std::fs;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use super::state::{Container, OciState, EXEC_FIFO};
use super::ContainerStatus;
use crate::error::{Result, RuntimeError};
use crate::hooks::{self, HookKind};

/// How long `start` waits for init to open its end of the FIFO. Init opens it as the last step
/// of `create`, so this only matters if init died or was stopped.
const FIFO_TIMEOUT: Duration = Duration::from_secs(30);

pub fn start(container: &Container) -> Result<()> {
    container.require("start", ContainerStatus::can_start)?;
    let path = container.dir.join(EXEC_FIFO);
    // Non-blocking open for reading succeeds at once; init's blocking open for writing then
    // completes, and its byte arrives.
    let fifo = open(
        &path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys(format!("open {}", path.display()), e))?;
    // The init runs from a sealed copy of the runtime (CVE-2019-5736) that `create` has let go
    // of: unless someone else holds it, the init's execve of the user process drops the last
    // reference, and the kernel frees the copy's pages in the container's process before the
    // user process runs its first instruction. `start` holds it until the init is out of that
    // execve (its references go in the exec's last steps, after it closed the FIFO), so that
    // the cost lands here instead.
    let init_exe = hold_exe(container.pid());
    let deadline = Instant::now() + FIFO_TIMEOUT;
    let mut got_byte = false;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("poll the exec fifo", e)),
        }
        let mut buf = [0u8; 1];
        match nix::unistd::read(&fifo, &mut buf) {
            Ok(1) => got_byte = true,
            // EOF after the byte: init closed the FIFO by execve (after startContainer hooks).
            Ok(0) if got_byte => break,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(RuntimeError::sys("read the exec fifo", e)),
        }
        if !got_byte && !container.init_alive() {
            return Err(RuntimeError::WrongStatus {
                id: container.state.id.clone(),
                op: "start",
                status: ContainerStatus::Stopped,
            });
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Timeout {
                what: format!("container {} to take the start signal", container.state.id),
                seconds: FIFO_TIMEOUT.as_secs(),
            });
        }
    }
    if init_exe.is_some() {
        wait_out_of_execve(container.pid());
    }
    drop(init_exe);
    fs::remove_file(&path).map_err(|e| RuntimeError::io("remove", &path, e))?;
    // The state of the container the start operation made: running, with its init's pid. Read
    // back from the process instead, a user process that already exited (`true`) gave the
    // poststart hooks "stopped" and pid 0 (runtime-tools' hooks_stdin, now and then).
    let state = OciState {
        status: ContainerStatus::Running,
        pid: container.pid().as_raw(),
        ..container.oci_state()
    };
    let state = serde_json::to_string(&state).expect("state serializes");
    if let Err(e) = hooks::run(
        HookKind::Poststart,
        &HookKind::Poststart.of(&container.spec),
        &state,
    ) {
        // The spec: a failing poststart hook is logged, the lifecycle goes on.
        tracing::warn!(container = %container.state.id, error = %e, "poststart hook failed");
    }
    Ok(())
}

/// A reference to the executable of the process `pid` (/proc/PID/exe), if it can be opened.
fn hold_exe(pid: nix::unistd::Pid) -> Option<fs::File> {
    fs::File::open(format!("/proc/{pid}/exe")).ok()
}

/// How long `start` waits at most for the init to leave its execve.
const EXECVE_WAIT: Duration = Duration::from_millis(50);

/// Waits (bounded) while the process `pid` is inside execve but not running: woken by the
/// FIFO's close, `start` may have taken the CPU from it before it finished the exec. A
/// running process, or one in user space or another system call, is past it.
fn wait_out_of_execve(pid: nix::unistd::Pid) {
    let deadline = Instant::now() + EXECVE_WAIT;
    let path = format!("/proc/{pid}/syscall");
    while Instant::now() < deadline {
        match fs::read_to_string(&path) {
            Ok(s) if in_execve(&s) => std::thread::sleep(Duration::from_micros(200)),
            _ => return,
        }
    }
}

/// Whether /proc/PID/syscall says the (not running) task is inside execve.
fn in_execve(syscall: &str) -> bool {
    syscall
        .split_whitespace()
        .next()
        .and_then(|nr| nr.parse::<i64>().ok())
        .is_some_and(|nr| nr == libc::SYS_execve)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn reads_execve_from_proc_syscall() {
        let execve = format!(
            "{} 0x7ffd 0x7ffe 0x7fff 0x0 0x0 0x0 0x7ffc 0x7f00",
            libc::SYS_execve
        );
        assert!(in_execve(&execve));
        assert!(!in_execve("running"));
        assert!(!in_execve("-1 0x7ffc 0x7f00"));
        assert!(!in_execve("0 0x3 0x7ffd 0x1000 0x0 0x0 0x0 0x7ffc 0x7f00"));
    }

    #[test]
    fn does_not_wait_for_a_process_outside_execve() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let started = Instant::now();
        wait_out_of_execve(pid);
        let waited = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            waited < EXECVE_WAIT,
            "waited {waited:?} for a sleeping process"
        );
    }

    #[test]
    fn holds_the_executable_of_a_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let held = hold_exe(pid).expect("/proc/PID/exe of a child opens");
        let exe = fs::metadata(format!("/proc/{pid}/exe")).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let held = held.metadata().unwrap();
        assert_eq!((held.dev(), held.ino()), (exe.dev(), exe.ino()));
    }
}
