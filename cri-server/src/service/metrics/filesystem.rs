//! The filesystem under a container's writable layer (size and inodes, by statvfs, and the
//! device it is mounted from, by mountinfo) and the names of block devices (sysfs), as
//! cAdvisor labels them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::{major, minor};

/// Size and inodes of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Capacity {
    /// Bytes the filesystem holds (f_blocks × f_frsize).
    pub(super) bytes: u64,
    pub(super) inodes: u64,
    pub(super) inodes_free: u64,
}

/// statvfs of the filesystem holding `path`.
pub(super) fn capacity(path: &Path) -> Option<Capacity> {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => Some(Capacity {
            bytes: s.blocks().saturating_mul(s.fragment_size()),
            inodes: s.files(),
            inodes_free: s.files_free(),
        }),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no statvfs");
            None
        }
    }
}

/// The device `path`'s filesystem is mounted from (the mount source in `<proc>/self/mountinfo`
/// of the mount with `path`'s st_dev, e.g. `/dev/vda1`), as cAdvisor's `device` label.
pub(super) fn device_of(proc: &Path, path: &Path) -> Option<String> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let mountinfo = std::fs::read_to_string(proc.join("self/mountinfo")).ok()?;
    mount_source(&mountinfo, major(dev), minor(dev))
}

/// The source of the first mount of device `major:minor` in a mountinfo text.
fn mount_source(mountinfo: &str, major: u64, minor: u64) -> Option<String> {
    let want = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let (fields, tail) = line.split_once(" - ")?;
        if fields.split_whitespace().nth(2)? != want {
            return None;
        }
        // After the separator: fstype, source, super options.
        tail.split_whitespace().nth(1).map(str::to_owned)
    })
}

/// `/dev/<name>` of a block device (from `<sys>/dev/block/M:m/uevent`), else `major:minor`.
pub(super) fn block_device(sys: &Path, major: u64, minor: u64) -> String {
    std::fs::read_to_string(sys.join(format!("dev/block/{major}:{minor}/uevent")))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_source_by_device_number() {
        let mi = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                  35 22 0:31 / /run rw shared:5 - tmpfs tmpfs rw\n\
                  40 22 8:1 /var/lib /mnt/bind rw - ext4 /dev/sda1 rw\n";
        assert_eq!(mount_source(mi, 8, 1).as_deref(), Some("/dev/sda1"));
        assert_eq!(mount_source(mi, 0, 31).as_deref(), Some("tmpfs"));
        assert_eq!(mount_source(mi, 9, 9), None);
    }

    #[test]
    fn capacity_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let c = capacity(dir.path()).unwrap();
        assert!(c.bytes > 0 && c.inodes_free <= c.inodes, "{c:?}");
        assert_eq!(capacity(&dir.path().join("missing")), None);
    }

    #[test]
    fn block_device_names_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let dir = sys.path().join("dev/block/8:0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("uevent"), "MAJOR=8\nMINOR=0\nDEVNAME=sda\n").unwrap();
        assert_eq!(block_device(sys.path(), 8, 0), "/dev/sda");
        assert_eq!(block_device(sys.path(), 253, 1), "253:1");
    }
}
