//! The built-in pause image: a directory `<root>/pause/rootfs` holding the static
//! `berth-pause` binary (copied from next to berthd, so it is available offline and pinned to
//! this berthd's build) and the mount points the pause container's spec needs. Every sandbox
//! uses it read-only.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::file_version::FileVersion;

/// The binary's name next to berthd.
pub const PAUSE_BINARY: &str = "berth-pause";
/// How the built-in pause image is named (statuses, metrics).
pub const BUILTIN_IMAGE: &str = "built-in berth-pause";
/// Where it lives in the rootfs (the pause container's command).
pub const PAUSE_IN_ROOTFS: &str = "pause";

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("{PAUSE_BINARY} not found in {dirs:?} (it is installed next to berthd)")]
    NotFound { dirs: Vec<PathBuf> },
    #[error("built-in pause rootfs: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The pause rootfs and the command that runs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRootfs {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PauseError {
    let path = path.to_owned();
    move |source| PauseError::Io { op, path, source }
}

/// The first `berth-pause` in `dirs`.
pub fn find_binary(dirs: &[PathBuf]) -> Result<PathBuf, PauseError> {
    dirs.iter()
        .map(|d| d.join(PAUSE_BINARY))
        .find(|p| p.is_file())
        .ok_or_else(|| PauseError::NotFound {
            dirs: dirs.to_vec(),
        })
}

/// Makes (or refreshes) `<root>/pause/rootfs` from the `berth-pause` found in `dirs`. The
/// binary is replaced atomically when it differs from the installed one, so sandboxes
/// starting meanwhile see the old or the new one, whole. Blocking.
pub fn ensure(root: &Path, dirs: &[PathBuf]) -> Result<PauseRootfs, PauseError> {
    let source = find_binary(dirs)?;
    let rootfs = root.join("pause").join("rootfs");
    for dir in ["dev", "proc", "sys", "etc", "tmp"] {
        let path = rootfs.join(dir);
        fs::create_dir_all(&path).map_err(io_err("create", &path))?;
    }
    for file in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        let path = rootfs.join(file);
        if !path.exists() {
            fs::write(&path, b"").map_err(io_err("create", &path))?;
        }
    }
    let target = rootfs.join(PAUSE_IN_ROOTFS);
    // One installer at a time, the others then find it installed: a binary written while
    // another thread forks stays open for writing in that child until it execs, and a pause
    // exec'd from it meanwhile fails with ETXTBSY (seen as pauses exiting 127 when 50 pods
    // started at once and each installed its own copy). berthd installs it once at start.
    // Held with the lock: the versions of the source and the installed binary last found
    // equal, so that while neither changed a RunPodSandbox does not read both (about 1 MB
    // each) and compare them again.
    static INSTALLED: Mutex<Option<(FileVersion, FileVersion)>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let versions = || {
        Some((
            FileVersion::stat(&source).ok()?,
            FileVersion::stat(&target).ok()?,
        ))
    };
    if installed.is_some() && *installed == versions() {
        return Ok(pause_rootfs(rootfs));
    }
    let wanted = fs::read(&source).map_err(io_err("read", &source))?;
    if fs::read(&target).ok().as_deref() != Some(&wanted[..]) {
        // One temporary name per call (berthds sharing a root, tests running several in one
        // process): each renames its own whole copy into place.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = rootfs.join(format!(".{PAUSE_IN_ROOTFS}.tmp-{}-{n}", std::process::id()));
        let write = || -> io::Result<()> {
            fs::write(&tmp, &wanted)?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &target)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("install", &target)(e));
        }
        tracing::info!(from = %source.display(), rootfs = %rootfs.display(), "built-in pause image installed");
    }
    *installed = versions();
    Ok(pause_rootfs(rootfs))
}

fn pause_rootfs(rootfs: PathBuf) -> PauseRootfs {
    PauseRootfs {
        rootfs,
        args: vec![format!("/{PAUSE_IN_ROOTFS}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_refreshes_the_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        let err = ensure(&tmp.path().join("root"), std::slice::from_ref(&bin)).unwrap_err();
        assert!(err.to_string().contains(PAUSE_BINARY), "{err}");
        fs::write(bin.join(PAUSE_BINARY), b"v1").unwrap();
        let p = ensure(&tmp.path().join("root"), std::slice::from_ref(&bin)).unwrap();
        assert_eq!(p.args, ["/pause"]);
        assert_eq!(fs::read(p.rootfs.join("pause")).unwrap(), b"v1");
        assert!(p.rootfs.join("proc").is_dir() && p.rootfs.join("etc/hosts").is_file());
        let mode = fs::metadata(p.rootfs.join("pause"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        fs::write(bin.join(PAUSE_BINARY), b"v2").unwrap();
        let p = ensure(&tmp.path().join("root"), &[bin]).unwrap();
        assert_eq!(fs::read(p.rootfs.join("pause")).unwrap(), b"v2");
    }

    /// Sandboxes started at once install the binary together: every call succeeds (a shared
    /// temporary name once made all but one fail with ENOENT) and no temporary is left.
    #[test]
    fn concurrent_installs_all_succeed() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join(PAUSE_BINARY), vec![7u8; 1 << 20]).unwrap();
        let root = tmp.path().join("root");
        std::thread::scope(|s| {
            let calls: Vec<_> = (0..16)
                .map(|_| s.spawn(|| ensure(&root, std::slice::from_ref(&bin))))
                .collect();
            for call in calls {
                call.join().unwrap().unwrap();
            }
        });
        let rootfs = root.join("pause/rootfs");
        assert_eq!(fs::read(rootfs.join("pause")).unwrap(), vec![7u8; 1 << 20]);
        let left: Vec<_> = fs::read_dir(&rootfs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
