//! The pod's cgroup under either driver: where the pause and the pod's containers go, the
//! cgroupfs directory pod stats read, and its removal when berth made it.
//!
//! - cgroupfs: the kubelet's cgroup_parent (`/kubepods/burstable/pod<uid>`), or berth's own
//!   `/berth/<id>`, which berth removes.
//! - systemd: the kubelet sends its full slice path
//!   (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`) or a bare
//!   slice; as containerd does, its last component is the pod's slice, and each container is
//!   the scope `berth-<id>.scope` in it (cgroupsPath `<slice>:berth:<id>`). A slice is the
//!   kubelet's to remove. Without a cgroup_parent the pod gets a slice of its own,
//!   `berth-pod<id>.slice` (in `berth.slice`, by systemd's `-` nesting), which berth stops over
//!   D-Bus when the pod goes.

use berth_cgroups::CgroupPath;

use super::error::{Result, SandboxError};
use crate::config::CgroupDriver;

/// Where a new pod's cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodCgroup {
    /// The pod cgroup: a cgroupfs path, or a slice name under systemd.
    pub parent: String,
    /// berth made `parent` (and removes it with the pod).
    pub owns: bool,
    /// The pause container's cgroupsPath.
    pub cgroups_path: String,
}

/// The pod cgroup of pod `id` from its CRI `cgroup_parent` under `driver`; a parent the
/// systemd driver cannot use (no slice as its last component) is an invalid config naming it.
pub(super) fn plan(driver: CgroupDriver, cgroup_parent: &str, id: &str) -> Result<PodCgroup> {
    let (parent, owns) = match (driver, cgroup_parent.is_empty()) {
        (CgroupDriver::Cgroupfs, true) => (format!("/berth/{id}"), true),
        (CgroupDriver::Cgroupfs, false) => (cgroup_parent.to_owned(), false),
        (CgroupDriver::Systemd, true) => (format!("berth-pod{id}.slice"), true),
        (CgroupDriver::Systemd, false) => (kubelet_slice(cgroup_parent)?.to_owned(), false),
    };
    let cgroups_path = driver.cgroups_path(&parent, id);
    // The runtime reads the path the same way: what it would refuse is refused here, before
    // anything of the pod is made.
    CgroupPath::from_spec(Some(&cgroups_path), id, driver.is_systemd()).map_err(|e| {
        SandboxError::InvalidConfig(format!(
            "linux.cgroup_parent {cgroup_parent:?} gives no usable cgroup under the {} cgroup \
             driver: {e}",
            driver.name()
        ))
    })?;
    Ok(PodCgroup {
        parent,
        owns,
        cgroups_path,
    })
}

/// The pod's slice in the kubelet's cgroup_parent under the systemd driver: its last
/// component, which must be a slice (containerd takes it the same way).
fn kubelet_slice(cgroup_parent: &str) -> Result<&str> {
    let last = cgroup_parent
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if last.len() > ".slice".len() && last.ends_with(".slice") && !last.contains(':') {
        return Ok(last);
    }
    Err(SandboxError::InvalidConfig(format!(
        "linux.cgroup_parent {cgroup_parent:?}: under the systemd cgroup driver its last \
         component must be the pod's slice (e.g. kubepods-burstable-pod<uid>.slice); is the \
         kubelet's cgroup driver cgroupfs?"
    )))
}

/// The pod cgroup `parent` (a record's `cgroup_parent`) as a cgroup path: a cgroupfs path, or
/// with systemd the cgroupfs directory of the slice.
pub(super) fn path(parent: &str, id: &str, driver: CgroupDriver) -> Result<CgroupPath> {
    let spec = match driver {
        CgroupDriver::Systemd => format!("::{parent}"),
        CgroupDriver::Cgroupfs => parent.to_owned(),
    };
    CgroupPath::from_spec(Some(&spec), id, driver.is_systemd()).map_err(|source| {
        SandboxError::Cgroup {
            path: parent.to_owned(),
            source: Box::new(source),
        }
    })
}

