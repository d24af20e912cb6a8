//! What of a config berth-runtime can honour: the `ociVersion` (any 1.x, as the runtime spec
//! has stayed compatible within its major version; 1.3.0 included) and the runtime spec's
//! newer properties it does not implement, which fail `create` clearly instead of being
//! silently ignored (the spec: a runtime MUST generate an error for unsupported values).

use oci_spec::runtime::Spec;

use crate::error::{Result, RuntimeError};

/// The major version of the runtime spec berth-runtime implements.
const SUPPORTED_MAJOR: u64 = 1;

/// Accepts a SemVer 2.0.0 `ociVersion` of major version 1 (pre-release and build suffixes
/// allowed: runc's `spec` writes "1.0.2-dev"); refuses anything else, naming it.
pub fn check_version(version: &str) -> Result<()> {
    let invalid = |reason: String| RuntimeError::InvalidSpec {
        field: "ociVersion",
        reason,
    };
    if version.is_empty() {
        return Err(invalid("missing (the runtime spec requires it)".into()));
    }
    let core = version.split('+').next().unwrap_or_default();
    let core = core.split_once('-').map_or(core, |(c, _)| c);
    let parts: Vec<&str> = core.split('.').collect();
    let numbers: Option<Vec<u64>> = parts
        .iter()
        .map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        })
        .collect();
    match numbers.as_deref() {
        Some([major, _, _]) if *major == SUPPORTED_MAJOR => Ok(()),
        Some([major, _, _]) => Err(invalid(format!(
            "{version:?}: berth-runtime implements runtime spec {SUPPORTED_MAJOR}.x, not {major}.x"
        ))),
        _ => Err(invalid(format!(
            "{version:?} is not a SemVer version (MAJOR.MINOR.PATCH)"
        ))),
    }
}

/// Refuses the properties (runtime spec 1.1 to 1.3) that berth-runtime does not implement.
pub fn check_unsupported(spec: &Spec) -> Result<()> {
    let unsupported = |field: &'static str| RuntimeError::InvalidSpec {
        field,
        reason: "not supported by berth-runtime".into(),
    };
    if let Some(linux) = spec.linux() {
        if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(unsupported("linux.netDevices"));
        }
        if linux.intel_rdt().is_some() {
            return Err(unsupported("linux.intelRdt"));
        }
        if linux.memory_policy().is_some() {
            return Err(unsupported("linux.memoryPolicy"));
        }
        if linux.personality().is_some() {
            return Err(unsupported("linux.personality"));
        }
    }
    if let Some(process) = spec.process() {
        if process.io_priority().is_some() {
            return Err(unsupported("process.ioPriority"));
        }
        if process.scheduler().is_some() {
            return Err(unsupported("process.scheduler"));
        }
        if process.exec_cpu_affinity().is_some() {
            return Err(unsupported("process.execCPUAffinity"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_1x_version_is_accepted() {
        for v in [
            "1.0.0",
            "1.0.2-dev",
            "1.1.0",
            "1.2.1",
            "1.3.0",
            "1.3.0-rc.1",
            "1.10.3+build.5",
        ] {
            check_version(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
    }

    #[test]
    fn other_majors_and_non_semver_are_refused() {
        for v in [
            "2.0.0", "0.5.0", "invalid", "1.0", "1", "", "1.x.0", "v1.0.0",
        ] {
            let err = check_version(v).unwrap_err().to_string();
            assert!(err.contains("ociVersion"), "{v}: {err}");
        }
        assert!(check_version("2.0.0")
            .unwrap_err()
            .to_string()
            .contains("implements runtime spec 1.x, not 2.x"));
    }

    #[test]
    fn newer_properties_berth_does_not_implement_are_refused() {
        let base = serde_json::json!({"ociVersion": "1.3.0", "root": {"path": "rootfs"},
            "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {}});
        let spec: Spec = serde_json::from_value(base.clone()).unwrap();
        check_unsupported(&spec).unwrap();
        for (pointer, value, field) in [
            (
                "/linux/netDevices",
                serde_json::json!({"eth1": {}}),
                "linux.netDevices",
            ),
            (
                "/linux/personality",
                serde_json::json!({"domain": "LINUX32"}),
                "linux.personality",
            ),
            (
                "/process/ioPriority",
                serde_json::json!({"class": "IOPRIO_CLASS_IDLE"}),
                "process.ioPriority",
            ),
        ] {
            let mut config = base.clone();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            config.pointer_mut(parent).unwrap()[key] = value;
            let spec: Spec = serde_json::from_value(config).unwrap();
            let err = check_unsupported(&spec).unwrap_err().to_string();
            assert!(err.contains(field), "{pointer}: {err}");
        }
    }
}
