//! berthd's cgroup driver: `cgroupfs` (berth and the OCI runtime write cgroupfs under
//! `/berth/<pod>`, or the kubelet's cgroup_parent) or `systemd` (the OCI runtime, told
//! `--systemd-cgroup`, makes each container a transient scope unit `berth-<id>.scope` in the
//! pod's slice). Chosen once at start: an explicit `[cgroup] driver` wins, else systemd where
//! systemd is PID 1 on a cgroup v2 host (as kubeadm configures the kubelet), cgroupfs elsewhere.
//!
//! A container keeps the driver it was created under whatever a restarted berthd is configured
//! with: its record's cgroupsPath says which ([`CgroupDriver::of_cgroups_path`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// Its name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }

    pub fn is_systemd(self) -> bool {
        self == CgroupDriver::Systemd
    }

    /// The OCI `linux.cgroupsPath` of container `id` (the pause too) in the pod cgroup
    /// `parent`: `<parent>/<id>` under cgroupfs; under systemd, with `parent` a slice, the
    /// scope `berth-<id>.scope` in it (`<parent>:berth:<id>`). An empty parent (a record from
    /// before pods always had one) gives `/berth/<id>` or `system.slice:berth:<id>`.
    pub fn cgroups_path(self, parent: &str, id: &str) -> String {
        let parent = parent.trim_end_matches('/');
        match (self, parent.is_empty()) {
            (CgroupDriver::Systemd, true) => format!("system.slice:berth:{id}"),
            (CgroupDriver::Systemd, false) => format!("{parent}:berth:{id}"),
            (CgroupDriver::Cgroupfs, true) => format!("/berth/{id}"),
            (CgroupDriver::Cgroupfs, false) => format!("{parent}/{id}"),
        }
    }

    /// The OCI runtime's global flags for a container under this driver: every runtime
    /// command (create, start, kill, delete, update, exec…) gets `--systemd-cgroup` under
    /// systemd, so that the runtime makes, changes and removes the container's scope unit.
    pub fn runtime_flags(self) -> &'static [&'static str] {
        match self {
            CgroupDriver::Systemd => &["--systemd-cgroup"],
            CgroupDriver::Cgroupfs => &[],
        }
    }

    /// The driver an OCI cgroupsPath was made for: `slice:prefix:name` is systemd's, anything
    /// else (berth's cgroupfs paths are absolute) cgroupfs's.
    pub fn of_cgroups_path(cgroups_path: &str) -> CgroupDriver {
        if !cgroups_path.starts_with('/') && cgroups_path.split(':').count() == 3 {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        }
    }

    /// The driver the OCI bundle at `bundle` was made for (its `linux.cgroupsPath`): for what
    /// a crash left without a record. None without a readable config.json.
    pub fn of_bundle(bundle: &Path) -> Option<CgroupDriver> {
        let spec = std::fs::read(bundle.join("config.json")).ok()?;
        let spec: serde_json::Value = serde_json::from_slice(&spec).ok()?;
        let path = spec.pointer("/linux/cgroupsPath")?.as_str()?;
        Some(CgroupDriver::of_cgroups_path(path))
    }
}

/// The two facts the default driver depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// systemd is PID 1 (sd_booted(3): `/run/systemd/system` is a directory).
    pub systemd_booted: bool,
    /// `/sys/fs/cgroup` is a cgroup2 file system (statfs magic CGROUP2_SUPER_MAGIC): a pure
    /// cgroup v2 host, not v1 or hybrid.
    pub cgroup2: bool,
}

impl HostFacts {
    /// Reads both facts from this host.
    pub fn probe() -> HostFacts {
        HostFacts {
            systemd_booted: berth_cgroups::systemd::booted(),
            cgroup2: nix::sys::statfs::statfs("/sys/fs/cgroup")
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC),
        }
    }
}

/// Why the driver in use is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// `[cgroup] driver` set it.
    Configured,
    /// Chosen from these facts.
    Detected(HostFacts),
}

impl Choice {
    pub fn reason(self) -> &'static str {
        match self {
            Choice::Configured => "set by [cgroup] driver",
            Choice::Detected(HostFacts {
                systemd_booted: true,
                cgroup2: true,
            }) => "systemd is PID 1 and /sys/fs/cgroup is cgroup v2",
            Choice::Detected(HostFacts {
                systemd_booted: false,
                cgroup2: true,
            }) => "systemd is not PID 1",
            Choice::Detected(HostFacts {
                systemd_booted: true,
                cgroup2: false,
            }) => "/sys/fs/cgroup is not cgroup v2 (v1 or hybrid)",
            Choice::Detected(HostFacts {
                systemd_booted: false,
                cgroup2: false,
            }) => "systemd is not PID 1 and /sys/fs/cgroup is not cgroup v2",
        }
    }
}

