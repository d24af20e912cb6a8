//! berthd's sealed copies of the runtime handlers' binaries (CVE-2019-5736).
//!
//! A runtime process that enters a container must not run from the file on the host, or the
//! container could open that file for writing through `/proc/PID/exe`. berth-runtime and runc
//! protect themselves by re-executing from a sealed memfd copy of their binary on every
//! `create`/`exec` — a copy of several MB and an extra execve on the pod-start path. berthd
//! instead keeps ONE sealed copy per handler binary and runs the runtime from it (through the
//! shim for `create`, directly for `exec`); the runtime then finds `/proc/self/exe` sealed and
//! skips its own copy (runc 1.1 checks exactly our seals, see `sealed_exe::REQUIRED_SEALS`).
//!
//! Every handler whose binary is an ELF file gets a copy: berth-runtime and runc skip their own
//! copy, and any other runtime (crun, …) merely runs from an immutable file. A script (a
//! wrapper around a runtime) gets none: it could not run from a close-on-exec memfd (its
//! interpreter opens `/proc/self/fd/N` after exec), and its `/proc/self/exe` is its
//! interpreter anyway.
//!
//! A copy is made on first use and checked at each use against a `stat` of the binary (device,
//! inode, size, mtime and ctime): an upgraded binary gets a new copy. If a copy cannot be made,
//! the runtime runs from its path as before (and seals itself).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use berth_runtime::process::sealed_exe;
use berth_runtime::RuntimeError;

use crate::file_version::{FileVersion, PerVersion};

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("stat the runtime binary {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read the runtime binary {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("seal a copy of the runtime binary {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: RuntimeError,
    },
    #[error("the runtime binary {path} changed while it was being copied")]
    Changed { path: PathBuf },
}

/// A sealed, close-on-exec memfd copy of one runtime binary, open as long as this lives: hold
/// it (the `Arc`) until the command that runs it has been spawned.
#[derive(Debug)]
pub struct SealedRuntime {
    binary: PathBuf,
    memfd: File,
    key: FileVersion,
}

impl SealedRuntime {
    /// The binary on disk this is a copy of.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The copy's descriptor in berthd (close-on-exec).
    pub fn fd(&self) -> RawFd {
        self.memfd.as_raw_fd()
    }

    /// The path that executes the copy: `/proc/self/fd/N`. execve opens it before it closes the
    /// close-on-exec descriptors, so a direct child of berthd can run it as it is.
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd()))
    }

    /// A command running the copy, with the binary's path as its argv[0] (for `ps` and the
    /// runtime's own messages). Spawn it while `self` lives.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.exec_path());
        cmd.arg0(&self.binary);
        cmd
    }

    /// The copy as another process (the shim) can open it: `/proc/<berthd>/fd/N`. Nothing is
    /// inherited, so berthd spawns that process as any other (no code between fork and exec,
    /// no window in which a child holds berthd's descriptors); it must open the path while
    /// `self` lives (else the number may name another file by then).
    pub fn path_for_others(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.fd()))
    }
}

/// The sealed copies by binary path (None: not an ELF file, in that version: no copy).
#[derive(Default)]
pub struct SealedRuntimes {
    slots: PerVersion<Option<Arc<SealedRuntime>>>,
}

impl SealedRuntimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sealed copy of `binary` as it is on disk now (made now if there is none yet or the
    /// file changed), or None when it is not an ELF file.
    pub fn get(&self, binary: &Path) -> Result<Option<Arc<SealedRuntime>>, SealError> {
        let meta = std::fs::metadata(binary).map_err(|source| SealError::Stat {
            path: binary.to_owned(),
            source,
        })?;
        let now = FileVersion::of(&meta);
        let previous = match self.slots.get(binary, now) {
            Ok(copy) => return Ok(copy),
            Err(previous) => previous.is_some(),
        };
        // Copied without the lock: two callers racing on a new binary make two copies, and
        // the second one stays.
        let started = Instant::now();
        let (version, answer) = match seal(binary)? {
            Some(copy) => {
                tracing::info!(
                    runtime = %binary.display(),
                    bytes = copy.key.size(),
                    fd = copy.fd(),
                    replaced = previous,
                    micros = started.elapsed().as_micros() as u64,
                    "sealed a copy of the runtime binary"
                );
                (copy.key, Some(Arc::new(copy)))
            }
            None => {
                tracing::debug!(runtime = %binary.display(), "not an ELF binary: no sealed copy");
                (now, None)
            }
        };
        self.slots.put(binary, version, answer.clone());
        Ok(answer)
    }
}

