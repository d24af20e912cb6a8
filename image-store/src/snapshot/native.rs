//! The native (copy) snapshotter's parts: a probe whether overlay works on the snapshot
//! filesystem, and the copy of a layer chain into one plain directory with overlay's semantics
//! applied (whiteout devices delete, `trusted.overlay.opaque` dirs hide what is below, upper
//! entries replace lower ones, dirs merge) — what containerd's native snapshotter does.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tracing::{debug, info};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How active snapshots and views are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotterMode {
    /// Overlay if a probe mount on the snapshot filesystem works, else native.
    #[default]
    Auto,
    /// Overlay mounts of the layer chain.
    Overlay,
    /// A copy of the layer chain per snapshot, bind-mounted.
    Native,
}

/// Whether an overlay mount with its upper and work dirs under `dir` works. `Ok(None)` when
/// it cannot be told (no privilege to mount).
pub(crate) fn probe_overlay(dir: &Path) -> io::Result<Option<nix::errno::Errno>> {
    let probe = dir.join(format!("overlay-probe-{}", std::process::id()));
    let _ = fs::remove_dir_all(&probe);
    for d in ["lower", "upper", "work", "merged"] {
        fs::create_dir_all(probe.join(d))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        probe.join("lower").display(),
        probe.join("upper").display(),
        probe.join("work").display()
    );
    let merged = probe.join("merged");
    let r = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    );
    if r.is_ok() {
        let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = fs::remove_dir_all(&probe);
    match r {
        Ok(()) => Ok(None),
        Err(e @ (nix::errno::Errno::EPERM | nix::errno::Errno::EACCES)) => {
            debug!(dir = %dir.display(), error = %e, "cannot probe overlay (no privilege); assuming it works");
            Ok(None)
        }
        Err(e) => {
            info!(dir = %dir.display(), error = %e, "overlay does not work here; using the native (copy) snapshotter");
            Ok(Some(e))
        }
    }
}

/// Copies `layers` (bottom first) into the empty directory `dst`, applying each on the ones
/// below. Returns the path that failed with the error.
pub(crate) fn copy_chain(layers: &[PathBuf], dst: &Path) -> Result<(), (PathBuf, io::Error)> {
    for layer in layers {
        apply_layer(layer, dst)?;
    }
    Ok(())
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    matches!(xattr::get(p, OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

/// Removes whatever is at `p` (not following symlinks); absent is fine.
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// One layer onto `dst`. Directories are walked with an explicit stack (bounded by the
/// layer's size); their times are set after their contents.
fn apply_layer(src_root: &Path, dst_root: &Path) -> Result<(), (PathBuf, io::Error)> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs_done = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let src = src_root.join(&rel);
        let dst = if rel.as_os_str().is_empty() {
            dst_root.to_owned()
        } else {
            dst_root.join(&rel)
        };
        let at = |e: io::Error| (dst.clone(), e);
        let m = fs::symlink_metadata(&src).map_err(|e| (src.clone(), e))?;
        if is_whiteout(&m) {
            remove_any(&dst).map_err(at)?;
            continue;
        }
        if m.is_dir() {
            let existing = fs::symlink_metadata(&dst).ok();
            let opaque = !rel.as_os_str().is_empty() && is_opaque(&src);
            match existing {
                Some(e) if e.is_dir() && !opaque => {}
                Some(_) => {
                    remove_any(&dst).map_err(at)?;
                    fs::create_dir(&dst).map_err(at)?;
                }
                None => fs::create_dir(&dst).map_err(at)?,
            }
            set_owner_mode_xattrs(&src, &dst, &m).map_err(at)?;
            dirs_done.push((dst.clone(), m));
            for entry in fs::read_dir(&src).map_err(|e| (src.clone(), e))? {
                let entry = entry.map_err(|e| (src.clone(), e))?;
                stack.push(rel.join(entry.file_name()));
            }
            continue;
        }
        remove_any(&dst).map_err(at)?;
        if m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &dst).map_err(at)?;
                continue;
            }
            links.insert((m.dev(), m.ino()), dst.clone());
        }
        copy_entry(&src, &dst, &m).map_err(at)?;
    }
    // Innermost first, so that setting a dir's times is not undone by writing into it.
    for (dst, m) in dirs_done.iter().rev() {
        set_times(dst, m).map_err(|e| (dst.clone(), e))?;
    }
    Ok(())
}

fn copy_entry(src: &Path, dst: &Path, m: &fs::Metadata) -> io::Result<()> {
    let ft = m.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if ft.is_file() {
        fs::copy(src, dst)?;
    } else {
        let kind = if ft.is_fifo() {
            SFlag::S_IFIFO
        } else if ft.is_char_device() {
            SFlag::S_IFCHR
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFSOCK
        };
        mknod(
            dst,
            kind,
            Mode::from_bits_truncate(m.mode() & 0o7777),
            m.rdev(),
        )?;
    }
    set_owner_mode_xattrs(src, dst, m)?;
    set_times(dst, m)
}

/// Owner first (chown clears set-id bits), then the mode, then the xattrs overlay does not own.
fn set_owner_mode_xattrs(src: &Path, dst: &Path, m: &fs::Metadata) -> io::Result<()> {
    let symlink = m.file_type().is_symlink();
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    if !symlink {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    let names = match xattr::list(src) {
        Ok(n) => n,
        Err(e) if symlink => {
            debug!(path = %src.display(), error = %e, "cannot list symlink xattrs");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for name in names {
        if name.to_string_lossy().starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(src, &name)? {
            if let Err(e) = xattr::set(dst, &name, &v) {
                if !symlink {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

fn set_times(dst: &Path, m: &fs::Metadata) -> io::Result<()> {
    let atime = TimeSpec::new(m.atime(), m.atime_nsec());
    let mtime = TimeSpec::new(m.mtime(), m.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}
