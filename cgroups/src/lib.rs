//! berth's cgroup manager for cgroup v1, hybrid and v2 hosts: the cgroupfs driver ([`v1`],
//! [`v2`]) and the systemd driver ([`systemd`], cgroup v2).
//!
//! ```no_run
//! use berth_cgroups::{manager, CgroupPath};
//! # fn main() -> Result<(), berth_cgroups::CgroupError> {
//! let path = CgroupPath::from_spec(Some("/berth/abc"), "abc", false)?;
//! let cg = manager(&path)?;
//! cg.create()?;
//! cg.add_task(nix::unistd::Pid::from_raw(1234))?;
//! # Ok(()) }
//! ```
//!
//! Layout: [`setup`] finds the mounts, [`path`] turns an OCI cgroupsPath into a cgroup path,
//! [`v1`] and [`v2`] implement [`CgroupManager`] (one module per controller), [`stats`] holds
//! the usage types. The only `unsafe` code is the bpf(2) wrapper in `v2::bpf_syscall`.

mod cgroupfs;
pub mod devices;
mod error;
pub mod path;
mod read_back;
pub mod setup;
pub mod stats;
pub mod systemd;
pub mod v1;
pub mod v2;

use std::path::PathBuf;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

pub use error::CgroupError;
pub use path::{CgroupPath, SystemdUnit};
pub use read_back::cpu_weight_to_shares;
pub use setup::{detect_setup, CgroupSetup};
pub use stats::Stats;
pub use v1::V1Manager;
pub use v2::V2Manager;

/// State of the freezer of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FreezerState {
    /// Processes run.
    Thawed,
    /// Freezing was asked for and is not complete yet.
    Freezing,
    /// Every process is frozen.
    Frozen,
}

/// The operations the OCI runtime and berthd need on a container's cgroup. Implemented for
/// cgroup v1/hybrid ([`V1Manager`]) and v2 ([`V2Manager`]); a trait so that callers can be
/// tested with a fake.
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// Creates the cgroup in every hierarchy (v1 cpuset: copies cpus/mems from the parent when
    /// empty; v2: enables the available controllers in the ancestors' subtree_control).
    fn create(&self) -> Result<(), CgroupError>;

    /// Moves process `pid` into the cgroup in every hierarchy (including the cgroup2 one in
    /// hybrid mode).
    fn add_task(&self, pid: Pid) -> Result<(), CgroupError>;

    /// Applies OCI `linux.resources` (at creation, and by `update` on a running container).
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;

    /// Freezes every process of the cgroup and waits (bounded) until they are frozen.
    fn freeze(&self) -> Result<(), CgroupError>;

    /// Thaws the cgroup and waits (bounded) until it is thawed.
    fn thaw(&self) -> Result<(), CgroupError>;

    /// The freezer's current state.
    fn freezer_state(&self) -> Result<FreezerState, CgroupError>;

    /// Every process of the cgroup and its sub-cgroups.
    fn pids(&self) -> Result<Vec<Pid>, CgroupError>;

    /// Resource usage.
    fn stats(&self) -> Result<Stats, CgroupError>;

    /// The limits in force now, read back from the cgroup's files (not what was last applied):
    /// cpu shares (v2: from cpu.weight), CFS quota and period, cpuset cpus and mems, memory
    /// and memory+swap limits, huge page limits, and (v2) the files named in `unified` that
    /// exist. Unlimited reads as -1; a missing controller leaves its fields unset.
    fn read_resources(&self, unified: &[String]) -> Result<LinuxResources, CgroupError>;

    /// How many processes the OOM killer killed in this cgroup.
    fn oom_kill_count(&self) -> Result<u64, CgroupError>;

    /// Sends `sig` to every process: freeze, signal each, thaw (v2 with SIGKILL: cgroup.kill).
    fn kill_all(&self, sig: Signal) -> Result<(), CgroupError>;

    /// Removes the cgroup (and any sub-cgroups) everywhere, retrying while exiting tasks keep it
    /// busy. Directories already gone are fine.
    fn remove(&self) -> Result<(), CgroupError>;

    /// The cgroup's directories, one per hierarchy.
    fn paths(&self) -> Vec<PathBuf>;
}

/// The manager for `path` on this host: [`V2Manager`] on a unified host, [`V1Manager`] on a
/// legacy or hybrid one.
pub fn manager(path: &CgroupPath) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let mounts = setup::CgroupMounts::from_proc()?;
    let own = setup::own_cgroups()?;
    Ok(match mounts.setup()? {
        CgroupSetup::Unified => Box::new(V2Manager::with_mounts(&mounts, &own, path)?),
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            Box::new(V1Manager::with_mounts(&mounts, &own, path)?)
        }
    })
}

/// Sends `sig` to each of `pids`; processes that already exited are skipped.
pub(crate) fn signal_all(pids: &[Pid], sig: Signal) -> Result<(), CgroupError> {
    for &pid in pids {
        match nix::sys::signal::kill(pid, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    pid: pid.as_raw(),
                    signal: sig,
                    source,
                })
            }
        }
    }
    Ok(())
}
