//! Devices: the CRI's host_path/container_path/permissions as `linux.devices` plus cgroup allow
//! rules (containerd's `WithDevices`), and every host device for privileged containers
//! (`WithHostDevices` + `WithAllDevicesAllowed`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cri_api::v1 as cri;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::SpecError;

/// The devices and their cgroup rules.
#[derive(Debug, Default)]
pub struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// The CRI devices: a host device node, or a directory of them (each added under the
/// container path). Permissions are a subset of "rwm" (empty: "rwm").
pub fn from_config(config: &[cri::Device]) -> Result<Devices, SpecError> {
    let mut out = Devices::default();
    for d in config {
        let access = if d.permissions.is_empty() {
            "rwm".to_string()
        } else {
            d.permissions.clone()
        };
        if access.chars().any(|c| !"rwm".contains(c)) {
            return Err(SpecError::Invalid {
                field: "devices.permissions",
                reason: format!("{:?} for {:?}: only r, w and m", d.permissions, d.host_path),
            });
        }
        let host = std::fs::canonicalize(&d.host_path).map_err(|source| SpecError::Host {
            field: "devices.host_path",
            path: d.host_path.clone().into(),
            source,
        })?;
        let container = if d.container_path.is_empty() {
            PathBuf::from(&d.host_path)
        } else {
            PathBuf::from(&d.container_path)
        };
        let meta = stat(&host)?;
        let found = if meta.is_dir() {
            walk(&host, &container, &[])?
        } else {
            vec![device(&container, &meta).ok_or_else(|| SpecError::Invalid {
                field: "devices.host_path",
                reason: format!("{:?} is not a device", d.host_path),
            })?]
        };
        for dev in found {
            out.rules.push(allow(Some(&dev), &access));
            out.devices.push(dev);
        }
    }
    Ok(out)
}

/// Every device under the host's /dev (as runc's `HostDevices`: not pts, shm, fd, mqueue nor
/// console), and one rule allowing all devices.
pub fn privileged() -> Result<Devices, SpecError> {
    let skip = [
        "pts",
        "shm",
        "fd",
        "mqueue",
        ".lxc",
        ".lxd-mounts",
        ".udev",
        "console",
    ];
    Ok(Devices {
        devices: walk(Path::new("/dev"), Path::new("/dev"), &skip)?,
        rules: vec![allow(None, "rwm")],
    })
}

fn stat(path: &Path) -> Result<std::fs::Metadata, SpecError> {
    std::fs::metadata(path).map_err(|source| SpecError::Host {
        field: "devices.host_path",
        path: path.into(),
        source,
    })
}

fn walk(host: &Path, container: &Path, skip: &[&str]) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(host).map_err(|source| SpecError::Host {
        field: "devices.host_path",
        path: host.into(),
        source,
    })?;
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        // Symlinks are not followed (a loop, or a device listed twice).
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(walk(&e.path(), &container.join(&name), &[])?);
        } else if let Some(dev) = device(&container.join(&name), &meta) {
            out.push(dev);
        }
    }
    Ok(out)
}

/// A device node's OCI description, or None if it is not a character/block device.
fn device(container_path: &Path, meta: &std::fs::Metadata) -> Option<LinuxDevice> {
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let (major, minor) = split_dev(meta.rdev());
    let mut d = LinuxDevice::default();
    d.set_path(container_path.to_path_buf());
    d.set_typ(typ);
    d.set_major(major);
    d.set_minor(minor);
    d.set_file_mode(Some(meta.mode() & 0o777));
    d.set_uid(Some(meta.uid()));
    d.set_gid(Some(meta.gid()));
    Some(d)
}

/// glibc's major()/minor() for a Linux dev_t.
fn split_dev(dev: u64) -> (i64, i64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as i64, minor as i64)
}

fn allow(dev: Option<&LinuxDevice>, access: &str) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true);
    rule.set_access(Some(access.to_string()));
    if let Some(dev) = dev {
        rule.set_typ(Some(dev.typ()));
        rule.set_major(Some(dev.major()));
        rule.set_minor(Some(dev.minor()));
    } else {
        rule.set_typ(Some(LinuxDeviceType::A));
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_node() {
        let d = from_config(&[cri::Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }])
        .unwrap();
        assert_eq!(d.devices.len(), 1);
        let dev = &d.devices[0];
        assert_eq!(dev.path(), Path::new("/dev/mynull"));
        assert_eq!(
            (dev.typ(), dev.major(), dev.minor()),
            (LinuxDeviceType::C, 1, 3)
        );
        assert_eq!(dev.file_mode(), Some(0o666));
        let rule = &d.rules[0];
        assert!(rule.allow());
        assert_eq!(
            (
                rule.typ(),
                rule.major(),
                rule.minor(),
                rule.access().as_deref()
            ),
            (Some(LinuxDeviceType::C), Some(1), Some(3), Some("rw"))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = from_config(&[cri::Device {
            container_path: "/dev/x".into(),
            host_path: "/dev/null".into(),
            permissions: "rwx".into(),
        }])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("devices.permissions:"), "{err}");
        let err = from_config(&[cri::Device {
            container_path: "/dev/x".into(),
            host_path: "/nonexistent/dev".into(),
            permissions: String::new(),
        }])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("devices.host_path \"/nonexistent/dev\""),
            "{err}"
        );
        let err = from_config(&[cri::Device {
            container_path: "/dev/x".into(),
            host_path: "/etc/hostname".into(),
            permissions: String::new(),
        }])
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a device"), "{err}");
    }

    #[test]
    fn privileged_sees_host_devices() {
        let d = privileged().unwrap();
        assert!(d.devices.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!d
            .devices
            .iter()
            .any(|d| d.path().starts_with("/dev/pts") || d.path() == Path::new("/dev/console")));
        assert_eq!(d.rules.len(), 1);
        assert_eq!(d.rules[0].typ(), Some(LinuxDeviceType::A));
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(split_dev(0x0103), (1, 3));
        assert_eq!(split_dev((259u64 << 8) | 5), (259, 5));
    }
}
