//! File operations confined to one directory tree.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to a
//! directory fd of the root, so `..`, absolute symlinks and relative symlinks that climb are all
//! resolved as if the root were `/`: nothing outside it can be reached. The final component of
//! an entry is always acted on with `*at` calls on its parent's fd and without following
//! symlinks.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmodat, fstatat, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// What kind of object sits at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Missing,
    Dir,
    Other,
}

/// A directory tree that all operations stay inside.
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// The last parent directory opened, reused by consecutive entries in one directory.
    cache: Option<(PathBuf, OwnedFd)>,
}

fn resolve_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

impl Root {
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_owned(),
            cache: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets cached directory fds (after anything was removed or replaced).
    pub(crate) fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Opens directory `rel` inside the root, creating missing components with mode 0755.
    pub(crate) fn dir(&mut self, rel: &Path) -> io::Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cache, Some((p, _)) if p == rel);
        if !hit {
            let fd = self.open_dir_creating(rel)?;
            self.cache = Some((rel.to_owned(), fd));
        }
        Ok(self.cache.as_ref().expect("cache just filled").1.as_fd())
    }

    fn open_dir_creating(&self, rel: &Path) -> io::Result<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        if rel.as_os_str().is_empty() {
            return Ok(openat2(&self.fd, ".", resolve_how(flags))?);
        }
        match openat2(&self.fd, rel, resolve_how(flags)) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        // Walk down, creating each missing component.
        let mut cur = openat2(&self.fd, ".", resolve_how(flags))?;
        let mut so_far = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(io::Error::from(io::ErrorKind::InvalidInput));
            };
            so_far.push(name);
            match mkdirat(&cur, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            cur = openat2(&self.fd, &so_far, resolve_how(flags))?;
        }
        Ok(cur)
    }

    /// Opens the directory at `rel` for reading (a real fd, usable for `fsetxattr`).
    pub(crate) fn open_dir_read(&self, rel: &Path) -> io::Result<File> {
        let p: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let fd = openat2(
            &self.fd,
            p,
            resolve_how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
        )?;
        Ok(File::from(fd))
    }

    /// Opens an existing directory inside the root (symlinks resolved inside it).
    pub(crate) fn open_dir_existing(&self, rel: &Path) -> io::Result<OwnedFd> {
        let p: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(openat2(
            &self.fd,
            p,
            resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )?)
    }
}

/// The kind of `name` in `dir`, without following symlinks.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Kind> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR => Ok(Kind::Dir),
        Ok(_) => Ok(Kind::Other),
        Err(Errno::ENOENT) => Ok(Kind::Missing),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir` (recursively for directories); absent is fine.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    remove_all_bounded(dir, name, 0)
}

const MAX_DEPTH: usize = 4096;

fn remove_all_bounded(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("directory tree too deep to remove"));
    }
    match kind_at(dir, name)? {
        Kind::Missing => Ok(()),
        Kind::Other => Ok(unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?),
        Kind::Dir => {
            let sub = openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let names: Vec<OsString> = {
                let mut d = nix::dir::Dir::from_fd(sub.try_clone()?)?;
                d.iter()
                    .filter_map(|e| e.ok())
                    .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
                    .filter(|n| n != "." && n != "..")
                    .collect()
            };
            for n in &names {
                remove_all_bounded(sub.as_fd(), n, depth + 1)?;
            }
            Ok(unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
        }
    }
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    match mkdirat(dir, name, Mode::from_bits_truncate(mode)) {
        Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    Ok(File::from(fd))
}

pub(crate) fn symlink_at(dir: BorrowedFd<'_>, name: &OsStr, target: &Path) -> io::Result<()> {
    Ok(symlinkat(target, dir, name)?)
}

pub(crate) fn hardlink_at(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    Ok(linkat(src_dir, src_name, dir, name, AtFlags::empty())?)
}

/// Device nodes and fifos. `kind` is one of `S_IFCHR`, `S_IFBLK`, `S_IFIFO`.
pub(crate) fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: SFlag,
    mode: u32,
    major: u64,
    minor: u64,
) -> io::Result<()> {
    let dev = libc::makedev(major as u32, minor as u32);
    Ok(mknodat(
        dir,
        name,
        kind,
        Mode::from_bits_truncate(mode),
        dev,
    )?)
}

pub(crate) fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(fchownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// Sets permission bits (incl. setuid/setgid/sticky) of `name`, which the caller made (or
/// checked to be a directory) itself: never a symlink, so following it is safe, and saves the
/// `O_PATH` open that a no-follow `fchmodat` costs.
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode & 0o7777),
        FchmodatFlags::FollowSymlink,
    )?)
}

/// Starts asynchronous writeback of `f`'s dirty pages (`sync_file_range(SYNC_FILE_RANGE_WRITE)`:
/// no waiting, no metadata). Only a hint: errors are ignored, the snapshot's sync is what
/// makes the data durable.
pub(crate) fn start_writeback(f: &File) {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open for the call.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Owner of an open file.
pub(crate) fn fchown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchown(
        f,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

/// Permission bits (incl. setuid/setgid/sticky) of an open file.
pub(crate) fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(
        f,
        Mode::from_bits_truncate(mode & 0o7777),
    )?)
}

/// Access and modification time of an open file.
pub(crate) fn futimens(f: &File, secs: i64, nanos: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, nanos);
    Ok(nix::sys::stat::futimens(f, &t, &t)?)
}

pub(crate) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    secs: i64,
    nanos: i64,
) -> io::Result<()> {
    let t = TimeSpec::new(secs, nanos);
    Ok(utimensat(
        dir,
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

/// Sets an xattr on `name` in `dir` without following a final symlink (through the fd's
/// `/proc/self/fd` entry, which resolves only the directory we hold).
pub(crate) fn set_xattr_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
) -> io::Result<()> {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(name);
    }
    xattr::set(p, key, value)
}
