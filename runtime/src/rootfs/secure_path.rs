//! Resolving paths inside the container's rootfs so that nothing escapes it: every lookup is
//! an `openat2(RESOLVE_IN_ROOT)` relative to the rootfs, so symlinks and `..` in the image are
//! interpreted as if the rootfs were `/`. Mount targets are then named by the magic link
//! `/proc/self/fd/N` of the resolved O_PATH descriptor, never by a string the image controls.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

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
    /// `create` says. Symlinks met on the way are followed by hand, inside the root (an absolute
    /// target restarts at the root, `..` stops at it), so a dangling link in the image makes the
    /// runtime create its target inside the rootfs, never outside.
    pub fn resolve_or_create(&self, path: &Path, create: Create) -> Result<OwnedFd> {
        const MAX_LINKS: usize = 40;
        let err = |op: &str, p: &Path, e| {
            RuntimeError::sys(
                format!("{op} {} in rootfs {}", p.display(), self.path.display()),
                e,
            )
        };
        let mut todo: VecDeque<OsString> = components(path);
        let mut resolved = PathBuf::new();
        let mut links = 0;
        while let Some(comp) = todo.pop_front() {
            if comp == ".." {
                resolved.pop();
                continue;
            }
            let candidate = resolved.join(&comp);
            let strict = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_IN_ROOT
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS
                        | ResolveFlag::RESOLVE_NO_SYMLINKS,
                );
            match openat2(self.fd.as_fd(), &candidate, strict) {
                Ok(fd) => {
                    let st = nix::sys::stat::fstat(&fd).map_err(|e| err("stat", &candidate, e))?;
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(err("resolve", path, Errno::ELOOP));
                        }
                        let target = nix::fcntl::readlinkat(&fd, "")
                            .map_err(|e| err("readlink", &candidate, e))?;
                        let target = PathBuf::from(target);
                        if target.is_absolute() {
                            resolved = PathBuf::new();
                        }
                        for c in components(&target).into_iter().rev() {
                            todo.push_front(c);
                        }
                    } else {
                        resolved = candidate;
                    }
                }
                Err(Errno::ENOENT) => {
                    let parent = if resolved.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        resolved.clone()
                    };
                    let parent_fd = openat2(
                        self.fd.as_fd(),
                        &parent,
                        how(OFlag::O_PATH | OFlag::O_DIRECTORY),
                    )
                    .map_err(|e| err("resolve", &parent, e))?;
                    let made = if todo.is_empty() && create == Create::File {
                        nix::fcntl::openat(
                            parent_fd.as_fd(),
                            comp.as_os_str(),
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_WRONLY
                                | OFlag::O_CLOEXEC
                                | OFlag::O_NOFOLLOW,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map(drop)
                    } else {
                        nix::sys::stat::mkdirat(
                            parent_fd.as_fd(),
                            comp.as_os_str(),
                            Mode::from_bits_truncate(0o755),
                        )
                    };
                    match made {
                        Ok(()) | Err(Errno::EEXIST) => resolved = candidate,
                        Err(e) => return Err(err("create", &candidate, e)),
                    }
                }
                Err(e) => return Err(err("resolve", &candidate, e)),
            }
        }
        self.resolve(&resolved)
    }
}

/// The normal components of `path` (and `..`), as owned strings.
fn components(path: &Path) -> VecDeque<OsString> {
    relative(path)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect()
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
