//! Resource usage of a cgroup, the same numbers on v1 and v2 (what the CRI's ContainerStats and
//! cAdvisor-style consumers want). Values the host's cgroups do not expose are 0 / `None`;
//! pressure stall information is `None`, never zero, where there is none to read.

use serde::Serialize;

/// Everything `CgroupManager::stats` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// CPU time and CFS throttling.
    pub cpu: CpuStats,
    /// Memory usage and limits.
    pub memory: MemoryStats,
    /// Process count.
    pub pids: PidsStats,
    /// Huge page usage, one entry per page size the host has (e.g. "2MB", "1GB").
    pub hugetlb: Vec<HugetlbStats>,
    /// Block I/O, one entry per device with traffic.
    pub blkio: Vec<BlkioDeviceStats>,
    /// I/O pressure (what the CRI's IoUsage carries besides its timestamp).
    pub io: IoStats,
    /// Pressure stall information of every resource, for cAdvisor-style metrics: cgroup v2's
    /// `*.pressure`, and on a hybrid host those of the cgroup's unified-hierarchy side, which
    /// tracks stalls whatever controllers it has. `cpu.psi`, `memory.psi` and `io.psi` are
    /// the same numbers on cgroup v2 only (what the CRI reports: none on v1, as containerd).
    pub pressure: PressureStats,
    /// The processes (thread-group leaders) in this cgroup itself, not in its children: its
    /// `cgroup.procs` (v1: of the cpu hierarchy, as cAdvisor reads it). Sorted.
    pub procs: Vec<i32>,
}

/// CPU usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuStats {
    /// Total CPU time consumed, nanoseconds.
    pub usage_total_ns: u64,
    /// Time in user mode, nanoseconds.
    pub usage_user_ns: u64,
    /// Time in kernel mode, nanoseconds.
    pub usage_system_ns: u64,
    /// CFS enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    pub throttled_time_ns: u64,
    /// `cpu.pressure` of a cgroup v2 cgroup; `None` on v1 and where PSI is missing or off.
    pub psi: Option<Psi>,
}

/// Memory usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryStats {
    /// Current usage in bytes (v1 memory.usage_in_bytes, v2 memory.current).
    pub usage: u64,
    /// Peak usage in bytes, if the kernel reports it.
    pub max_usage: Option<u64>,
    /// The limit in bytes; `None` means unlimited.
    pub limit: Option<u64>,
    /// usage - inactive_file, what the kubelet evicts on.
    pub working_set: u64,
    /// Anonymous memory (v1 total_rss, v2 anon).
    pub rss: u64,
    /// Page cache (v1 total_cache, v2 file).
    pub cache: u64,
    /// Inactive file-backed memory.
    pub inactive_file: u64,
    /// Page faults.
    pub pgfault: u64,
    /// Major page faults.
    pub pgmajfault: u64,
    /// Page faults of the cgroup's own tasks, not its children's (v1 memory.stat "pgfault"
    /// beside "total_pgfault"; v2 has only the hierarchical count, so the same as `pgfault`).
    pub own_pgfault: u64,
    /// Major page faults of the cgroup's own tasks (as `own_pgfault`).
    pub own_pgmajfault: u64,
    /// Swap in use, bytes.
    pub swap_usage: u64,
    /// Swap limit (v1: memory+swap, v2: swap only); `None` means unlimited or not supported.
    pub swap_limit: Option<u64>,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kill_count: u64,
    /// Times usage hit the limit (v1 memory.failcnt, v2 the "max" count of memory.events).
    pub failcnt: u64,
    /// Kernel memory in bytes (v1 memory.kmem.usage_in_bytes; v2 memory.stat "kernel", or on
    /// kernels before 5.18 the sum of its parts).
    pub kernel_usage: u64,
    /// File-backed memory mapped into processes (v1 total_mapped_file, v2 file_mapped).
    pub mapped_file: u64,
    /// The reservation (v1 memory.soft_limit_in_bytes, v2 memory.min, as cAdvisor reads it);
    /// `None` means unlimited or not supported.
    pub reservation: Option<u64>,
    /// `memory.pressure` of a cgroup v2 cgroup; `None` on v1 and where PSI is missing or off.
    pub psi: Option<Psi>,
}

