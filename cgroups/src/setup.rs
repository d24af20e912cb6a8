//! Which cgroup layout the host has, found from /proc/self/mountinfo: the v1 hierarchies (with
//! their controllers, e.g. "cpu,cpuacct" co-mounted), the cgroup2 mount, and the caller's own
//! cgroup in each (from /proc/self/cgroup) for relative cgroups paths.

use std::path::{Path, PathBuf};

use crate::{cgroupfs, CgroupError};

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupSetup {
    /// Only cgroup v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified) for process tracking.
    Hybrid,
    /// Only cgroup v2.
    Unified,
}

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Where it is mounted, e.g. /sys/fs/cgroup/cpu,cpuacct.
    pub mount_point: PathBuf,
    /// The cgroup of the hierarchy shown at the mount point ("/" unless in a nested container).
    pub root: PathBuf,
    /// Its controllers, e.g. ["cpu", "cpuacct"]; a named hierarchy appears as "name=systemd".
    pub controllers: Vec<String>,
}

/// The cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnifiedMount {
    /// Where it is mounted, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified.
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point ("/" unless in a nested container).
    pub root: PathBuf,
}

/// Every cgroup mount of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// v1 hierarchies, one per distinct controller set (bind mounts of the same one are skipped).
    pub v1: Vec<V1Mount>,
    /// The cgroup2 mount, if any.
    pub unified: Option<UnifiedMount>,
}

/// Mount options of cgroup v1 that are not controllers.
const NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "xattr",
    "noprefix",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
    "none",
];

impl CgroupMounts {
    /// Reads /proc/self/mountinfo.
    pub fn from_proc() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        Self::parse(path, &cgroupfs::read(path)?)
    }

    /// Parses mountinfo content (`path` is only used in error messages).
    pub fn parse(path: &Path, mountinfo: &str) -> Result<Self, CgroupError> {
        let mut mounts = Self::default();
        for line in mountinfo.lines().filter(|l| !l.trim().is_empty()) {
            let bad = |reason| CgroupError::Parse {
                path: path.to_owned(),
                content: line.to_owned(),
                reason,
            };
            let (pre, post) = line
                .split_once(" - ")
                .ok_or_else(|| bad("no \" - \" separator"))?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 6 || post.len() < 3 {
                return Err(bad("too few fields"));
            }
            let root = PathBuf::from(unescape(pre[3]));
            let mount_point = PathBuf::from(unescape(pre[4]));
            match post[0] {
                "cgroup2" if mounts.unified.is_none() => {
                    mounts.unified = Some(UnifiedMount { mount_point, root });
                }
                "cgroup" => {
                    let controllers: Vec<String> = post[2]
                        .split(',')
                        .filter(|o| {
                            !NON_CONTROLLER_OPTIONS.contains(o) && !o.starts_with("release_agent=")
                        })
                        .map(str::to_owned)
                        .collect();
                    if controllers.is_empty()
                        || mounts.v1.iter().any(|m| m.controllers == controllers)
                    {
                        continue;
                    }
                    mounts.v1.push(V1Mount {
                        mount_point,
                        root,
                        controllers,
                    });
                }
                _ => {}
            }
        }
        Ok(mounts)
    }

    /// The layout these mounts make.
    pub fn setup(&self) -> Result<CgroupSetup, CgroupError> {
        let has_v1_controllers = self
            .v1
            .iter()
            .any(|m| m.controllers.iter().any(|c| !c.starts_with("name=")));
        match (has_v1_controllers, self.unified.is_some()) {
            (true, true) => Ok(CgroupSetup::Hybrid),
            (true, false) => Ok(CgroupSetup::Legacy),
            (false, true) => Ok(CgroupSetup::Unified),
            (false, false) => Err(CgroupError::NotFound {
                what: "cgroup mounts in /proc/self/mountinfo".into(),
            }),
        }
    }

    /// The v1 hierarchy that holds `controller` (e.g. "memory" or "name=systemd").
    pub fn v1_mount(&self, controller: &str) -> Option<&V1Mount> {
        self.v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detects the host's layout from /proc/self/mountinfo.
pub fn detect_setup() -> Result<CgroupSetup, CgroupError> {
    CgroupMounts::from_proc()?.setup()
}

/// One line of /proc/<pid>/cgroup: the controllers of a hierarchy and the process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroup {
    /// Controllers ("cpu", "cpuacct", "name=systemd"); empty for the cgroup2 line "0::/...".
    pub controllers: Vec<String>,
    /// The cgroup path, relative to the hierarchy's root (starts with '/').
    pub path: PathBuf,
}

