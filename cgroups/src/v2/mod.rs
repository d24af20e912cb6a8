//! cgroup v2 (unified hosts): one directory; controllers enabled from the root down through
//! cgroup.subtree_control; devices via an eBPF filter.

mod bpf_syscall;
pub mod devices_bpf;
pub(crate) mod psi;
pub mod resources;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::cgroupfs::{self, FlatKeyed};
use crate::devices::DeviceRule;
use crate::setup::{CgroupMounts, OwnCgroup};
use crate::stats::Stats;
use crate::{signal_all, CgroupError, CgroupManager, CgroupPath, FreezerState};

pub use bpf_syscall::attached_device_programs;

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Manager of a cgroup in a cgroup2 hierarchy.
#[derive(Debug, Clone)]
pub struct V2Manager {
    path: CgroupPath,
    root: PathBuf,
    dir: PathBuf,
}

impl V2Manager {
    /// The manager for `path` on this host's cgroup2 mount.
    pub fn new(path: &CgroupPath) -> Result<Self, CgroupError> {
        let mounts = CgroupMounts::from_proc()?;
        let own = crate::setup::own_cgroups()?;
        Self::with_mounts(&mounts, &own, path)
    }

    /// The manager for `path` on explicit mounts; `own` is the caller's /proc/self/cgroup,
    /// needed only for a path relative to the caller's cgroup.
    pub fn with_mounts(
        mounts: &CgroupMounts,
        own: &[OwnCgroup],
        path: &CgroupPath,
    ) -> Result<Self, CgroupError> {
        let u = mounts
            .unified
            .as_ref()
            .ok_or_else(|| CgroupError::NotFound {
                what: "a cgroup2 mount".into(),
            })?;
        let own_path = if path.is_relative_to_own() {
            let o = own
                .iter()
                .find(|o| o.controllers.is_empty())
                .ok_or_else(|| CgroupError::NotFound {
                    what: "own cgroup2 cgroup (\"0::\") in /proc/self/cgroup".into(),
                })?;
            Some(o.path.as_path())
        } else {
            None
        };
        Ok(Self {
            path: path.clone(),
            root: u.mount_point.clone(),
            dir: path.in_hierarchy(&u.mount_point, &u.root, own_path),
        })
    }

