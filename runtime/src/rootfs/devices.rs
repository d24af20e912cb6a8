//! /dev inside the container: the default device nodes every container gets, the spec's
//! `linux.devices`, and the standard symlinks, as runc creates them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType};

use super::secure_path::{proc_fd_path, Create, RootDir};
use crate::error::{Result, RuntimeError};

/// The nodes runc creates in every container (`/dev/null`, `zero`, `full`, `random`,
/// `urandom`, `tty`), with their major:minor.
pub const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

pub fn default_devices() -> Vec<LinuxDevice> {
    DEFAULT_DEVICES
        .iter()
        .map(|(path, major, minor)| {
            LinuxDeviceBuilder::default()
                .path(PathBuf::from(path))
                .typ(LinuxDeviceType::C)
                .major(*major)
                .minor(*minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()
                .expect("static device is valid")
        })
        .collect()
}

/// Creates the default devices plus `extra` (spec devices win over defaults of the same path).
/// In a user namespace mknod is not allowed, so the host's node is bind-mounted instead.
pub fn create_devices(root: &RootDir, extra: &[LinuxDevice], bind: bool) -> Result<()> {
    let mut devices = default_devices();
    devices.retain(|d| !extra.iter().any(|e| e.path() == d.path()));
    devices.extend(extra.iter().cloned());
    for dev in &devices {
        if bind {
            bind_device(root, dev)?;
        } else {
            make_device(root, dev)?;
        }
    }
    Ok(())
}

fn checked_path(dev: &LinuxDevice) -> Result<&Path> {
    let path = dev.path();
    if !path.starts_with("/dev") {
        return Err(RuntimeError::InvalidSpec {
            field: "linux.devices[].path",
            reason: format!("{} is not under /dev", path.display()),
        });
    }
    Ok(path)
}

fn make_device(root: &RootDir, dev: &LinuxDevice) -> Result<()> {
    let path = checked_path(dev)?;
    let kind = match dev.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(RuntimeError::InvalidSpec {
                field: "linux.devices[].type",
                reason: format!("{}: type 'a' is only valid in cgroup rules", path.display()),
            })
        }
    };
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path.file_name().expect("device path has a file name");
    let dir = root.resolve_or_create(parent, Create::Dir)?;
    let perm = Mode::from_bits_truncate(dev.file_mode().unwrap_or(0o666));
    // Replace whatever the image has at that path.
    let _ = nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    mknodat(
        &dir,
        name,
        kind,
        perm,
        makedev(dev.major() as u64, dev.minor() as u64),
    )
    .map_err(|e| RuntimeError::sys(format!("mknod {}", path.display()), e))?;
    // mknod is subject to the umask: set the mode exactly.
    nix::sys::stat::fchmodat(
        &dir,
        name,
        perm,
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == nix::errno::Errno::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(|e| RuntimeError::sys(format!("chmod {}", path.display()), e))?;
    fchownat(
        &dir,
        name,
        dev.uid().map(Uid::from_raw),
        dev.gid().map(Gid::from_raw),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| RuntimeError::sys(format!("chown {}", path.display()), e))?;
    Ok(())
}

fn bind_device(root: &RootDir, dev: &LinuxDevice) -> Result<()> {
    let path = checked_path(dev)?;
    let host = Path::new(path);
    match std::fs::metadata(host) {
        Ok(meta) if meta.rdev() == makedev(dev.major() as u64, dev.minor() as u64) => {}
        _ => {
            return Err(RuntimeError::InvalidSpec {
                field: "linux.devices",
                reason: format!(
                    "{} {}:{} cannot be created in a user namespace and the host has no such node to bind",
                    path.display(),
                    dev.major(),
                    dev.minor()
                ),
            })
        }
    }
    let target = root.resolve_or_create(path, Create::File)?;
    mount(
        Some(host),
        &proc_fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("bind device {}", path.display()), e))
}

/// `/dev/fd`, `/dev/std{in,out,err}`, `/dev/ptmx` and (if the host has it) `/dev/core`.
pub fn create_symlinks(root: &RootDir) -> Result<()> {
    let dev = root.resolve_or_create(Path::new("/dev"), Create::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        if name == "ptmx" {
            // Replace a device node the image or a bind may have left.
            let _ = nix::unistd::unlinkat(&dev, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        match symlinkat(target, &dev, name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(RuntimeError::sys(format!("symlink /dev/{name}"), e)),
        }
    }
    Ok(())
}
