//! Applies the entries of one layer tar onto a directory (overlay upper-dir format).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::SFlag;
use tar::EntryType;
use tracing::{debug, warn};

use super::rootfs::{self, Kind, Root};
use super::UnpackError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Options of one unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Apply owners from the tar (needs root); otherwise files belong to the caller.
    pub chown: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            chown: nix::unistd::geteuid().is_root(),
        }
    }
}

/// Metadata of one entry, PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, i64),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Splits a tar path into (parent, name), containing absolute paths and rejecting `..`.
/// Returns `None` for the root itself.
fn clean_path(raw: &Path) -> Result<Option<(PathBuf, OsString)>, UnpackError> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::PathEscape {
                    path: raw.to_owned(),
                })
            }
        }
    }
    let Some(name) = parts.pop() else {
        return Ok(None);
    };
    Ok(Some((parts.iter().collect(), name.to_owned())))
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode()?,
        uid: h.uid()?,
        gid: h.gid()?,
        mtime: (h.mtime()? as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).unwrap_or("");
            match key {
                "uid" => meta.uid = text.parse().unwrap_or(meta.uid),
                "gid" => meta.gid = text.parse().unwrap_or(meta.gid),
                "mtime" => meta.mtime = parse_pax_time(text).unwrap_or(meta.mtime),
                _ => {
                    if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs.push((OsString::from(x), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

fn parse_pax_time(s: &str) -> Option<(i64, i64)> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += (c.to_digit(10)? as i64) * 10i64.pow(8 - i as u32);
    }
    Some((secs, nanos))
}

/// File contents are copied in chunks this large: few, large writes.
const COPY_BUF: usize = 1 << 20;

/// Files at least this large get their writeback started as soon as they are written.
const WRITEBACK_FROM: u64 = 256 << 10;

/// Copies `entry`'s data into `f`, filling `buf` before each write; returns the size.
fn copy_data(entry: &mut impl Read, f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<u64> {
    use std::io::Write;
    let mut total = 0u64;
    // Bounded by the entry's size: every pass reads at least one byte or ends.
    loop {
        let mut n = 0;
        while n < buf.len() {
            match entry.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(total);
        }
        f.write_all(&buf[..n])?;
        total += n as u64;
        if n < buf.len() {
            return Ok(total);
        }
    }
}

/// Runs `make` (which creates `name` in `parent`'s directory); when `name` exists already,
/// removes it (whatever it is, recursively) and runs `make` again. Saves a stat per entry in
/// the common case of nothing there.
fn replacing<T>(
    root: &mut Root,
    parent: &Path,
    name: &OsStr,
    mut make: impl FnMut(std::os::fd::BorrowedFd<'_>) -> io::Result<T>,
) -> io::Result<T> {
    let dir = root.dir(parent)?;
    match make(dir) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            rootfs::remove_all_at(dir, name)?;
            root.invalidate();
            make(root.dir(parent)?)
        }
        other => other,
    }
}

/// Applies every entry of `archive` onto `root`.
pub(crate) fn apply_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    root: &mut Root,
    opts: &UnpackOptions,
) -> Result<u64, UnpackError> {
    let mut count = 0u64;
    let copy_buf = &mut vec![0u8; COPY_BUF];
    // Directory mtimes are set last: creating children changes them.
    let mut dir_times: Vec<(PathBuf, (i64, i64))> = Vec::new();
    let entries = archive.entries().map_err(UnpackError::Read)?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Read)?;
        count += 1;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let Some((parent, name)) = clean_path(&raw)? else {
            debug!(path = %raw.display(), "skipping root entry");
            continue;
        };
        let at = |e: io::Error| UnpackError::Entry {
            path: raw.clone(),
            source: e,
        };
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            root.dir(&parent).map_err(at)?;
            let dir = root.open_dir_read(&parent).map_err(at)?;
            xattr::FileExt::set_xattr(&dir, OPAQUE_XATTR, b"y").map_err(at)?;
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::PathEscape { path: raw });
            }
            let meta = entry_meta(&mut entry).map_err(at)?;
            root.invalidate();
            let dir = root.dir(&parent).map_err(at)?;
            rootfs::remove_all_at(dir, hidden).map_err(at)?;
            rootfs::mknod_at(dir, hidden, SFlag::S_IFCHR, 0, 0, 0).map_err(at)?;
            if opts.chown {
                rootfs::chown_at(dir, hidden, meta.uid as u32, meta.gid as u32).map_err(at)?;
            }
            continue;
        }
        let meta = entry_meta(&mut entry).map_err(at)?;
        let kind = entry.header().entry_type();
        let is_dir = kind == EntryType::Directory;
        match kind {
            EntryType::Directory => {
                let dir = root.dir(&parent).map_err(at)?;
                match rootfs::mkdir_at(dir, &name, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // A directory stays (its contents merge); anything else is replaced.
                        if rootfs::kind_at(dir, &name).map_err(at)? != Kind::Dir {
                            rootfs::remove_all_at(dir, &name).map_err(at)?;
                            root.invalidate();
                            let dir = root.dir(&parent).map_err(at)?;
                            rootfs::mkdir_at(dir, &name, 0o700).map_err(at)?;
                        }
                    }
                    Err(e) => return Err(at(e)),
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Everything about a regular file is done through its fd: no path lookups.
                let mut f = replacing(root, &parent, &name, |dir| {
                    rootfs::create_file_at(dir, &name)
                })
                .map_err(at)?;
                let size = copy_data(&mut entry, &mut f, copy_buf).map_err(at)?;
                if size >= WRITEBACK_FROM {
                    // Start writing it out now (as dpkg does), so the snapshot's sync at the
                    // end of the layer finds little left to write.
                    rootfs::start_writeback(&f);
                }
                if opts.chown {
                    rootfs::fchown(&f, meta.uid as u32, meta.gid as u32).map_err(at)?;
                }
                // After chown, which clears setuid/setgid.
                rootfs::fchmod(&f, meta.mode).map_err(at)?;
                for (key, value) in &meta.xattrs {
                    match xattr::FileExt::set_xattr(&f, key, value) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                            warn!(path = %raw.display(), xattr = ?key, "xattr not supported here; skipped")
                        }
                        Err(e) => return Err(at(e)),
                    }
                }
                rootfs::futimens(&f, meta.mtime.0, meta.mtime.1).map_err(at)?;
                continue;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(at)?
                    .ok_or_else(|| at(io::Error::other("symlink without target")))?
                    .into_owned();
                replacing(root, &parent, &name, |dir| {
                    rootfs::symlink_at(dir, &name, &target)
                })
                .map_err(at)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(at)?
                    .ok_or_else(|| at(io::Error::other("hardlink without target")))?
                    .into_owned();
                let Some((tparent, tname)) = clean_path(&target)? else {
                    return Err(UnpackError::PathEscape { path: target });
                };
                let link_err = |e: io::Error| UnpackError::HardlinkTarget {
                    path: raw.clone(),
                    target: target.clone(),
                    source: e,
                };
                // A hardlink onto its own target is a no-op, not a removal of the target.
                if tparent == parent && tname == name {
                    continue;
                }
                // Make room first (the target's directory fd is opened after any removal).
                let dir = root.dir(&parent).map_err(at)?;
                if rootfs::kind_at(dir, &name).map_err(at)? != Kind::Missing {
                    rootfs::remove_all_at(dir, &name).map_err(at)?;
                    root.invalidate();
                }
                // The target's directory is resolved inside the root like any other path.
                let src = root.open_dir_existing(&tparent).map_err(link_err)?;
                let dir = root.dir(&parent).map_err(at)?;
                rootfs::hardlink_at(std::os::fd::AsFd::as_fd(&src), &tname, dir, &name)
                    .map_err(link_err)?;
                // A hardlink shares its target's inode and metadata.
                continue;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let major = h.device_major().map_err(at)?.unwrap_or(0) as u64;
                let minor = h.device_minor().map_err(at)?.unwrap_or(0) as u64;
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                replacing(root, &parent, &name, |dir| {
                    rootfs::mknod_at(dir, &name, sflag, meta.mode & 0o777, major, minor)
                })
                .map_err(at)?;
            }
            other => {
                warn!(path = %raw.display(), kind = ?other, "skipping unsupported tar entry type");
                continue;
            }
        }
        let dir = root.dir(&parent).map_err(at)?;
        if opts.chown {
            rootfs::chown_at(dir, &name, meta.uid as u32, meta.gid as u32).map_err(at)?;
        }
        if kind != EntryType::Symlink {
            // After chown, which clears setuid/setgid. The entry was just made (or checked to
            // be a directory) by this unpack, so it is not a symlink.
            rootfs::chmod_at(dir, &name, meta.mode).map_err(at)?;
        }
        for (key, value) in &meta.xattrs {
            match rootfs::set_xattr_at(dir, &name, key, value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                    warn!(path = %raw.display(), xattr = ?key, "xattr not supported here; skipped")
                }
                Err(e) => return Err(at(e)),
            }
        }
        if is_dir {
            dir_times.push((parent.join(&name), meta.mtime));
        } else {
            rootfs::set_times_at(dir, &name, meta.mtime.0, meta.mtime.1).map_err(at)?;
        }
    }
    // Deepest first, so setting a child's time does not disturb its parent's.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, (secs, nanos)) in dir_times {
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (p.to_owned(), n.to_owned()),
            _ => continue,
        };
        let at = |e: io::Error| UnpackError::Entry {
            path: path.clone(),
            source: e,
        };
        let dir = root.dir(&parent).map_err(at)?;
        rootfs::set_times_at(dir, &name, secs, nanos).map_err(at)?;
    }
    debug!(root = %root.path().display(), entries = count, "layer applied");
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        let c = |s: &str| clean_path(Path::new(s)).unwrap();
        assert_eq!(c("./a/b"), Some((PathBuf::from("a"), OsString::from("b"))));
        assert_eq!(
            c("/etc/passwd"),
            Some((PathBuf::from("etc"), "passwd".into()))
        );
        assert_eq!(c("x"), Some((PathBuf::new(), "x".into())));
        assert_eq!(c("./"), None);
        assert!(clean_path(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("1.000000001"), Some((1, 1)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
