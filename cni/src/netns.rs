//! Network namespaces pinned as files: created from a helper thread that unshares
//! CLONE_NEWNET, bind-mounted from `/proc/self/task/<tid>/ns/net` onto `<dir>/<name>`, removed
//! by unmount and unlink. Also: running code inside a namespace from a helper thread.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::NetnsError;

/// Default dir of pinned network namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/run/berth/netns";

/// A directory of pinned network namespaces.
#[derive(Debug, Clone)]
pub struct NetnsDir {
    dir: PathBuf,
}

/// A pinned network namespace: its path is what CNI_NETNS and the OCI spec get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedNetns {
    path: PathBuf,
}

impl PinnedNetns {
    /// The pin file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for NetnsDir {
    fn default() -> Self {
        NetnsDir::new(DEFAULT_NETNS_DIR)
    }
}

impl NetnsDir {
    /// Namespaces pinned under `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetnsDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pin path of `name`.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, NetnsError> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    /// Creates a new network namespace pinned at `<dir>/<name>`. If a namespace is already
    /// pinned there, returns it (a retried sandbox start reuses it); a stale plain file is
    /// replaced.
    pub fn create(&self, name: &str) -> Result<PinnedNetns, NetnsError> {
        let path = self.path_of(name)?;
        if is_pinned(&path) {
            tracing::debug!(netns = %path.display(), "netns already pinned");
            return Ok(PinnedNetns { path });
        }
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| NetnsError::Io { op, path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io("create dir", &self.dir))?;
        match fs::remove_file(&path) {
            Ok(()) => tracing::warn!(netns = %path.display(), "removed stale netns file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove stale file", &path)(e)),
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create pin file", &path))?;
        let pin = path.clone();
        // The thread's netns dies with the thread once pinned; the process's own threads
        // never change namespace.
        let res = std::thread::spawn(move || -> Result<(), NetnsError> {
            let sys = |op| {
                let path = pin.clone();
                move |source| NetnsError::Sys { op, path, source }
            };
            unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare(CLONE_NEWNET)"))?;
            let src = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
            mount(
                Some(src.as_str()),
                &pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys("bind-mount"))
        })
        .join()
        .unwrap_or_else(|_| Err(NetnsError::ThreadPanicked { path: path.clone() }));
        if let Err(e) = res {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        tracing::info!(netns = %path.display(), "netns created");
        Ok(PinnedNetns { path })
    }

    /// Pins the open network namespace `ns` (e.g. one made with a pod's user namespace, which
    /// owns it) at `<dir>/<name>`, as [`NetnsDir::create`] pins the ones it makes.
    pub fn pin(&self, name: &str, ns: &fs::File) -> Result<PinnedNetns, NetnsError> {
        let path = self.path_of(name)?;
        fs::create_dir_all(&self.dir).map_err(|source| NetnsError::Io {
            op: "create dir",
            path: self.dir.clone(),
            source,
        })?;
        pin(ns, &path)?;
        tracing::info!(netns = %path.display(), "netns pinned");
        Ok(PinnedNetns { path })
    }

    /// Unpins and removes `<dir>/<name>`; no error if it is already gone.
    pub fn remove(&self, name: &str) -> Result<(), NetnsError> {
        remove_pinned(&self.path_of(name)?)
    }
}

/// Pins the open namespace file `ns` (any kind: `/proc/<pid>/ns/*` opened) at `path`, a new
/// file bind-mounted from it; the namespace then lives until [`remove_pinned`]. A stale plain
/// file at `path` is replaced; an existing pin is an error.
pub fn pin(ns: &fs::File, path: &Path) -> Result<(), NetnsError> {
    let io = |op| {
        let path = path.to_owned();
        move |source| NetnsError::Io { op, path, source }
    };
    if is_pinned(path) {
        return Err(io("pin")(std::io::ErrorKind::AlreadyExists.into()));
    }
    match fs::remove_file(path) {
        Ok(()) => tracing::warn!(pin = %path.display(), "removed stale namespace file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale file")(e)),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io("create pin file"))?;
    let src = format!("/proc/self/fd/{}", ns.as_raw_fd());
    if let Err(source) = mount(
        Some(src.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = fs::remove_file(path);
        return Err(NetnsError::Sys {
            op: "bind-mount",
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Unmounts and unlinks a pinned namespace file; no error if it is already gone.
pub fn remove_pinned(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (already unmounted); ENOENT: gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                op: "unmount",
                path: path.to_owned(),
                source,
            })
        }
    }
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(netns = %path.display(), "netns removed");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            op: "remove pin file",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether `path` is a namespace file (a pinned namespace or a `/proc/.../ns/*` link).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Runs `f` on a helper thread that has joined the network namespace at `path`, and returns
/// its value. The calling thread never changes namespace.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = fs::File::open(path).map_err(|source| NetnsError::Io {
        op: "open",
        path: path.to_owned(),
        source,
    })?;
    let owned = path.to_owned();
    std::thread::spawn(move || {
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Sys {
            op: "setns",
            path: owned,
            source,
        })?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError::ThreadPanicked {
            path: path.to_owned(),
        })
    })
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name == "." || name == ".." {
        "must not be . or .."
    } else if name.contains('/') || name.contains('\0') {
        "must not contain '/'"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(NetnsError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let d = NetnsDir::new("/nonexistent");
        assert!(d.path_of("a/b").is_err());
        assert!(d.path_of("..").is_err());
        assert_eq!(d.path_of("pod1").unwrap(), Path::new("/nonexistent/pod1"));
    }

    /// Root only: a namespace pinned from an open fd outlives the fd and unpins cleanly.
    #[test]
    fn pin_from_fd_and_remove() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP pin_from_fd_and_remove: needs root (mounts)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pins = NetnsDir::new(dir.path().join("netns"));
        let ns = fs::File::open("/proc/self/ns/user").unwrap();
        let user = dir.path().join("userns");
        pin(&ns, &user).unwrap();
        drop(ns);
        let result = std::panic::catch_unwind(|| {
            assert!(is_pinned(&user));
            assert!(pin(&fs::File::open("/proc/self/ns/user").unwrap(), &user).is_err());
            let net = pins
                .pin("p1", &fs::File::open("/proc/self/ns/net").unwrap())
                .unwrap();
            assert!(is_pinned(net.path()));
            pins.remove("p1").unwrap();
            assert!(!net.path().exists());
        });
        let _ = pins.remove("p1");
        remove_pinned(&user).unwrap();
        assert!(!user.exists());
        result.unwrap();
    }

    #[test]
    fn proc_ns_is_a_namespace_file() {
        assert!(is_pinned(Path::new("/proc/self/ns/net")));
        assert!(!is_pinned(Path::new("/proc/self/status")));
    }
}