/// I/O of the cgroup as a whole (per-device counters are in [`Stats::blkio`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IoStats {
    /// `io.pressure` of a cgroup v2 cgroup; `None` on v1 and where PSI is missing or off.
    pub psi: Option<Psi>,
}

/// Number of processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidsStats {
    /// Tasks in the cgroup now.
    pub current: u64,
    /// pids.max; `None` means "max".
    pub limit: Option<u64>,
}

/// Pressure stall information per resource; `None` where the kernel has no pressure file
/// (cgroup v1 alone, a kernel without PSI) or refuses to read it (PSI disabled: EOPNOTSUPP).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PressureStats {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

/// One `<resource>.pressure` file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Psi {
    /// Some tasks were stalled waiting for the resource (the "some" line).
    pub some: PsiData,
    /// All non-idle tasks were stalled at once (the "full" line); `None` where the kernel
    /// has no such line (cpu.pressure before 5.13).
    pub full: Option<PsiData>,
}

/// One line of a pressure file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PsiData {
    /// Cumulative stall time, microseconds ("total=").
    pub total_us: u64,
    /// Share of wall time stalled over the last 10 s, percent ("avg10=").
    pub avg10: f64,
    /// The same over 60 s ("avg60=").
    pub avg60: f64,
    /// The same over 300 s ("avg300=").
    pub avg300: f64,
}

/// Usage of one huge page size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HugetlbStats {
    /// Page size as in the file names, e.g. "2MB".
    pub page_size: String,
    /// Bytes in use.
    pub usage: u64,
    /// Peak bytes (v1 only).
    pub max_usage: Option<u64>,
    /// Allocation failures due to the limit (v1 failcnt, v2 events "max").
    pub failcnt: u64,
}

/// Block I/O of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlkioDeviceStats {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub read_ios: u64,
    /// Write operations.
    pub write_ios: u64,
}

impl Stats {
    /// Sum of read bytes over all devices.
    pub fn blkio_read_bytes(&self) -> u64 {
        self.blkio.iter().map(|d| d.read_bytes).sum()
    }

    /// Sum of written bytes over all devices.
    pub fn blkio_write_bytes(&self) -> u64 {
        self.blkio.iter().map(|d| d.write_bytes).sum()
    }
}

/// Finds or inserts the entry of device `major:minor`.
pub(crate) fn blkio_device(
    devices: &mut Vec<BlkioDeviceStats>,
    major: u64,
    minor: u64,
) -> &mut BlkioDeviceStats {
    let idx = match devices
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(i) => i,
        None => {
            devices.push(BlkioDeviceStats {
                major,
                minor,
                ..Default::default()
            });
            devices.len() - 1
        }
    };
    &mut devices[idx]
}

/// Parses "major:minor".
pub(crate) fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (ma, mi) = s.split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// Converts a limit read from a file: "max" (`u64::MAX`) and v1's "unlimited" value (the largest
/// multiple of the page size below `i64::MAX`) become `None`.
pub(crate) fn limit_or_none(v: u64) -> Option<u64> {
    const V1_UNLIMITED_FLOOR: u64 = (i64::MAX as u64) - (1 << 20);
    (v < V1_UNLIMITED_FLOOR).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_values_read_as_none() {
        assert_eq!(limit_or_none(u64::MAX), None);
        assert_eq!(limit_or_none(9223372036854771712), None);
        assert_eq!(limit_or_none(8 << 20), Some(8 << 20));
    }

    #[test]
    fn device_table() {
        let mut d = Vec::new();
        blkio_device(&mut d, 8, 0).read_bytes += 5;
        blkio_device(&mut d, 8, 0).read_bytes += 5;
        blkio_device(&mut d, 253, 1).write_bytes = 1;
        assert_eq!(d.len(), 2);
        let s = Stats {
            blkio: d,
            ..Default::default()
        };
        assert_eq!(s.blkio_read_bytes(), 10);
        assert_eq!(s.blkio_write_bytes(), 1);
        assert_eq!(parse_dev("8:16"), Some((8, 16)));
        assert_eq!(parse_dev("Total"), None);
    }
}
