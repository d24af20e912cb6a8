//! A container without a mount namespace of its own (`linux.namespaces` lists none, so it
//! inherits the runtime's, as the runtime spec requires): its rootfs is bound onto itself and
//! its mounts made in the host's mount namespace, it is entered with chroot (pivot_root or
//! MS_MOVE there would replace the host's root), and `delete` takes the mounts away again,
//! which a namespace of its own would have done by vanishing.

use std::fs;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot};

use crate::error::{Result, RuntimeError};

/// How many mounts sit at `path` (mount point equal to it) in the calling process's mount
/// namespace: stacked mounts there are counted one each.
pub fn mounts_at(path: &Path) -> Result<usize> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read", "/proc/self/mountinfo", e))?;
    Ok(count_mounts_at(&info, path))
}

fn count_mounts_at(mountinfo: &str, path: &Path) -> usize {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| Path::new(&super::unescape(mp)) == path)
        .count()
}

/// Binds the rootfs onto itself, as in a namespace of its own, and makes that mount (and the
/// copies of the mounts below it) private, so that what is mounted under it for the container
/// does not propagate to the host's other mounts. The host's own propagation is left alone.
pub fn bind_rootfs(rootfs: &Path) -> Result<()> {
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("bind rootfs {} onto itself", rootfs.display()), e))?;
    mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("make rootfs {} private", rootfs.display()), e))
}

/// Enters the rootfs with chroot.
pub fn enter(rootfs: &Path) -> Result<()> {
    chdir(rootfs).map_err(|e| RuntimeError::sys(format!("chdir {}", rootfs.display()), e))?;
    chroot(".").map_err(|e| RuntimeError::sys("chroot into the rootfs", e))?;
    chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
}

/// Detaches the mounts stacked at `rootfs` beyond the `keep` that were there before the
/// container (its rootfs bind, with everything mounted below it). Bounded.
pub fn unmount_rootfs(rootfs: &Path, keep: usize) -> Result<()> {
    for _ in 0..16 {
        if mounts_at(rootfs)? <= keep {
            return Ok(());
        }
        umount2(rootfs, MntFlags::MNT_DETACH)
            .map_err(|e| RuntimeError::sys(format!("unmount rootfs {}", rootfs.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stacked_mounts_at_a_path() {
        let info = "22 1 8:1 / / rw shared:1 - ext4 /dev/vda rw\n\
                    40 22 8:1 /b/rootfs /b/rootfs rw - ext4 /dev/vda rw\n\
                    41 40 0:5 / /b/rootfs/proc rw - proc proc rw\n\
                    42 40 8:1 /b/rootfs /b/rootfs rw - ext4 /dev/vda rw\n\
                    43 22 0:6 / /b/root\\040fs rw - tmpfs tmpfs rw\n";
        assert_eq!(count_mounts_at(info, Path::new("/b/rootfs")), 2);
        assert_eq!(count_mounts_at(info, Path::new("/b/root fs")), 1);
        assert_eq!(count_mounts_at(info, Path::new("/b")), 0);
    }
}
