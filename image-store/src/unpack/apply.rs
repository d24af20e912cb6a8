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

/// Applies every entry of `archive` onto `root`.
pub(crate) fn apply_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    root: &mut Root,
    opts: &UnpackOptions,
) -> Result<u64, UnpackError> {
    let mut count = 0u64;
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
        // Replace whatever is there, except a directory that stays a directory.
        {
            let dir = root.dir(&parent).map_err(at)?;
            let existing = rootfs::kind_at(dir, &name).map_err(at)?;
            let keep = is_dir && existing == Kind::Dir;
            if existing != Kind::Missing && !keep {
                rootfs::remove_all_at(dir, &name).map_err(at)?;
                root.invalidate();
            }
        }
        let dir = root.dir(&parent).map_err(at)?;
        match kind {
            EntryType::Directory => {
                if rootfs::kind_at(dir, &name).map_err(at)? == Kind::Missing {
                    rootfs::mkdir_at(dir, &name, 0o700).map_err(at)?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = rootfs::create_file_at(dir, &name).map_err(at)?;
                io::copy(&mut entry, &mut f).map_err(at)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(at)?
                    .ok_or_else(|| at(io::Error::other("symlink without target")))?
                    .into_owned();
                rootfs::symlink_at(dir, &name, &target).map_err(at)?;
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
                // The target's directory is resolved inside the root like any other path.
                let src =
                    root.open_dir_existing(&tparent)
                        .map_err(|e| UnpackError::HardlinkTarget {
                            path: raw.clone(),
                            target: target.clone(),
                            source: e,
                        })?;
                let dir = root.dir(&parent).map_err(at)?;
                rootfs::hardlink_at(std::os::fd::AsFd::as_fd(&src), &tname, dir, &name).map_err(
                    |e| UnpackError::HardlinkTarget {
                        path: raw.clone(),
                        target: target.clone(),
                        source: e,
                    },
                )?;
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
                rootfs::mknod_at(dir, &name, sflag, meta.mode & 0o777, major, minor).map_err(at)?;
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
            // After chown, which clears setuid/setgid.
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
