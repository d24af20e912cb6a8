//! Resolving paths inside the container's rootfs so that nothing escapes it: every lookup is
//! an `openat2(RESOLVE_IN_ROOT)` relative to the rootfs, so symlinks and `..` in the image are
//! interpreted as if the rootfs were `/`. Mount targets are then named by the magic link
//! `/proc/self/fd/N` of the resolved O_PATH descriptor, never by a string the image controls.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{Result, RuntimeError};

/// What to create when the target does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
}

/// An open handle on a rootfs directory that resolves paths inside it.
#[derive(Debug)]
pub struct RootDir {
    path: PathBuf,
    fd: OwnedFd,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// The components of `path` below the root: `.`, `/` and any prefix dropped.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

impl RootDir {
    pub fn open(path: &Path) -> Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::sys(format!("open rootfs {}", path.display()), e))?;
        Ok(Self {
            path: path.to_owned(),
            fd,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` (absolute or relative, as seen from inside the container) as an O_PATH
    /// descriptor, resolved inside the root.
    pub fn resolve(&self, path: &Path) -> Result<OwnedFd> {
        let rel = relative(path);
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        openat2(
            self.fd.as_fd(),
            &rel,
            how(OFlag::O_PATH | OFlag::O_NOFOLLOW),
        )
        .map_err(|e| {
            RuntimeError::sys(
                format!(
                    "resolve {} in rootfs {}",
                    path.display(),
                    self.path.display()
                ),
                e,
            )
        })
    }

    /// Like [`resolve`](Self::resolve), but follows a final symlink (still inside the root).
    pub fn resolve_follow(&self, path: &Path) -> Result<OwnedFd> {
        let rel = relative(path);
        openat2(self.fd.as_fd(), &rel, how(OFlag::O_PATH)).map_err(|e| {
            RuntimeError::sys(
                format!(
                    "resolve {} in rootfs {}",
                    path.display(),
                    self.path.display()
                ),
                e,
            )
        })
    }

    /// Resolves `path`, creating missing directories on the way and the last component as
    /// `create` says. Every created component is created relative to an already resolved
    /// parent, so a symlink swapped in by the image cannot redirect the creation outside.
    pub fn resolve_or_create(&self, path: &Path, create: Create) -> Result<OwnedFd> {
        match self.resolve_follow(path) {
            Ok(fd) => return Ok(fd),
            Err(RuntimeError::Sys {
                source: Errno::ENOENT,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        let rel = relative(path);
        let comps: Vec<_> = rel.components().collect();
        let mut current = PathBuf::new();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let parent = if current.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                current.clone()
            };
            current.push(comp);
            match self.resolve_follow(&current) {
                Ok(fd) if last => return Ok(fd),
                Ok(_) => continue,
                Err(RuntimeError::Sys {
                    source: Errno::ENOENT,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
            let parent_fd = openat2(
                self.fd.as_fd(),
                &parent,
                how(OFlag::O_PATH | OFlag::O_DIRECTORY),
            )
            .map_err(|e| RuntimeError::sys(format!("resolve {} in rootfs", parent.display()), e))?;
            let name = comp.as_os_str();
            let made = if last && create == Create::File {
                nix::fcntl::openat(
                    parent_fd.as_fd(),
                    name,
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_CLOEXEC
                        | OFlag::O_NOFOLLOW,
                    Mode::from_bits_truncate(0o644),
                )
                .map(drop)
            } else {
                nix::sys::stat::mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(0o755))
            };
            match made {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(RuntimeError::sys(
                        format!(
                            "create {} in rootfs {}",
                            current.display(),
                            self.path.display()
                        ),
                        e,
                    ))
                }
            }
        }
        self.resolve_follow(path)
    }
}

/// The magic-link path naming an open descriptor, for syscalls that take paths (mount).
pub fn proc_fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn real_path(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(proc_fd_path(fd)).unwrap()
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../../../etc", r.join("rel")).unwrap();
        let dir = RootDir::open(&r).unwrap();
        assert_eq!(
            real_path(&dir.resolve_follow(Path::new("/abs")).unwrap()),
            r.join("etc")
        );
        assert_eq!(
            real_path(&dir.resolve_follow(Path::new("rel")).unwrap()),
            r.join("etc")
        );
        assert_eq!(
            real_path(&dir.resolve_follow(Path::new("/../../etc")).unwrap()),
            r.join("etc")
        );
    }

    #[test]
    fn creates_through_symlinks_inside_the_root_only() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        symlink(outside.path(), r.join("escape")).unwrap();
        let dir = RootDir::open(&r).unwrap();
        let fd = dir
            .resolve_or_create(Path::new("/escape/sub/file"), Create::File)
            .unwrap();
        let made = real_path(&fd);
        assert!(made.starts_with(&r), "{made:?} is outside {r:?}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(r
            .join(outside.path().strip_prefix("/").unwrap())
            .join("sub/file")
            .is_file());
    }
}
