//! CVE-2019-5736: a container must never be able to open the runtime's binary for writing
//! through `/proc/PID/exe` of a runtime process that joined it. Before `create`, `run` and
//! `exec` fork anything that enters a container, the runtime re-executes itself from a sealed
//! memfd copy of its own binary, so `/proc/self/exe` of every such process is that sealed,
//! unwritable copy and not the file on the host.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::fexecve;

use crate::error::{Result, RuntimeError};

const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SEAL
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);

/// True when the running binary is a memfd carrying every seal that makes it immutable.
pub fn is_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    match fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS) {
        Ok(bits) => SealFlag::from_bits_truncate(bits).contains(REQUIRED_SEALS),
        Err(_) => false,
    }
}

/// Re-executes the process from a sealed copy of its binary unless it already runs from one.
/// Returns only when already sealed; on success of the re-exec it never returns.
pub fn ensure_sealed() -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let memfd = sealed_copy()?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()).expect("argv has no NUL"))
        .collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).expect("environment has no NUL")
        })
        .collect();
    let err = fexecve(memfd.as_fd(), &args, &env).unwrap_err();
    Err(RuntimeError::sys(
        "re-exec from the sealed binary copy",
        err,
    ))
}

/// Copies /proc/self/exe into a new memfd and seals it against any change.
fn sealed_copy() -> Result<File> {
    let fd = memfd_create(
        "berth-runtime",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| RuntimeError::sys("memfd_create for the sealed binary copy", e))?;
    let mut memfd = File::from(fd);
    let mut exe =
        File::open("/proc/self/exe").map_err(|e| RuntimeError::io("open", "/proc/self/exe", e))?;
    let len = exe
        .metadata()
        .map_err(|e| RuntimeError::io("stat", "/proc/self/exe", e))?
        .len();
    copy_all(&mut exe, &mut memfd, len)
        .map_err(|e| RuntimeError::io("copy the runtime binary into", "memfd:berth-runtime", e))?;
    fcntl(memfd.as_fd(), FcntlArg::F_ADD_SEALS(REQUIRED_SEALS))
        .map_err(|e| RuntimeError::sys("seal the binary copy", e))?;
    debug_assert!(memfd.as_raw_fd() >= 0);
    Ok(memfd)
}

/// sendfile the whole file (fast, in-kernel), falling back to a userspace copy.
fn copy_all(src: &mut File, dst: &mut File, len: u64) -> io::Result<()> {
    let mut done: u64 = 0;
    while done < len {
        match nix::sys::sendfile::sendfile64(dst.as_fd(), src.as_fd(), None, (len - done) as usize)
        {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) if done == 0 => {
                io::copy(src, dst)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binary_is_not_sealed_but_a_copy_is() {
        assert!(!is_sealed());
        let copy = sealed_copy().unwrap();
        let seals = fcntl(copy.as_fd(), FcntlArg::F_GET_SEALS).unwrap();
        assert!(SealFlag::from_bits_truncate(seals).contains(REQUIRED_SEALS));
        // Writing to a sealed copy fails.
        use std::io::Write;
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        assert!(f.write_all(b"x").is_err());
        let exe_len = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(copy.metadata().unwrap().len(), exe_len);
    }
}
