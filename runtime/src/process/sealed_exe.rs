//! CVE-2019-5736: a container must never be able to open the runtime's binary for writing
//! through `/proc/PID/exe` of a runtime process that joined it. Before `create`, `run` and
//! `exec` fork anything that enters a container, the runtime re-executes itself from a sealed
//! memfd copy of its own binary, so `/proc/self/exe` of every such process is that sealed,
//! unwritable copy and not the file on the host. berthd usually spares it that copy: it hands
//! the shim a sealed copy it keeps per runtime binary (cri-server's `sealed_runtime`), which
//! the shim executes, so [`is_sealed`] is already true here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::fexecve;

use crate::error::{Result, RuntimeError};

/// The seals that make a memfd immutable: exactly the set runc 1.1's `cloned_binary.c` compares
/// `F_GET_SEALS` of `/proc/self/exe` against, so a copy made by berth also satisfies runc.
pub const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SEAL
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);

/// True when the running binary is a memfd carrying every seal that makes it immutable.
pub fn is_sealed() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    is_sealed_file(&exe)
}

/// True when `file` is a memfd carrying every seal of [`REQUIRED_SEALS`].
pub fn is_sealed_file(file: &File) -> bool {
    match fcntl(file.as_fd(), FcntlArg::F_GET_SEALS) {
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
    let exe =
        File::open("/proc/self/exe").map_err(|e| RuntimeError::io("open", "/proc/self/exe", e))?;
    let memfd = sealed_exec_image_of(&exe, "berth-runtime")?;
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

/// Copies the whole of `binary` (an open file; its file offset is not used) into a new
/// close-on-exec memfd called `name` and seals it against any change ([`REQUIRED_SEALS`]).
/// berth-runtime seals itself with it; berthd keeps one such copy per runtime handler binary.
pub fn sealed_copy_of(binary: &File, name: &str) -> Result<File> {
    let memfd_name = format!("memfd:{name}");
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| RuntimeError::sys("memfd_create for the sealed binary copy", e))?;
    let memfd = File::from(fd);
    let len = binary
        .metadata()
        .map_err(|e| RuntimeError::io("stat", &memfd_name, e))?
        .len();
    copy_all(binary, &memfd, len)
        .map_err(|e| RuntimeError::io("copy the binary into", &memfd_name, e))?;
    fcntl(memfd.as_fd(), FcntlArg::F_ADD_SEALS(REQUIRED_SEALS))
        .map_err(|e| RuntimeError::sys("seal the binary copy", e))?;
    debug_assert!(memfd.as_raw_fd() >= 0);
    Ok(memfd)
}

/// Like [`sealed_copy_of`], for an ELF binary berth-runtime executes from: only the part the
/// kernel and the dynamic loader read (headers and segments, up to the end of the last one) is
/// copied, and the section header table, left behind, is dropped from the header; other
/// files are copied whole. The sections past the segments (symbols, debug info: four fifths
/// of a debug build) are needed for no exec. Every `create` makes this copy, and its last
/// holder, the container's init, frees it in the kernel when it execs the user process,
/// before the first instruction of that process: 68 MB of a debug build delayed a shell's
/// first command by 10-70 ms (runtime-tools' killsig signalled before its trap was set).
pub fn sealed_exec_image_of(binary: &File, name: &str) -> Result<File> {
    let memfd_name = format!("memfd:{name}");
    let len = binary
        .metadata()
        .map_err(|e| RuntimeError::io("stat", &memfd_name, e))?
        .len();
    let Some(image) = elf_image_len(binary, len) else {
        return sealed_copy_of(binary, name);
    };
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| RuntimeError::sys("memfd_create for the sealed binary copy", e))?;
    let memfd = File::from(fd);
    copy_all(binary, &memfd, image.len)
        .map_err(|e| RuntimeError::io("copy the binary into", &memfd_name, e))?;
    if image.drops_section_headers {
        use std::os::unix::fs::FileExt;
        // e_shoff (8 bytes at 0x28), e_shnum and e_shstrndx (2 bytes each at 0x3c, 0x3e): no
        // section header table.
        memfd
            .write_all_at(&[0; 8], 0x28)
            .and_then(|()| memfd.write_all_at(&[0; 4], 0x3c))
            .map_err(|e| RuntimeError::io("edit the ELF header of", &memfd_name, e))?;
    }
    fcntl(memfd.as_fd(), FcntlArg::F_ADD_SEALS(REQUIRED_SEALS))
        .map_err(|e| RuntimeError::sys("seal the binary copy", e))?;
    Ok(memfd)
}

