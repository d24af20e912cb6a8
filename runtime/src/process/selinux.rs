//! SELinux labels (`process.selinuxLabel`, `linux.mountLabel`). On a host without SELinux a
//! label cannot be applied, and the container fails naming the field, as runc's does (its
//! process label is refused, its mount label makes the mounts fail), rather than running
//! unlabelled. Applying labels where SELinux is enabled is not implemented yet: there they are
//! still not applied, with a warning (the `features` document says SELinux is unsupported).

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::error::{Result, RuntimeError};

/// Whether SELinux is enabled: its filesystem is mounted where libselinux looks first.
pub fn enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Checks, before anything is set up, that the labels asked for can be honoured.
pub fn check(spec: &Spec) -> Result<()> {
    check_with(spec, enabled())
}

fn check_with(spec: &Spec, selinux_enabled: bool) -> Result<()> {
    let process_label = spec
        .process()
        .as_ref()
        .and_then(|p| p.selinux_label().clone())
        .filter(|l| !l.is_empty());
    let mount_label = spec
        .linux()
        .as_ref()
        .and_then(|l| l.mount_label().clone())
        .filter(|l| !l.is_empty());
    for (field, label) in [
        ("process.selinuxLabel", process_label),
        ("linux.mountLabel", mount_label),
    ] {
        let Some(label) = label else { continue };
        if !selinux_enabled {
            return Err(RuntimeError::InvalidSpec {
                field,
                reason: format!(
                    "label {label:?} asked for, but SELinux is not enabled on this host"
                ),
            });
        }
        tracing::warn!(
            field,
            label,
            "SELinux labels are not applied by berth-runtime yet"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn labels_are_refused_without_selinux() {
        let base = serde_json::json!({"ociVersion": "1.3.0", "root": {"path": "rootfs"},
            "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {}});
        check_with(&spec(base.clone()), false).unwrap();
        let mut with_process = base.clone();
        with_process["process"]["selinuxLabel"] = "system_u:system_r:svirt_lxc_net_t:s0".into();
        let err = check_with(&spec(with_process.clone()), false).unwrap_err();
        assert!(err.to_string().contains("process.selinuxLabel"), "{err}");
        let mut with_mount = base;
        with_mount["linux"]["mountLabel"] = "system_u:object_r:svirt_sandbox_file_t:s0".into();
        let err = check_with(&spec(with_mount.clone()), false).unwrap_err();
        assert!(err.to_string().contains("linux.mountLabel"), "{err}");
        check_with(&spec(with_process), true).unwrap();
        check_with(&spec(with_mount), true).unwrap();
    }
}