/// Parses /proc/<pid>/cgroup content.
pub fn parse_proc_cgroup(path: &Path, content: &str) -> Result<Vec<OwnCgroup>, CgroupError> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(_id), Some(ctrls), Some(p)) => Ok(OwnCgroup {
                    controllers: ctrls
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    path: PathBuf::from(p),
                }),
                _ => Err(CgroupError::Parse {
                    path: path.to_owned(),
                    content: line.to_owned(),
                    reason: "expected \"id:controllers:path\"",
                }),
            }
        })
        .collect()
}

/// The calling process's cgroups, from /proc/self/cgroup.
pub fn own_cgroups() -> Result<Vec<OwnCgroup>, CgroupError> {
    let path = Path::new("/proc/self/cgroup");
    parse_proc_cgroup(path, &cgroupfs::read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THIS_MACHINE: &str = include_str!("../tests/fixtures/mountinfo-hybrid-this-machine");

    const UNIFIED: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const LEGACY_COMOUNTED: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:16 - cgroup cgroup rw,net_cls,net_prio
36 30 0:32 /docker/abc /sys/fs/cgroup/memory rw,nosuid shared:17 - cgroup cgroup rw,memory
37 30 0:32 /docker/abc /mnt/with\\040space rw,nosuid shared:17 - cgroup cgroup rw,memory
";

    #[test]
    fn this_machine_is_hybrid() {
        let m = CgroupMounts::parse(Path::new("fixture"), THIS_MACHINE).unwrap();
        assert_eq!(m.setup().unwrap(), CgroupSetup::Hybrid);
        assert_eq!(
            m.unified.as_ref().unwrap().mount_point,
            Path::new("/sys/fs/cgroup/unified")
        );
        let mem = m.v1_mount("memory").unwrap();
        assert_eq!(mem.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(mem.root, Path::new("/"));
        assert!(m.v1_mount("name=systemd").is_some());
        assert!(m.v1_mount("net_cls").is_none());
        assert!(m.v1_mount("hugetlb").is_none());
        assert_eq!(m.v1.len(), 9);
    }

    #[test]
    fn unified_only() {
        let m = CgroupMounts::parse(Path::new("fixture"), UNIFIED).unwrap();
        assert_eq!(m.setup().unwrap(), CgroupSetup::Unified);
        assert_eq!(m.unified.unwrap().mount_point, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn legacy_with_comounted_controllers_and_nested_root() {
        let m = CgroupMounts::parse(Path::new("fixture"), LEGACY_COMOUNTED).unwrap();
        assert_eq!(m.setup().unwrap(), CgroupSetup::Legacy);
        let cpu = m.v1_mount("cpuacct").unwrap();
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        let sd = m.v1_mount("name=systemd").unwrap();
        assert_eq!(sd.controllers, vec!["name=systemd"]);
        let mem = m.v1_mount("memory").unwrap();
        assert_eq!(mem.root, Path::new("/docker/abc"));
        // The bind mount of the same hierarchy is not listed twice.
        assert_eq!(
            m.v1.iter().filter(|v| v.controllers == ["memory"]).count(),
            1
        );
        assert_eq!(
            m.v1_mount("net_prio").unwrap().controllers,
            vec!["net_cls", "net_prio"]
        );
    }

    #[test]
    fn named_hierarchy_alone_is_not_v1() {
        let only_named = "31 30 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        let m = CgroupMounts::parse(Path::new("fixture"), only_named).unwrap();
        assert!(matches!(m.setup(), Err(CgroupError::NotFound { .. })));
        assert!(CgroupMounts::parse(Path::new("f"), "garbage line\n").is_err());
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\"), "/trailing\\");
    }

    #[test]
    fn proc_self_cgroup() {
        let content = include_str!("../tests/fixtures/proc-self-cgroup-this-machine");
        let own = parse_proc_cgroup(Path::new("fixture"), content).unwrap();
        let mem = own.iter().find(|o| o.controllers == ["memory"]).unwrap();
        assert!(mem.path.starts_with("/"));
        let v2 = own.iter().find(|o| o.controllers.is_empty()).unwrap();
        assert_eq!(v2.path, Path::new("/"));
        let comounted = parse_proc_cgroup(Path::new("f"), "4:cpu,cpuacct:/a/b\n").unwrap();
        assert_eq!(comounted[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(comounted[0].path, Path::new("/a/b"));
    }
}