    /// The manager for `path` under an explicit cgroup2 root directory (a relative path is
    /// taken relative to `root`). Tests use a temp dir laid out like cgroup2.
    pub fn with_root(root: &Path, path: &CgroupPath) -> Self {
        Self {
            path: path.clone(),
            root: root.to_owned(),
            dir: path.in_hierarchy(root, Path::new("/"), None),
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup path this manager was made for.
    pub fn cgroup_path(&self) -> &CgroupPath {
        &self.path
    }

    fn events_frozen(&self) -> Result<bool, CgroupError> {
        Ok(FlatKeyed::read(&self.dir, "cgroup.events")?.get("frozen") == Some(1))
    }

    /// `r` completed from the cgroup where v2 joins two OCI values in one file: cpu.max holds the
    /// quota and the period, memory.swap.max is memory+swap minus the memory limit. A period
    /// without a quota keeps the current quota (instead of "max PERIOD", which lifted it), and
    /// memory+swap without a memory limit is converted against the current memory.max (instead
    /// of failing), as v1's separate files and runc's update (from its stored configuration)
    /// do. In a new cgroup the current values are the kernel's defaults, "max".
    pub(crate) fn with_current_limits(
        &self,
        r: &LinuxResources,
    ) -> Result<LinuxResources, CgroupError> {
        let current = |file: &str| -> Result<Option<i64>, CgroupError> {
            let content = cgroupfs::read_opt(&self.dir, file)?.unwrap_or_default();
            let Some(first) = content.split_whitespace().next() else {
                return Ok(None);
            };
            let v = cgroupfs::parse_u64(&self.dir.join(file), first)?;
            Ok(Some(i64::try_from(v).unwrap_or(-1)))
        };
        let mut r = r.clone();
        if let Some(mut cpu) = r.cpu().clone() {
            if cpu.quota().is_none() && cpu.period().is_some_and(|p| p != 0) {
                if let Some(quota) = current("cpu.max")? {
                    cpu.set_quota(Some(quota));
                    r.set_cpu(Some(cpu));
                }
            }
        }
        if let Some(mut mem) = *r.memory() {
            if mem.limit().is_none() && mem.swap().is_some_and(|s| s > 0) {
                if let Some(limit) = current("memory.max")? {
                    mem.set_limit(Some(limit));
                    r.set_memory(Some(mem));
                }
            }
        }
        Ok(r)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        cgroupfs::write(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let start = Instant::now();
        let mut delay = Duration::from_micros(200);
        loop {
            if self.events_frozen()? == frozen {
                return Ok(());
            }
            if start.elapsed() > FREEZE_TIMEOUT {
                if frozen {
                    let _ = cgroupfs::write(&self.dir, "cgroup.freeze", "0");
                }
                return Err(CgroupError::FreezeTimeout {
                    path: self.dir.clone(),
                    wanted: if frozen { "FROZEN" } else { "THAWED" },
                    last: format!("{:?}", self.freezer_state()?),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(10));
        }
    }
}

impl CgroupManager for V2Manager {
    fn create(&self) -> Result<(), CgroupError> {
        cgroupfs::create_dir_all(&self.dir)?;
        let available = cgroupfs::read_opt(&self.root, "cgroup.controllers")?.unwrap_or_default();
        let wanted: Vec<&str> = available.split_whitespace().collect();
        resources::enable_controllers(&self.root, &self.dir, &wanted)
    }

    fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        cgroupfs::write(&self.dir, "cgroup.procs", &pid.as_raw().to_string())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let writes = resources::plan(&self.with_current_limits(r)?, |f| {
            cgroupfs::exists(&self.dir, f)
        })?;
        for w in writes {
            cgroupfs::write(&self.dir, &w.file, &w.value)?;
        }
        if let Some(rules) = r.devices() {
            let rules = DeviceRule::from_oci_list(rules)?;
            devices_bpf::set_device_filter(&self.dir, &rules)?;
        }
        Ok(())
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        let path = self.dir.join("cgroup.freeze");
        let asked = cgroupfs::parse_u64(&path, &cgroupfs::read(&path)?)? == 1;
        Ok(match (asked, self.events_frozen()?) {
            (true, true) => FreezerState::Frozen,
            (true, false) => FreezerState::Freezing,
            (false, _) => FreezerState::Thawed,
        })
    }

    fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        Ok(cgroupfs::procs_recursive(&self.dir)?
            .into_iter()
            .map(Pid::from_raw)
            .collect())
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        stats::read(&self.dir)
    }

    fn read_resources(&self, unified: &[String]) -> Result<LinuxResources, CgroupError> {
        crate::read_back::read_v2(&self.dir, unified)
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        match cgroupfs::read_opt(&self.dir, "memory.events")? {
            Some(s) => {
                Ok(FlatKeyed::parse(&self.dir.join("memory.events"), &s)?.get_or_zero("oom_kill"))
            }
            None => Err(CgroupError::NotFound {
                what: format!(
                    "{}/memory.events (memory controller not enabled)",
                    self.dir.display()
                ),
            }),
        }
    }

    fn kill_all(&self, sig: Signal) -> Result<(), CgroupError> {
        if sig == Signal::SIGKILL && cgroupfs::exists(&self.dir, "cgroup.kill") {
            return cgroupfs::write(&self.dir, "cgroup.kill", "1");
        }
        let frozen = self.freeze().is_ok();
        let result = self.pids().and_then(|pids| signal_all(&pids, sig));
        if frozen {
            self.thaw()?;
        }
        result
    }

    fn remove(&self) -> Result<(), CgroupError> {
        cgroupfs::remove_tree(&self.dir)
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