/// Copies and seals `binary`, unless it is not an ELF file.
fn seal(binary: &Path) -> Result<Option<SealedRuntime>, SealError> {
    let read_err = |source| SealError::Read {
        path: binary.to_owned(),
        source,
    };
    let file = File::open(binary).map_err(read_err)?;
    let key = FileVersion::of(&file.metadata().map_err(read_err)?);
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) if &magic == ELF_MAGIC => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(read_err(e)),
    }
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".into());
    let memfd = sealed_exe::sealed_copy_of(&file, &format!("berthd:{name}")).map_err(|source| {
        SealError::Copy {
            path: binary.to_owned(),
            source,
        }
    })?;
    // A binary rewritten in place while it was copied (not how upgrades should be done, but
    // possible) may have given a torn copy: refuse it rather than run it.
    if FileVersion::of(&file.metadata().map_err(read_err)?) != key {
        return Err(SealError::Changed {
            path: binary.to_owned(),
        });
    }
    Ok(Some(SealedRuntime {
        binary: binary.to_owned(),
        memfd,
        key,
    }))
}

/// berthd's copies, one set per process.
static SHARED: LazyLock<SealedRuntimes> = LazyLock::new(SealedRuntimes::new);

/// berthd's sealed copy of the runtime binary `binary`, or None (not an ELF file, or the copy
/// failed: then a warning is logged and the runtime seals itself, as without berthd's copy).
pub fn sealed_copy(binary: &Path) -> Option<Arc<SealedRuntime>> {
    match SHARED.get(binary) {
        Ok(copy) => copy,
        Err(e) => {
            tracing::warn!(
                runtime = %binary.display(),
                error = %e,
                "no sealed copy of the runtime binary: the runtime seals itself"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(path: &Path, data: &[u8]) {
        // A new inode each time, as an upgrade (rename over) does.
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn contents(copy: &SealedRuntime) -> Vec<u8> {
        std::fs::read(copy.exec_path()).unwrap()
    }

    #[test]
    fn a_copy_is_kept_and_remade_when_the_binary_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("runc");
        write(&bin, b"\x7fELF version one");
        let cache = SealedRuntimes::new();
        let first = cache.get(&bin).unwrap().expect("an ELF file is sealed");
        assert_eq!(contents(&first), b"\x7fELF version one");
        assert_eq!(first.binary(), bin);
        let again = cache.get(&bin).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same copy while unchanged");

        write(&bin, b"\x7fELF version two, longer");
        let second = cache.get(&bin).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(contents(&second), b"\x7fELF version two, longer");
        // The old copy stays usable for whoever still holds it.
        assert_eq!(contents(&first), b"\x7fELF version one");

        // Rewritten in place, same size: mtime/ctime tell.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&bin)
            .unwrap()
            .write_all(b"\x7fELF version 2")
            .unwrap();
        let third = cache.get(&bin).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(contents(&third), b"\x7fELF version 2wo, longer");
    }

    #[test]
    fn a_non_elf_binary_is_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("wrapper");
        write(&script, b"#!/bin/sh\nexec runc \"$@\"\n");
        let cache = SealedRuntimes::new();
        assert!(cache.get(&script).unwrap().is_none());
        assert!(cache.get(&script).unwrap().is_none());
        let tiny = dir.path().join("tiny");
        write(&tiny, b"\x7fE");
        assert!(cache.get(&tiny).unwrap().is_none());
        // Became an ELF file: sealed now.
        write(&script, b"\x7fELF now");
        assert!(cache.get(&script).unwrap().is_some());
        assert!(matches!(
            cache.get(&dir.path().join("missing")),
            Err(SealError::Stat { .. })
        ));
    }

    #[test]
    fn the_copy_carries_exactly_runcs_seals_and_is_close_on_exec() {
        let cache = SealedRuntimes::new();
        let exe = std::env::current_exe().unwrap();
        let copy = cache.get(&exe).unwrap().expect("the test binary is ELF");
        let seals = nix::fcntl::fcntl(&copy.memfd, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(
            nix::fcntl::SealFlag::from_bits_truncate(seals),
            sealed_exe::REQUIRED_SEALS
        );
        let flags = nix::fcntl::fcntl(&copy.memfd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.exec_path())
            .and_then(|mut f| f.write_all(b"x"));
        assert!(written.is_err(), "a sealed copy cannot be written");
        let link = std::fs::read_link(copy.exec_path()).unwrap();
        assert!(
            link.to_string_lossy().starts_with("/memfd:berthd:"),
            "{link:?}"
        );
    }

    #[test]
    fn a_child_runs_the_copy_and_another_process_can_open_it() {
        let cache = SealedRuntimes::new();
        let sh = Path::new("/bin/busybox");
        if !sh.exists() {
            eprintln!("SKIP: /bin/busybox is not installed");
            return;
        }
        let copy = cache.get(sh).unwrap().expect("busybox is ELF");
        let fd = copy.fd();
        let probe = format!("test -e /proc/self/fd/{fd} && echo inherited || echo closed");
        // Run from the copy (argv[0] is the path: busybox picks its applet by it).
        let out = copy.command().args(["sh", "-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
        // Another process opens it through berthd's /proc entry, sealed as it is.
        let other = std::fs::File::open(copy.path_for_others()).unwrap();
        let seals = nix::fcntl::fcntl(&other, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(
            nix::fcntl::SealFlag::from_bits_truncate(seals),
            sealed_exe::REQUIRED_SEALS
        );
        // The descriptor stayed close-on-exec in this process.
        let flags = nix::fcntl::fcntl(&copy.memfd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
    }
}
