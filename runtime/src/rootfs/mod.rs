//! The container's root filesystem: everything init does in its new mount namespace.
//!
//! Order, as runc's: [`prepare`] (propagation, the rootfs bound onto itself, the spec's
//! mounts, /dev) → createContainer hooks → [`switch_root`] (pivot_root) → console, hostname,
//! sysctls → [`paths::make_readonly`] and [`paths::mask`] → [`finalize`] (read-only root,
//! root propagation).

pub mod devices;
pub mod host_mount_ns;
pub mod idmap;
pub mod mount_options;
pub mod mounts;
pub mod paths;
pub mod pivot;
pub mod secure_path;

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Spec;

use crate::error::{Result, RuntimeError};
pub use mounts::MountEnv;
pub use secure_path::RootDir;

/// `linux.rootfsPropagation` as mount flags.
pub fn root_propagation(spec: &Spec) -> Result<Option<MsFlags>> {
    let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
    else {
        return Ok(None);
    };
    let flags = match p.as_str() {
        "" => return Ok(None),
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        other => {
            return Err(RuntimeError::InvalidSpec {
                field: "linux.rootfsPropagation",
                reason: format!("unknown propagation {other:?}"),
            })
        }
    };
    Ok(Some(flags))
}

/// Sets up the rootfs before pivot_root: mounts and devices.
pub fn prepare(
    spec: &Spec,
    rootfs: &Path,
    env: &mut MountEnv,
    in_userns: bool,
    own_mount_ns: bool,
) -> Result<()> {
    if own_mount_ns {
        bind_rootfs_in_own_ns(spec, rootfs)?;
    } else {
        host_mount_ns::bind_rootfs(rootfs)?;
    }
    let root = RootDir::open(rootfs)?;
    let spec_mounts = spec.mounts().clone().unwrap_or_default();
    mounts::mount_all(&root, &spec_mounts, env)?;

    let dev_is_bound = spec_mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_is_bound {
        let extra = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        devices::create_devices(&root, &extra, in_userns)?;
        devices::create_symlinks(&root)?;
    }
    // A missing cwd is created (inside the root), as runc does.
    if let Some(process) = spec.process() {
        root.resolve_or_create(process.cwd(), secure_path::Create::Dir)?;
    }
    Ok(())
}

/// In the container's own mount namespace: the propagation of everything (slave by default,
/// so that nothing mounted for the container reaches the host), then the rootfs bound onto
/// itself.
fn bind_rootfs_in_own_ns(spec: &Spec, rootfs: &Path) -> Result<()> {
    // Nothing mounted in the container may propagate back to the host. An unbindable root is
    // made private for now (the rootfs could not be bound onto itself, nor volumes bound from
    // under it) and unbindable by [`finalize`], after the mounts.
    let prop = match root_propagation(spec)? {
        Some(p) if p.contains(MsFlags::MS_UNBINDABLE) => {
            p.difference(MsFlags::MS_UNBINDABLE) | MsFlags::MS_PRIVATE
        }
        Some(p) => p,
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
        .map_err(|e| RuntimeError::sys("set propagation of /", e))?;
    make_parent_mount_private(rootfs)?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("bind rootfs {} onto itself", rootfs.display()), e))
}

/// pivot_root needs the parent mount of the new root not to be shared.
fn make_parent_mount_private(rootfs: &Path) -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| RuntimeError::io("read", "/proc/self/mountinfo", e))?;
    let parent = parent_mount(&mountinfo, rootfs);
    if let Some((mount_point, shared)) = parent {
        if shared {
            mount(
                None::<&str>,
                &mount_point,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::sys(format!("make {} private", mount_point.display()), e))?;
        }
    }
    Ok(())
}

/// The longest mount point containing `path`, and whether it is shared.
fn parent_mount(mountinfo: &str, path: &Path) -> Option<(PathBuf, bool)> {
    let mut best: Option<(PathBuf, bool)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let mp = PathBuf::from(unescape(mp));
        if !path.starts_with(&mp) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let shared = optional.clone().any(|f| f.starts_with("shared:"));
        if best
            .as_ref()
            .is_none_or(|(b, _)| mp.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mp, shared));
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// pivot_root (or MS_MOVE + chroot with `no_pivot`); chroot alone in the host's mount
/// namespace.
pub fn switch_root(rootfs: &Path, no_pivot: bool, own_mount_ns: bool) -> Result<()> {
    if !own_mount_ns {
        host_mount_ns::enter(rootfs)
    } else if no_pivot {
        pivot::move_root(rootfs)
    } else {
        pivot::pivot(rootfs)
    }
}

/// After everything else: the read-only root and `rootfsPropagation`.
pub fn finalize(spec: &Spec) -> Result<()> {
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        let locked = mounts::security_flags_of("/");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            flags | locked,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys("remount the root read-only", e))?;
    }
    if let Some(prop) = root_propagation(spec)? {
        mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
            .map_err(|e| RuntimeError::sys("set rootfsPropagation on /", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_parent_mount() {
        let info = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    30 22 0:5 / /run rw master:3 - tmpfs tmpfs rw\n\
                    31 22 0:6 / /run\\040x rw shared:9 - tmpfs tmpfs rw\n";
        assert_eq!(
            parent_mount(info, Path::new("/var/lib/x")),
            Some((PathBuf::from("/"), true))
        );
        assert_eq!(
            parent_mount(info, Path::new("/run/b/rootfs")),
            Some((PathBuf::from("/run"), false))
        );
        assert_eq!(
            parent_mount(info, Path::new("/run x/y")),
            Some((PathBuf::from("/run x"), true))
        );
    }
}
