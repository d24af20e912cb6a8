//! Switching the root: pivot_root (the default) or, with `--no-pivot`, MS_MOVE + chroot for
//! rootfs on filesystems pivot_root refuses (ramfs/initramfs).

use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use crate::error::{Result, RuntimeError};

/// runc's pivot_root(".", ".") trick: no temporary directory in the rootfs is needed. The old
/// root stacks on top of the new one, is made a slave (so detaching it does not propagate to
/// the host) and lazily unmounted.
pub fn pivot(rootfs: &Path) -> Result<()> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old_root =
        open("/", dir_flags, Mode::empty()).map_err(|e| RuntimeError::sys("open /", e))?;
    let new_root = open(rootfs, dir_flags, Mode::empty())
        .map_err(|e| RuntimeError::sys(format!("open rootfs {}", rootfs.display()), e))?;
    fchdir(&new_root).map_err(|e| RuntimeError::sys("chdir to the rootfs", e))?;
    pivot_root(".", ".")
        .map_err(|e| RuntimeError::sys(format!("pivot_root into {}", rootfs.display()), e))?;
    fchdir(&old_root).map_err(|e| RuntimeError::sys("chdir to the old root", e))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys("make the old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| RuntimeError::sys("detach the old root", e))?;
    chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
}

/// `--no-pivot`: move the rootfs mount onto / and chroot into it.
pub fn move_root(rootfs: &Path) -> Result<()> {
    chdir(rootfs).map_err(|e| RuntimeError::sys(format!("chdir {}", rootfs.display()), e))?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("move {} to /", rootfs.display()), e))?;
    chroot(".").map_err(|e| RuntimeError::sys("chroot into the rootfs", e))?;
    chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
}
