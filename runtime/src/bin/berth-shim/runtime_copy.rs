//! The runtime binary berthd hands over as a sealed memfd on `--runtime-copy
//! /proc/<berthd>/fd/N`: the shim opens it, runs `create` from it (so the runtime finds itself
//! sealed and skips copying its binary), then closes it, so that a long-lived shim does not pin
//! an old copy of the runtime.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use berth_runtime::process::sealed_exe;

/// The opened copy of the runtime binary (close-on-exec); closed when dropped.
pub struct RuntimeCopy(File);

impl RuntimeCopy {
    /// Opens berthd's copy at `path`, which must be a sealed memfd. The descriptor is
    /// close-on-exec: execve of `/proc/self/fd/N` opens the binary before close-on-exec
    /// descriptors are closed, so the runtime still runs from it, but neither the runtime nor
    /// anything it starts holds the descriptor.
    pub fn open(path: &Path) -> Result<RuntimeCopy> {
        let file =
            File::open(path).with_context(|| format!("--runtime-copy {}: open", path.display()))?;
        if !sealed_exe::is_sealed_file(&file) {
            bail!("--runtime-copy {}: not a sealed memfd", path.display());
        }
        Ok(RuntimeCopy(file))
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
    use std::os::fd::AsFd;

    use nix::fcntl::{fcntl, FcntlArg, FdFlag};

    #[test]
    fn only_a_sealed_memfd_is_opened_and_close_on_exec() {
        let exe = File::open("/proc/self/exe").unwrap();
        let sealed = sealed_exe::sealed_copy_of(&exe, "shim-test").unwrap();
        let path = format!("/proc/{}/fd/{}", std::process::id(), sealed.as_raw_fd());
        let copy = RuntimeCopy::open(Path::new(&path)).unwrap();
        let flags = fcntl(copy.0.as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        let cmd = copy.command(Path::new("/usr/local/bin/berth-runtime"));
        assert_eq!(
            cmd.get_program().to_string_lossy(),
            format!("/proc/self/fd/{}", copy.0.as_raw_fd())
        );
        // A plain file is refused, and so is a path that is not there.
        assert!(RuntimeCopy::open(Path::new("/proc/self/exe")).is_err());
        assert!(RuntimeCopy::open(Path::new("/proc/self/fd/987654")).is_err());
    }
}
