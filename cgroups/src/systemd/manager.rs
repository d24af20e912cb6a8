//! [`SystemdManager`]: a container's cgroup as a systemd unit, as runc's and crun's systemd
//! drivers do it. systemd creates, limits and removes the unit's cgroup; berth writes the files
//! systemd has no property for into it (`Delegate=yes` makes the subtree the container's), and
//! reads stats, freezes and kills through the cgroup files like the cgroupfs driver.
//!
//! A scope needs a process to exist, so the unit is started when the first process is added
//! ([`CgroupManager::add_task`]), with the resources [`CgroupManager::apply`] was given before:
//! the container's init never runs outside its limits, and berth-runtime connects to D-Bus (whose
//! client runs threads) only after it forked the container's first process.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use super::client::{Systemd, TransientUnit};
use super::properties;
use crate::setup::{CgroupMounts, CgroupSetup};
use crate::stats::Stats;
use crate::v2::resources::plan;
use crate::{CgroupError, CgroupManager, CgroupPath, FreezerState, SystemdUnit, V2Manager};

/// Where the unit is in its life, as far as this manager knows.
#[derive(Debug)]
enum Phase {
    /// Not started: the resources to start it with.
    Pending(Option<Box<LinuxResources>>),
    /// Started (by this manager, or before: a container's later commands).
    Started,
}

/// The systemd driver's [`CgroupManager`] for one unit (cgroup v2 only).
pub struct SystemdManager {
    unit: SystemdUnit,
    fs: V2Manager,
    phase: Mutex<Phase>,
    client: Mutex<Option<Systemd>>,
}

impl std::fmt::Debug for SystemdManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemdManager")
            .field("unit", &self.unit)
            .field("dir", &self.fs.dir())
            .finish_non_exhaustive()
    }
}

impl SystemdManager {
    /// The manager of a unit to be started by the first [`CgroupManager::add_task`].
    pub fn new(unit: SystemdUnit) -> Result<Self, CgroupError> {
        Self::build(unit, Phase::Pending(None))
    }

    /// The manager of a unit started earlier (a container's `update`, `delete`…).
    pub fn existing(unit: SystemdUnit) -> Result<Self, CgroupError> {
        Self::build(unit, Phase::Started)
    }

    fn build(unit: SystemdUnit, phase: Phase) -> Result<Self, CgroupError> {
        let mounts = CgroupMounts::from_proc()?;
        if mounts.setup()? != CgroupSetup::Unified {
            return Err(CgroupError::UnsupportedResource {
                controller: "systemd",
                what: format!(
                    "unit {unit}: berth's systemd cgroup driver needs a pure cgroup v2 host; \
                     use the cgroupfs driver on cgroup v1"
                ),
            });
        }
        let path = CgroupPath::from_spec(
            Some(&unit.cgroup_path()?.to_string_lossy()),
            &unit.name,
            false,
        )?;
        let fs = V2Manager::with_mounts(&mounts, &[], &path)?;
        Ok(Self {
            unit,
            fs,
            phase: Mutex::new(phase),
            client: Mutex::new(None),
        })
    }

    /// The unit.
    pub fn unit(&self) -> &SystemdUnit {
        &self.unit
    }