/// The driver to use: `configured` if set (the host is then not probed), else the default for
/// the host `probe` describes.
pub fn resolve(
    configured: Option<CgroupDriver>,
    probe: impl FnOnce() -> HostFacts,
) -> (CgroupDriver, Choice) {
    if let Some(driver) = configured {
        return (driver, Choice::Configured);
    }
    let facts = probe();
    let driver = if facts.systemd_booted && facts.cgroup2 {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    (driver, Choice::Detected(facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(systemd_booted: bool, cgroup2: bool) -> impl FnOnce() -> HostFacts {
        move || HostFacts {
            systemd_booted,
            cgroup2,
        }
    }

    #[test]
    fn default_is_systemd_only_under_systemd_on_cgroup_v2() {
        for (systemd_booted, cgroup2, want) in [
            (true, true, CgroupDriver::Systemd),
            (true, false, CgroupDriver::Cgroupfs),
            (false, true, CgroupDriver::Cgroupfs),
            (false, false, CgroupDriver::Cgroupfs),
        ] {
            let (driver, choice) = resolve(None, host(systemd_booted, cgroup2));
            assert_eq!(driver, want, "systemd {systemd_booted}, cgroup2 {cgroup2}");
            assert_eq!(
                choice,
                Choice::Detected(HostFacts {
                    systemd_booted,
                    cgroup2
                })
            );
            assert!(!choice.reason().is_empty());
        }
    }

    #[test]
    fn an_explicit_driver_wins_and_the_host_is_not_probed() {
        for driver in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
            let got = resolve(Some(driver), || panic!("probed despite an explicit driver"));
            assert_eq!(got, (driver, Choice::Configured));
        }
    }

    #[test]
    fn cgroups_paths_of_both_drivers() {
        use CgroupDriver::*;
        let slice = "kubepods-burstable-pod1.slice";
        assert_eq!(
            Systemd.cgroups_path(slice, "c1"),
            format!("{slice}:berth:c1")
        );
        assert_eq!(Systemd.cgroups_path("", "c1"), "system.slice:berth:c1");
        assert_eq!(
            Cgroupfs.cgroups_path("/kubepods/burstable/pod1/", "c1"),
            "/kubepods/burstable/pod1/c1"
        );
        assert_eq!(Cgroupfs.cgroups_path("/berth/p", "c1"), "/berth/p/c1");
        assert_eq!(Cgroupfs.cgroups_path("", "c1"), "/berth/c1");
        for driver in [Systemd, Cgroupfs] {
            let path = driver.cgroups_path("x.slice", "c1");
            assert_eq!(CgroupDriver::of_cgroups_path(&path), driver, "{path}");
        }
    }

    #[test]
    fn a_cgroups_path_tells_its_driver() {
        for systemd in [
            "kubepods-besteffort-pod1.slice:berth:abc",
            "berth-podabc.slice:berth:abc",
            "system.slice:berth:abc",
            ":berth:abc",
        ] {
            assert_eq!(
                CgroupDriver::of_cgroups_path(systemd),
                CgroupDriver::Systemd,
                "{systemd}"
            );
        }
        for cgroupfs in [
            "/berth/abc/abc",
            "/kubepods/burstable/pod1/abc",
            "/odd:name:x",
            "",
        ] {
            assert_eq!(
                CgroupDriver::of_cgroups_path(cgroupfs),
                CgroupDriver::Cgroupfs,
                "{cgroupfs}"
            );
        }
    }

    #[test]
    fn a_bundle_tells_its_driver() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CgroupDriver::of_bundle(dir.path()), None);
        let write = |path: &str| {
            let spec = serde_json::json!({"linux": {"cgroupsPath": path}});
            std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        };
        write("berth-podp1.slice:berth:p1");
        assert_eq!(
            CgroupDriver::of_bundle(dir.path()),
            Some(CgroupDriver::Systemd)
        );
        write("/berth/p1/p1");
        assert_eq!(
            CgroupDriver::of_bundle(dir.path()),
            Some(CgroupDriver::Cgroupfs)
        );
    }
}
