//! cgroup v2 statistics: cpu.stat, memory.*, pids.*, hugetlb.*, io.stat, and the pressure
//! files (`super::psi`). Files of controllers that are not enabled are absent and read as zero;
//! pressure files that are absent or unreadable read as `None`.

use std::path::Path;

use crate::cgroupfs::{self, FlatKeyed};
use crate::stats::{blkio_device, limit_or_none, parse_dev, BlkioDeviceStats, PidsStats, Stats};
use crate::CgroupError;

/// What memory.stat's "kernel" (kernel 5.18+) sums, for older kernels.
const KERNEL_PARTS: [&str; 5] = ["kernel_stack", "pagetables", "percpu", "vmalloc", "slab"];

/// All statistics of the cgroup in `dir`.
pub(super) fn read(dir: &Path) -> Result<Stats, CgroupError> {
    let mut s = Stats::default();

    let cpu = FlatKeyed::read(dir, "cpu.stat")?;
    s.cpu.usage_total_ns = cpu.get_or_zero("usage_usec") * 1000;
    s.cpu.usage_user_ns = cpu.get_or_zero("user_usec") * 1000;
    s.cpu.usage_system_ns = cpu.get_or_zero("system_usec") * 1000;
    s.cpu.periods = cpu.get_or_zero("nr_periods");
    s.cpu.throttled_periods = cpu.get_or_zero("nr_throttled");
    s.cpu.throttled_time_ns = cpu.get_or_zero("throttled_usec") * 1000;

    if let Some(usage) = cgroupfs::read_u64_opt(dir, "memory.current")? {
        let stat = FlatKeyed::read(dir, "memory.stat")?;
        let m = &mut s.memory;
        m.usage = usage;
        m.max_usage = cgroupfs::read_u64_opt(dir, "memory.peak")?;
        m.limit = cgroupfs::read_u64_opt(dir, "memory.max")?.and_then(limit_or_none);
        m.inactive_file = stat.get_or_zero("inactive_file");
        m.working_set = usage.saturating_sub(m.inactive_file);
        m.rss = stat.get_or_zero("anon");
        m.cache = stat.get_or_zero("file");
        m.pgfault = stat.get_or_zero("pgfault");
        m.pgmajfault = stat.get_or_zero("pgmajfault");
        m.own_pgfault = m.pgfault;
        m.own_pgmajfault = m.pgmajfault;
        m.swap_usage = cgroupfs::read_u64_opt(dir, "memory.swap.current")?.unwrap_or(0);
        m.swap_limit = cgroupfs::read_u64_opt(dir, "memory.swap.max")?.and_then(limit_or_none);
        let events = FlatKeyed::read(dir, "memory.events")?;
        m.oom_kill_count = events.get_or_zero("oom_kill");
        m.failcnt = events.get_or_zero("max");
        m.kernel_usage = stat
            .get("kernel")
            .unwrap_or_else(|| KERNEL_PARTS.iter().map(|k| stat.get_or_zero(k)).sum());
        m.mapped_file = stat.get_or_zero("file_mapped");
        m.reservation = cgroupfs::read_u64_opt(dir, "memory.min")?.and_then(limit_or_none);
    }

    if let Some(current) = cgroupfs::read_u64_opt(dir, "pids.current")? {
        s.pids = PidsStats {
            current,
            limit: cgroupfs::read_u64_opt(dir, "pids.max")?.and_then(limit_or_none),
        };
    }

    s.hugetlb = super::resources::hugetlb_stats(dir)?;
    s.procs = cgroupfs::procs(dir)?;
    s.pressure = super::psi::read(dir);
    s.cpu.psi = s.pressure.cpu.clone();
    s.memory.psi = s.pressure.memory.clone();
    s.io.psi = s.pressure.io.clone();
    if let Some(io) = cgroupfs::read_opt(dir, "io.stat")? {
        s.blkio = parse_io_stat(&io);
    }
    Ok(s)
}

/// Parses io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device.
pub(super) fn parse_io_stat(content: &str) -> Vec<BlkioDeviceStats> {
    let mut devices = Vec::new();
    for line in content.lines() {
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(parse_dev) else {
            continue;
        };
        let d = blkio_device(&mut devices, major, minor);
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => d.read_bytes = v,
                "wbytes" => d.write_bytes = v,
                "rios" => d.read_ios = v,
                "wios" => d.write_ios = v,
                _ => {}
            }
        }
    }
    devices
}
