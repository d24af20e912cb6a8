//! cgroup v1 (legacy and hybrid hosts): one directory per mounted hierarchy, one module per
//! controller. In hybrid mode the cgroup is also created in the cgroup2 hierarchy (so that
//! process tracking by cgroup2 works, as runc does), and hugetlb is set there when the host has
//! it on cgroup2 rather than v1.

mod blkio;
mod cpu;
mod cpuset;
mod devices;
mod freezer;
mod hugetlb;
mod memory;
mod network;
pub(crate) mod pids;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::setup::{CgroupMounts, OwnCgroup};
use crate::stats::Stats;
use crate::{cgroupfs, signal_all, CgroupError, CgroupManager, CgroupPath, FreezerState};

/// Named (controller-less) v1 hierarchies we join, as runc does.
const JOINED_NAMED_HIERARCHIES: &[&str] = &["name=systemd"];

/// One v1 hierarchy and this cgroup's directory in it.
#[derive(Debug, Clone)]
struct Hierarchy {
    controllers: Vec<String>,
    mount_point: PathBuf,
    dir: PathBuf,
}

/// The cgroup2 side of a hybrid host.
#[derive(Debug, Clone)]
struct UnifiedSide {
    mount_point: PathBuf,
    dir: PathBuf,
}

/// Manager of a cgroup on a v1 or hybrid host.
#[derive(Debug, Clone)]
pub struct V1Manager {
    path: CgroupPath,
    hierarchies: Vec<Hierarchy>,
    unified: Option<UnifiedSide>,
}

impl V1Manager {
    /// The manager for `path` on this host's mounts (from /proc/self/mountinfo and
    /// /proc/self/cgroup).
    pub fn new(path: &CgroupPath) -> Result<Self, CgroupError> {
        let mounts = CgroupMounts::from_proc()?;
        let own = crate::setup::own_cgroups()?;
        Self::with_mounts(&mounts, &own, path)
    }

    /// The manager for `path` on explicit mounts (tests point these at a temp dir). `own` is the
    /// caller's /proc/self/cgroup, needed only for a path relative to the caller's cgroup.
    pub fn with_mounts(
        mounts: &CgroupMounts,
        own: &[OwnCgroup],
        path: &CgroupPath,
    ) -> Result<Self, CgroupError> {
        let own_in = |controllers: &[String]| -> Result<Option<&Path>, CgroupError> {
            if !path.is_relative_to_own() {
                return Ok(None);
            }
            own.iter()
                .find(|o| {
                    o.controllers.len() == controllers.len()
                        && controllers.iter().all(|c| o.controllers.contains(c))
                })
                .map(|o| Some(o.path.as_path()))
                .ok_or_else(|| CgroupError::NotFound {
                    what: format!(
                        "own cgroup for {} in /proc/self/cgroup",
                        controllers.join(",")
                    ),
                })
        };
        let mut hierarchies = Vec::new();
        for m in &mounts.v1 {
            let joined = m
                .controllers
                .iter()
                .any(|c| !c.starts_with("name=") || JOINED_NAMED_HIERARCHIES.contains(&c.as_str()));
            if !joined {
                continue;
            }
            hierarchies.push(Hierarchy {
                controllers: m.controllers.clone(),
                mount_point: m.mount_point.clone(),
                dir: path.in_hierarchy(&m.mount_point, &m.root, own_in(&m.controllers)?),
            });
        }
        if hierarchies.is_empty() {
            return Err(CgroupError::NotFound {
                what: "cgroup v1 hierarchies".into(),
            });
        }
        let unified = match &mounts.unified {
            Some(u) => Some(UnifiedSide {
                mount_point: u.mount_point.clone(),
                dir: path.in_hierarchy(&u.mount_point, &u.root, own_in(&[])?),
            }),
            None => None,
        };
        Ok(Self {
            path: path.clone(),
            hierarchies,
            unified,
        })
    }

    /// The cgroup's directory for `controller` ("memory", "cpu", "name=systemd"...), if that
    /// controller is mounted.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    /// The cgroup's directory in the cgroup2 hierarchy of a hybrid host.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.dir.as_path())
    }

    /// The cgroup path this manager was made for.
    pub fn cgroup_path(&self) -> &CgroupPath {
        &self.path
    }

    /// The directory of a controller that resources were requested for.
    fn required_dir(&self, controller: &'static str, what: &str) -> Result<&Path, CgroupError> {
        self.controller_dir(controller)
            .ok_or_else(|| CgroupError::UnsupportedResource {
                controller,
                what: format!("{what}: the {controller} controller is not mounted (cgroup v1)"),
            })
    }

    fn freezer_dir(&self) -> Result<&Path, CgroupError> {
        self.controller_dir("freezer")
            .ok_or_else(|| CgroupError::NotFound {
                what: "the freezer controller (cgroup v1)".into(),
            })
    }
}

