//! Watching processes berthd did not start as its children (shims, pauses, runtimes): whether
//! one still runs, and waiting for its end through a pidfd, which wakes the moment it exits
//! instead of at the next tick of a sleep loop.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How often [`wait_gone`] looks again when it cannot have a pidfd (kernels before 5.3).
const FALLBACK_TICK: Duration = Duration::from_millis(10);

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Waits until `pid` has exited (or is a zombie), at most `limit`; true if it is gone.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let pidfd = match berth_runtime::sys::pidfd_open(pid) {
        Ok(fd) => Some(fd),
        Err(nix::errno::Errno::ESRCH) => return true,
        Err(_) => None,
    };
    loop {
        // A zombie's pidfd polls readable, as its exit is what it reports.
        if !alive(pid) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match &pidfd {
            Some(fd) => {
                let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(n) if n > 0 => return true,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    // Something odd with the pidfd: fall back to looking at /proc.
                    Err(_) => std::thread::sleep(FALLBACK_TICK.min(left)),
                }
            }
            None => std::thread::sleep(FALLBACK_TICK.min(left)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn wakes_when_the_process_exits() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        let began = Instant::now();
        // Our own child turns into a zombie when it exits: that counts as gone.
        assert!(wait_gone(pid, Duration::from_secs(10)));
        let waited = began.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(!alive(pid));
        child.wait().unwrap();
    }

    #[test]
    fn gives_up_at_the_limit_and_knows_gone_pids() {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(!wait_gone(pid, Duration::from_millis(50)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(wait_gone(pid, Duration::from_millis(50)));
        assert!(!alive(pid));
        assert!(!alive(0));
        assert!(!alive(-1));
    }
}
