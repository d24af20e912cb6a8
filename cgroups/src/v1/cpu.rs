//! v1 cpu (shares, CFS quota/period/burst, RT runtime/period, idle) and cpuacct (usage).

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::cgroupfs::{self, FlatKeyed};
use crate::stats::CpuStats;
use crate::CgroupError;

/// USER_HZ ticks (cpuacct.stat) to nanoseconds.
const NS_PER_TICK: u64 = 1_000_000_000 / 100;

/// True if `cpu` asks for anything of the cpu controller.
pub(super) fn requested(cpu: &LinuxCpu) -> bool {
    cpu.shares().is_some_and(|s| s != 0)
        || cpu.quota().is_some_and(|q| q != 0)
        || cpu.period().is_some_and(|p| p != 0)
        || cpu.realtime_runtime().is_some_and(|r| r != 0)
        || cpu.realtime_period().is_some_and(|p| p != 0)
        || cpu.burst().is_some()
        || cpu.idle().is_some()
}

/// Writes the cpu controller files, in runc's order.
pub(super) fn apply(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    // RT first: a process can only join with RT tasks once the group has RT time.
    if let Some(period) = cpu.realtime_period().filter(|&p| p != 0) {
        cgroupfs::write(dir, "cpu.rt_period_us", &period.to_string())?;
    }
    if let Some(runtime) = cpu.realtime_runtime().filter(|&r| r != 0) {
        cgroupfs::write(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
    }
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        cgroupfs::write(dir, "cpu.shares", &shares.to_string())?;
        // The kernel clamps shares silently; say so instead.
        let got = cgroupfs::read_u64(dir, "cpu.shares")?;
        if got != shares {
            return Err(CgroupError::InvalidResource {
                what: "cpu.shares",
                reason: format!(
                    "the kernel set {got} for {shares}: the {} allowed value is {got}",
                    if shares > got { "maximum" } else { "minimum" }
                ),
            });
        }
    }
    let quota = cpu.quota().unwrap_or(0);
    // When the new period is below the current one the kernel may refuse it (EINVAL) until the
    // quota is lowered: retry it after writing the quota.
    let mut period_pending = None;
    if let Some(period) = cpu.period().filter(|&p| p != 0) {
        if let Err(e) = cgroupfs::write(dir, "cpu.cfs_period_us", &period.to_string()) {
            let einval = matches!(&e, CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EINVAL));
            if !einval || quota == 0 {
                return Err(e);
            }
            period_pending = Some(period);
        }
    }
    if quota != 0 {
        cgroupfs::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        if let Some(period) = period_pending {
            cgroupfs::write(dir, "cpu.cfs_period_us", &period.to_string())?;
        }
    }
    if let Some(burst) = cpu.burst() {
        cgroupfs::write(dir, "cpu.cfs_burst_us", &burst.to_string())?;
    }
    if let Some(idle) = cpu.idle() {
        cgroupfs::write(dir, "cpu.idle", &idle.to_string())?;
    }
    Ok(())
}

/// cpuacct usage: total from cpuacct.usage, user/system from cpuacct.usage_user/usage_sys
/// (nanoseconds) or, on older kernels, cpuacct.stat (USER_HZ ticks).
pub(super) fn cpuacct_stats(dir: &Path, out: &mut CpuStats) -> Result<(), CgroupError> {
    out.usage_total_ns = cgroupfs::read_u64(dir, "cpuacct.usage")?;
    match (
        cgroupfs::read_u64_opt(dir, "cpuacct.usage_user")?,
        cgroupfs::read_u64_opt(dir, "cpuacct.usage_sys")?,
    ) {
        (Some(user), Some(sys)) => {
            out.usage_user_ns = user;
            out.usage_system_ns = sys;
        }
        _ => {
            let stat = FlatKeyed::read(dir, "cpuacct.stat")?;
            out.usage_user_ns = stat.get_or_zero("user") * NS_PER_TICK;
            out.usage_system_ns = stat.get_or_zero("system") * NS_PER_TICK;
        }
    }
    Ok(())
}

/// CFS throttling from cpu.stat.
pub(super) fn throttling_stats(dir: &Path, out: &mut CpuStats) -> Result<(), CgroupError> {
    let stat = FlatKeyed::read(dir, "cpu.stat")?;
    out.periods = stat.get_or_zero("nr_periods");
    out.throttled_periods = stat.get_or_zero("nr_throttled");
    out.throttled_time_ns = stat.get_or_zero("throttled_time");
    Ok(())
}