impl CgroupManager for V1Manager {
    fn create(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            if h.controllers.iter().any(|c| c == "cpuset") {
                cpuset::create_with_parents(&h.mount_point, &h.dir)?;
            } else {
                cgroupfs::create_dir_all(&h.dir)?;
            }
        }
        if let Some(u) = &self.unified {
            cgroupfs::create_dir_all(&u.dir)?;
        }
        Ok(())
    }

    fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        let value = pid.as_raw().to_string();
        for dir in self.paths() {
            cgroupfs::write(&dir, "cgroup.procs", &value)?;
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        // runc's order of v1 subsystems.
        if let Some(cpu) = r.cpu().as_ref().filter(|c| cpuset::requested(c)) {
            cpuset::apply(self.required_dir("cpuset", "cpus/mems")?, cpu)?;
        }
        if let Some(rules) = r.devices() {
            devices::apply(self.required_dir("devices", "device rules")?, rules)?;
        }
        if let Some(mem) = r.memory().as_ref().filter(|m| memory::requested(m)) {
            memory::apply(self.required_dir("memory", "memory limits")?, mem)?;
        }
        if let Some(cpu) = r.cpu().as_ref().filter(|c| cpu::requested(c)) {
            cpu::apply(self.required_dir("cpu", "cpu shares/quota")?, cpu)?;
        }
        if let Some(p) = r.pids() {
            pids::apply(self.required_dir("pids", "pids limit")?, p)?;
        }
        if let Some(b) = r.block_io().as_ref().filter(|b| blkio::requested(b)) {
            blkio::apply(self.required_dir("blkio", "block I/O limits")?, b)?;
        }
        if let Some(limits) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
            match (self.controller_dir("hugetlb"), &self.unified) {
                (Some(dir), _) => hugetlb::apply(dir, limits)?,
                (None, Some(u)) => hugetlb::apply_unified(&u.mount_point, &u.dir, limits)?,
                (None, None) => {
                    self.required_dir("hugetlb", "huge page limits")?;
                }
            }
        }
        if let Some(net) = r.network() {
            if let Some(prios) = net.priorities().as_ref().filter(|p| !p.is_empty()) {
                network::apply_prio(
                    self.required_dir("net_prio", "interface priorities")?,
                    prios,
                )?;
            }
            // Class id 0 is "no class" (a new cgroup's value): nothing is asked, so a host
            // without net_cls runs the container, as with runc.
            if let Some(class_id) = net.class_id().filter(|id| *id != 0) {
                network::apply_classid(self.required_dir("net_cls", "class id")?, class_id)?;
            }
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
            let dir = self.required_dir("rdma", "rdma limits")?;
            for line in crate::v2::resources::rdma_lines(rdma) {
                cgroupfs::write(dir, "rdma.max", &line)?;
            }
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::UnsupportedResource {
                controller: "unified",
                what:
                    "linux.resources.unified needs cgroup v2; this host runs cgroup v1 controllers"
                        .into(),
            });
        }
        Ok(())
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        freezer::freeze(self.freezer_dir()?)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        freezer::thaw(self.freezer_dir()?)
    }

    fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        freezer::state(self.freezer_dir()?)
    }

    fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        let preferred = [
            "freezer",
            "pids",
            "memory",
            "devices",
            "cpu",
            "name=systemd",
        ];
        let dir = preferred
            .iter()
            .find_map(|c| self.controller_dir(c))
            .or_else(|| self.hierarchies.first().map(|h| h.dir.as_path()))
            .ok_or_else(|| CgroupError::NotFound {
                what: "a cgroup v1 hierarchy".into(),
            })?;
        Ok(cgroupfs::procs_recursive(dir)?
            .into_iter()
            .map(Pid::from_raw)
            .collect())
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        if let Some(dir) = self.controller_dir("cpuacct") {
            cpu::cpuacct_stats(dir, &mut s.cpu)?;
        }
        if let Some(dir) = self.controller_dir("cpu") {
            cpu::throttling_stats(dir, &mut s.cpu)?;
        }
        if let Some(dir) = self.controller_dir("memory") {
            s.memory = memory::stats(dir)?;
        }
        if let Some(dir) = self.controller_dir("pids") {
            s.pids = pids::stats(dir)?;
        }
        if let Some(dir) = self.controller_dir("blkio") {
            s.blkio = blkio::stats(dir)?;
        }
        if let Some(dir) = ["cpu", "cpuacct", "pids", "memory"]
            .iter()
            .find_map(|c| self.controller_dir(c))
        {
            s.procs = cgroupfs::procs(dir)?;
        }
        // For the metrics only: the CRI's psi fields (cpu.psi, memory.psi, io.psi) stay
        // `None` on v1, as containerd leaves them.
        if let Some(u) = &self.unified {
            s.pressure = crate::v2::psi::read(&u.dir);
        }
        match (self.controller_dir("hugetlb"), &self.unified) {
            (Some(dir), _) => s.hugetlb = hugetlb::stats(dir)?,
            (None, Some(u)) => s.hugetlb = crate::v2::resources::hugetlb_stats(&u.dir)?,
            (None, None) => {}
        }
        Ok(s)
    }

    /// v1 has no `unified` files: `unified` is not read.
    fn read_resources(&self, _unified: &[String]) -> Result<LinuxResources, CgroupError> {
        crate::read_back::read_v1(&crate::read_back::V1Dirs {
            cpu: self.controller_dir("cpu"),
            cpuset: self.controller_dir("cpuset"),
            memory: self.controller_dir("memory"),
            hugetlb: self.controller_dir("hugetlb"),
            unified: self.unified_dir(),
        })
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        let dir = self
            .controller_dir("memory")
            .ok_or_else(|| CgroupError::NotFound {
                what: "the memory controller (cgroup v1)".into(),
            })?;
        memory::oom_kill_count(dir)
    }

    fn kill_all(&self, sig: Signal) -> Result<(), CgroupError> {
        let frozen = match self.controller_dir("freezer") {
            Some(dir) => freezer::freeze(dir).is_ok(),
            None => false,
        };
        let result = self.pids().and_then(|pids| signal_all(&pids, sig));
        if frozen {
            freezer::thaw(self.freezer_dir()?)?;
        }
        result
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for dir in self.paths() {
            if let Err(e) = cgroupfs::remove_tree(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.hierarchies.iter().map(|h| h.dir.clone()).collect();
        if let Some(u) = &self.unified {
            v.push(u.dir.clone());
        }
        v
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