/// Removes the pod cgroup berth made: `/berth/<id>` in every hierarchy, or with systemd the
/// pod's slice, stopped over D-Bus (with every unit left in it) and its failed state reset.
/// Idempotent. Blocking: call it on a blocking thread.
pub(super) fn remove(parent: &str, id: &str, driver: CgroupDriver) -> Result<()> {
    let cgroup = |source| SandboxError::Cgroup {
        path: parent.to_owned(),
        source: Box::new(source),
    };
    match driver {
        CgroupDriver::Cgroupfs => {
            let manager = berth_cgroups::manager(&path(parent, id, driver)?).map_err(cgroup)?;
            manager.remove().map_err(cgroup)
        }
        CgroupDriver::Systemd => {
            let systemd = berth_cgroups::systemd::Systemd::connect().map_err(cgroup)?;
            systemd.stop_unit(parent).map_err(cgroup)?;
            systemd.reset_failed_unit(parent).map_err(cgroup)?;
            tracing::debug!(sandbox = id, slice = parent, "pod slice stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const ID: &str = "0123abcd";

    #[test]
    fn cgroupfs_pods_use_the_parent_or_their_own_dir() {
        let own = plan(CgroupDriver::Cgroupfs, "", ID).unwrap();
        assert_eq!(own.parent, "/berth/0123abcd");
        assert!(own.owns);
        assert_eq!(own.cgroups_path, "/berth/0123abcd/0123abcd");
        let kubelet = plan(CgroupDriver::Cgroupfs, "/kubepods/burstable/pod1", ID).unwrap();
        assert_eq!(kubelet.parent, "/kubepods/burstable/pod1");
        assert!(!kubelet.owns);
        assert_eq!(kubelet.cgroups_path, "/kubepods/burstable/pod1/0123abcd");
        let err = plan(CgroupDriver::Cgroupfs, "/kubepods/../etc", ID).unwrap_err();
        assert!(matches!(err, SandboxError::InvalidConfig(_)), "{err}");
    }

    #[test]
    fn systemd_pods_take_the_last_component_of_the_kubelets_slice_path() {
        for parent in [
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice",
            "kubepods-burstable-pod1_2.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/",
        ] {
            let p = plan(CgroupDriver::Systemd, parent, ID).unwrap();
            assert_eq!(p.parent, "kubepods-burstable-pod1_2.slice", "{parent}");
            assert!(!p.owns, "the kubelet's slice is the kubelet's");
            assert_eq!(
                p.cgroups_path, "kubepods-burstable-pod1_2.slice:berth:0123abcd",
                "{parent}"
            );
            let pause = CgroupPath::from_spec(Some(&p.cgroups_path), ID, true).unwrap();
            assert_eq!(
                pause.as_path(),
                Path::new(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/\
                     berth-0123abcd.scope"
                )
            );
            assert_eq!(
                path(&p.parent, ID, CgroupDriver::Systemd)
                    .unwrap()
                    .as_path(),
                Path::new(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice"
                )
            );
        }
    }

    #[test]
    fn systemd_pods_without_a_parent_get_a_slice_of_their_own() {
        let p = plan(CgroupDriver::Systemd, "", ID).unwrap();
        assert_eq!(p.parent, "berth-pod0123abcd.slice");
        assert!(p.owns);
        assert_eq!(p.cgroups_path, "berth-pod0123abcd.slice:berth:0123abcd");
        assert_eq!(
            path(&p.parent, ID, CgroupDriver::Systemd)
                .unwrap()
                .as_path(),
            Path::new("/berth.slice/berth-pod0123abcd.slice")
        );
        // A container of the pod: its scope in the pod's slice.
        let c = CgroupDriver::Systemd.cgroups_path(&p.parent, "c1");
        assert_eq!(
            CgroupPath::from_spec(Some(&c), "c1", true)
                .unwrap()
                .as_path(),
            Path::new("/berth.slice/berth-pod0123abcd.slice/berth-c1.scope")
        );
    }

    #[test]
    fn systemd_refuses_parents_that_name_no_slice() {
        for parent in [
            "/kubepods/burstable/pod1",
            "/",
            "/kubepods.slice/.slice",
            "/kubepods.slice/kubepods--pod1.slice",
            "/kubepods.slice/-kubepods-pod1.slice",
            "/kubepods.slice/a:b.slice",
            "kubepods.slice/pod1.scope",
        ] {
            let err = plan(CgroupDriver::Systemd, parent, ID).unwrap_err();
            assert!(
                matches!(err, SandboxError::InvalidConfig(_)),
                "{parent}: {err}"
            );
            let status = err.into_status("default/web");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            for named in ["default/web", parent, "systemd"] {
                assert!(
                    status.message().contains(named),
                    "{parent}: {}",
                    status.message()
                );
            }
        }
    }

    #[test]
    fn pod_cgroupfs_paths() {
        assert_eq!(
            path("/berth/p", "p", CgroupDriver::Cgroupfs)
                .unwrap()
                .as_path(),
            Path::new("/berth/p")
        );
        assert!(path("/berth/../x", "p", CgroupDriver::Cgroupfs).is_err());
        assert!(path("a--b.slice", "p", CgroupDriver::Systemd).is_err());
    }
}
