//! The runtime binary berthd hands over as a sealed memfd on `--runtime-fd N`: the shim runs
//! `create` from it (so the runtime finds itself sealed and skips copying its binary), then
//! closes it, so that a long-lived shim does not pin an old copy of the runtime.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use berth_runtime::process::sealed_exe;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// The inherited copy of the runtime binary; closed when dropped.
pub struct RuntimeCopy(File);

impl RuntimeCopy {
    /// Takes ownership of descriptor `fd`, which must be a sealed memfd, and makes it
    /// close-on-exec: execve of `/proc/self/fd/N` opens the binary before close-on-exec
    /// descriptors are closed, so the runtime still runs from it, but neither the runtime nor
    /// anything it starts holds the descriptor.
    pub fn adopt(fd: RawFd) -> Result<RuntimeCopy> {
        if fd < 3 {
            bail!("--runtime-fd {fd}: not a descriptor berthd passes");
        }
        std::fs::symlink_metadata(format!("/proc/self/fd/{fd}"))
            .with_context(|| format!("--runtime-fd {fd}: not an open descriptor"))?;
        // SAFETY: `fd` is open (checked above) and inherited from berthd for this shim alone;
        // it is taken once, at startup, before anything else in the shim could own it.
        let file = RuntimeCopy(unsafe { File::from_raw_fd(fd) });
        if !sealed_exe::is_sealed_file(&file.0) {
            bail!("--runtime-fd {fd}: not a sealed memfd");
        }
        fcntl(file.0.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .with_context(|| format!("--runtime-fd {fd}: set close-on-exec"))?;
        Ok(file)
    }

    /// A command running the copy, with `name` (the runtime's path) as its argv[0].
    pub fn command(&self, name: &Path) -> Command {
        let mut cmd = Command::new(format!("/proc/self/fd/{}", self.0.as_raw_fd()));
        cmd.arg0(name);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn only_a_sealed_memfd_is_adopted_and_it_becomes_close_on_exec() {
        assert!(RuntimeCopy::adopt(1).is_err());
        let exe = File::open("/proc/self/exe").unwrap();
        let sealed = sealed_exe::sealed_copy_of(&exe, "shim-test").unwrap();
        fcntl(sealed.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        let copy = RuntimeCopy::adopt(sealed.into_raw_fd()).unwrap();
        let flags = fcntl(copy.0.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        let cmd = copy.command(Path::new("/usr/local/bin/berth-runtime"));
        assert_eq!(
            cmd.get_program().to_string_lossy(),
            format!("/proc/self/fd/{}", copy.0.as_raw_fd())
        );
        // A plain file is refused (and closed).
        let plain = File::open("/proc/self/exe").unwrap();
        assert!(RuntimeCopy::adopt(plain.into_raw_fd()).is_err());
    }
}