/// How much of an ELF file an exec needs.
#[derive(Debug, PartialEq, Eq)]
struct ExecImage {
    len: u64,
    /// The section header table lies past `len`.
    drops_section_headers: bool,
}

/// For a 64-bit little-endian ELF file of `file_len` bytes: the length up to the end of its
/// headers and of the last byte any program header covers. None for anything else, or when
/// the headers do not make sense (then the file is copied whole).
fn elf_image_len(file: &File, file_len: u64) -> Option<ExecImage> {
    use std::os::unix::fs::FileExt;
    let mut eh = [0u8; 64];
    file.read_exact_at(&mut eh, 0).ok()?;
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let (phoff, shoff) = (u64_at(&eh, 0x20), u64_at(&eh, 0x28));
    let (phentsize, phnum) = (u64::from(u16_at(&eh, 0x36)), u16_at(&eh, 0x38));
    if phentsize < 56 || phnum == 0 {
        return None;
    }
    let mut end = phoff.checked_add(phentsize * u64::from(phnum))?.max(64);
    let mut ph = vec![0u8; 56];
    for i in 0..u64::from(phnum) {
        file.read_exact_at(&mut ph, phoff + i * phentsize).ok()?;
        let (offset, filesz) = (u64_at(&ph, 8), u64_at(&ph, 32));
        end = end.max(offset.checked_add(filesz)?);
    }
    if end > file_len {
        return None;
    }
    Some(ExecImage {
        len: end,
        drops_section_headers: shoff >= end,
    })
}

/// Copies `len` bytes from offset 0 of `src` to `dst`: sendfile (fast, in-kernel), falling back
/// to a userspace copy. Fails if `src` is shorter than `len` (it shrank while being copied).
fn copy_all(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let mut offset: i64 = 0;
    let total = i64::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    while offset < total {
        let left = usize::try_from(total - offset).unwrap_or(usize::MAX);
        match nix::sys::sendfile::sendfile64(dst.as_fd(), src.as_fd(), Some(&mut offset), left) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) if offset == 0 => return copy_by_reads(src, dst, len),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_by_reads(src: &File, mut dst: &File, len: u64) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    while offset < len {
        let want = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = src.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        dst.write_all(&buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exec image of this (unstripped, debug) test binary leaves its symbols and debug info
    /// behind, and still runs: the copy lists the tests as the binary itself does.
    #[test]
    fn exec_image_copy_is_smaller_and_runs() {
        let exe = File::open("/proc/self/exe").unwrap();
        let full = exe.metadata().unwrap().len();
        let image = elf_image_len(&exe, full).expect("the test binary is ELF64 LE");
        assert!(image.len < full, "{image:?} of {full}");
        let copy = sealed_exec_image_of(&exe, "berth-runtime-test-image").unwrap();
        assert!(is_sealed_file(&copy));
        assert_eq!(copy.metadata().unwrap().len(), image.len);
        let list = |path: &str| {
            std::process::Command::new(path)
                .args(["--list", "exec_image_copy_is_smaller_and_runs"])
                .output()
                .unwrap()
        };
        let from_copy = list(&format!("/proc/self/fd/{}", copy.as_raw_fd()));
        assert!(from_copy.status.success(), "{from_copy:?}");
        assert_eq!(from_copy.stdout, list("/proc/self/exe").stdout);
    }

    #[test]
    fn non_elf_files_are_not_images() {
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), "#!/bin/sh\necho hi\n").unwrap();
        let f = File::open(script.path()).unwrap();
        assert_eq!(elf_image_len(&f, 19), None);
    }

    #[test]
    fn test_binary_is_not_sealed_but_a_copy_is() {
        assert!(!is_sealed());
        let exe = File::open("/proc/self/exe").unwrap();
        assert!(!is_sealed_file(&exe));
        let copy = sealed_copy_of(&exe, "berth-runtime-test").unwrap();
        assert!(is_sealed_file(&copy));
        let seals = fcntl(copy.as_fd(), FcntlArg::F_GET_SEALS).unwrap();
        assert!(SealFlag::from_bits_truncate(seals).contains(REQUIRED_SEALS));
        // Writing to a sealed copy fails.
        use std::io::Write;
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        assert!(f.write_all(b"x").is_err());
        let exe_len = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(copy.metadata().unwrap().len(), exe_len);
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", copy.as_raw_fd())).unwrap(),
            std::fs::read("/proc/self/exe").unwrap()
        );
    }
}
