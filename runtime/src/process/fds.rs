//! Descriptor hygiene before execve: every descriptor a process inherited beyond stdio and the
//! `--preserve-fds` ones is marked close-on-exec, so that no host descriptor reaches the
//! container (CVE-2024-21626).
//!
//! close_range(2) does it in one call, but a container's seccomp profile may deny it (profiles
//! older than Linux 5.9 do not list it, and runtime-tools' default profile answers EPERM), and
//! kernels before 5.11 lack CLOSE_RANGE_CLOEXEC. Then the descriptors listed in /proc/self/fd
//! are marked one by one with fcntl, or, with no /proc, every number below RLIMIT_NOFILE.

use std::os::fd::RawFd;

use nix::errno::Errno;

use crate::sys;

/// Marks every open descriptor numbered `first` or above close-on-exec.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    match sys::close_range_cloexec(first) {
        Ok(()) => Ok(()),
        // ENOSYS: no close_range; EINVAL: no CLOSE_RANGE_CLOEXEC; EPERM or another errno: a
        // seccomp filter denies it.
        Err(Errno::ENOSYS | Errno::EINVAL | Errno::EPERM | Errno::EACCES) => cloexec_walk(first),
        Err(e) => Err(e),
    }
}

/// The fallback: fcntl(F_SETFD) on every open descriptor numbered `first` or above.
pub fn cloexec_walk(first: u32) -> nix::Result<()> {
    let first = RawFd::try_from(first).unwrap_or(RawFd::MAX);
    for fd in open_fds()?.into_iter().filter(|fd| *fd >= first) {
        sys::set_cloexec_raw(fd)?;
    }
    Ok(())
}

/// The descriptors open now: /proc/self/fd's entries, or, without /proc, every number below
/// the soft RLIMIT_NOFILE (closed ones are skipped).
fn open_fds() -> nix::Result<Vec<RawFd>> {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor is listed too; marking it is harmless (it is closed
        // when `dir` drops, and it is close-on-exec already).
        let fds = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        return Ok(fds);
    }
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    let limit = RawFd::try_from(soft.min(1 << 20)).unwrap_or(1 << 20);
    Ok((0..limit).collect())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, OwnedFd};

    use nix::fcntl::{fcntl, FcntlArg, FdFlag};

    use super::*;

    /// A descriptor numbered `n` or just above (far above what the test harness's threads
    /// open), without close-on-exec (F_DUPFD leaves it clear).
    fn inheritable_fd_at(n: RawFd) -> OwnedFd {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = fcntl(&file, FcntlArg::F_DUPFD(n)).unwrap();
        assert!((n..n + 4).contains(&fd), "F_DUPFD gave {fd}");
        // SAFETY: F_DUPFD made `fd` a new descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn cloexec(fd: &OwnedFd) -> bool {
        FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap())
            .contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn walk_marks_descriptors_from_first_up() {
        let below = inheritable_fd_at(911);
        let at = inheritable_fd_at(912);
        let above = inheritable_fd_at(920);
        assert!(!cloexec(&at) && !cloexec(&above));
        cloexec_walk(912).unwrap();
        assert!(!cloexec(&below), "a descriptor below `first` was marked");
        assert!(cloexec(&at) && cloexec(&above));
    }

    #[test]
    fn cloexec_from_marks_descriptors() {
        let fd = inheritable_fd_at(940);
        cloexec_from(940).unwrap();
        assert!(cloexec(&fd));
    }
}