    fn client(&self) -> Result<MutexGuard<'_, Option<Systemd>>, CgroupError> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_none() {
            *client = Some(Systemd::connect()?);
        }
        Ok(client)
    }

    fn with_client<T>(
        &self,
        f: impl FnOnce(&Systemd) -> Result<T, CgroupError>,
    ) -> Result<T, CgroupError> {
        let guard = self.client()?;
        f(guard.as_ref().expect("connected above"))
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the unit holding `pid` (a scope) or, for a slice, starts it and moves `pid` in.
    fn start(&self, pid: Pid, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let props = match resources {
            Some(r) => properties::from_writes(&plan(r, |_| true)?)?,
            None => Vec::new(),
        };
        let pid_u32 = u32::try_from(pid.as_raw()).map_err(|_| CgroupError::InvalidResource {
            what: "pid",
            reason: format!("{pid} is not a process id"),
        })?;
        let unit = TransientUnit {
            slice: self.unit.slice.clone(),
            description: format!("berth container {}", self.unit.name),
            pids: if self.unit.is_slice() {
                Vec::new()
            } else {
                vec![pid_u32]
            },
            delegate: true,
            resources: props,
        };
        tracing::debug!(unit = %self.unit, slice = %self.unit.slice, %pid, "starting transient unit");
        self.with_client(|c| {
            let mut unit = unit;
            if c.version() < properties::OOM_POLICY_SINCE
                && unit.resources.iter().any(|p| p.name == "OOMPolicy")
            {
                tracing::warn!(
                    unit = %self.unit,
                    systemd = c.version(),
                    "systemd before 253 takes no OOMPolicy for a scope: memory.oom.group is \
                     written to the file, and systemd resets it to 0 when it reloads"
                );
                unit.resources.retain(|p| p.name != "OOMPolicy");
            }
            c.start_transient_unit(&self.unit.name, &unit)
        })?;
        // systemd enabled the controllers it knows for the delegated unit; the others
        // (hugetlb, rdma, misc) are enabled down to it as the cgroupfs driver does (runc's
        // CreateCgroupPath does the same).
        self.fs.create()?;
        if self.unit.is_slice() {
            self.fs.add_task(pid)?;
        }
        if let Some(r) = resources {
            self.fs.apply(r)?;
        }
        Ok(())
    }
}

impl CgroupManager for SystemdManager {
    /// Nothing yet: the unit starts with its first process.
    fn create(&self) -> Result<(), CgroupError> {
        Ok(())
    }

    fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        let mut phase = self.phase();
        match &*phase {
            Phase::Started => self.fs.add_task(pid),
            Phase::Pending(resources) => {
                self.start(pid, resources.as_deref())?;
                *phase = Phase::Started;
                Ok(())
            }
        }
    }

    /// Before the unit started: kept for its start. After: the unit's properties, then every
    /// file (systemd's and the others).
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let mut phase = self.phase();
        match &mut *phase {
            Phase::Pending(pending) => {
                // Checked now, so that a bad value fails `create`, not the first add_task.
                properties::from_writes(&plan(resources, |_| true)?)?;
                *pending = Some(Box::new(resources.clone()));
                Ok(())
            }
            Phase::Started => {
                // What cpu.max and memory.swap.max share with values this update leaves out
                // comes from the files, as the cgroupfs driver does.
                let full = self.fs.with_current_limits(resources)?;
                let mut props = properties::from_writes(&plan(&full, |_| true)?)?;
                // A unit's OOMPolicy is set when it starts; the file carries a change.
                props.retain(|p| p.name != "OOMPolicy");
                self.with_client(|c| c.set_unit_properties(&self.unit.name, &props))?;
                self.fs.apply(resources)
            }
        }
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.fs.freeze()
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.fs.thaw()
    }

    fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        self.fs.freezer_state()
    }

    fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        self.fs.pids()
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        self.fs.stats()
    }

    fn read_resources(&self, unified: &[String]) -> Result<LinuxResources, CgroupError> {
        self.fs.read_resources(unified)
    }

    fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        self.fs.oom_kill_count()
    }

    fn kill_all(&self, sig: Signal) -> Result<(), CgroupError> {
        self.fs.kill_all(sig)
    }

    /// Stops the unit (systemd kills what is left and removes its cgroup), forgets it if it
    /// failed, and removes whatever cgroup directory is still there.
    fn remove(&self) -> Result<(), CgroupError> {
        self.with_client(|c| {
            c.stop_unit(&self.unit.name)?;
            c.reset_failed_unit(&self.unit.name)
        })?;
        self.fs.remove()
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.fs.paths()
    }
}
