//! v1 memory: limit, soft limit (reservation), memory+swap limit, swappiness, OOM killer switch;
//! usage statistics and the OOM kill counter.

use std::path::Path;

use oci_spec::runtime::LinuxMemory;

use crate::cgroupfs::{self, FlatKeyed};
use crate::stats::{limit_or_none, MemoryStats};
use crate::CgroupError;

const LIMIT: &str = "memory.limit_in_bytes";
const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

/// True if `m` asks for anything the v1 memory controller does (kernel memory is ignored, as
/// runc ignores it: the kernel deprecated it).
pub(super) fn requested(m: &LinuxMemory) -> bool {
    m.limit().is_some_and(|v| v != 0)
        || m.reservation().is_some_and(|v| v != 0)
        || m.swap().is_some_and(|v| v != 0)
        || m.swappiness().is_some()
        || m.disable_oom_killer() == Some(true)
}

/// Writes the memory controller files. Limit and memory+swap are written in the order that
/// keeps limit <= memsw at every step (runc's order): memsw first when it grows.
pub(super) fn apply(dir: &Path, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    if limit < -1 {
        return Err(CgroupError::InvalidResource {
            what: "memory.limit",
            reason: format!("{limit} is negative (only -1, unlimited, is allowed)"),
        });
    }
    if swap < -1 {
        return Err(CgroupError::InvalidResource {
            what: "memory.swap",
            reason: format!("{swap} is negative (only -1, unlimited, is allowed)"),
        });
    }
    if limit > 0 && swap > 0 && swap < limit {
        return Err(CgroupError::InvalidResource {
            what: "memory.swap",
            reason: format!("memory+swap limit {swap} is below the memory limit {limit}"),
        });
    }
    let has_memsw = cgroupfs::exists(dir, MEMSW_LIMIT);
    // An unlimited memory with swap unset means unlimited swap too.
    if limit == -1 && swap == 0 && has_memsw {
        swap = -1;
    }
    if swap != 0 && !has_memsw {
        if swap == -1 {
            tracing::debug!(dir = %dir.display(), "no swap accounting: unlimited swap needs no write");
            swap = 0;
        } else {
            return Err(CgroupError::UnsupportedResource {
                controller: "memory",
                what: format!(
                    "swap limit {swap}: {} is missing (swap accounting is off: boot with swapaccount=1)",
                    dir.join(MEMSW_LIMIT).display()
                ),
            });
        }
    }

    if limit != 0 && swap != 0 {
        let current = cgroupfs::read_u64(dir, LIMIT)?;
        if swap == -1 || current < swap as u64 {
            set_swap(dir, swap)?;
            set_limit(dir, limit)?;
        } else {
            set_limit(dir, limit)?;
            set_swap(dir, swap)?;
        }
    } else {
        if limit != 0 {
            set_limit(dir, limit)?;
        }
        if swap != 0 {
            set_swap(dir, swap)?;
        }
    }

    if let Some(reservation) = m.reservation().filter(|&r| r != 0) {
        cgroupfs::write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
    }
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::debug!(dir = %dir.display(), "kernel memory limits are ignored (deprecated by the kernel)");
    }
    if m.disable_oom_killer() == Some(true) {
        cgroupfs::write(dir, "memory.oom_control", "1")?;
    }
    if let Some(swappiness) = m.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::InvalidResource {
                what: "memory.swappiness",
                reason: format!("{swappiness} is above 100"),
            });
        }
        cgroupfs::write(dir, "memory.swappiness", &swappiness.to_string())?;
    }
    Ok(())
}

fn set_limit(dir: &Path, limit: i64) -> Result<(), CgroupError> {
    match cgroupfs::write(dir, LIMIT, &limit.to_string()) {
        Err(CgroupError::Write { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            Err(CgroupError::MemoryLimitBelowUsage {
                path: dir.join(LIMIT),
                limit,
                usage: cgroupfs::read_u64(dir, "memory.usage_in_bytes").unwrap_or(0),
            })
        }
        other => other,
    }
}

fn set_swap(dir: &Path, swap: i64) -> Result<(), CgroupError> {
    cgroupfs::write(dir, MEMSW_LIMIT, &swap.to_string())
}

/// Memory usage (hierarchical "total_" counters of memory.stat when present).
pub(super) fn stats(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let stat = FlatKeyed::read(dir, "memory.stat")?;
    let get = |key: &str| {
        stat.get(&format!("total_{key}"))
            .or_else(|| stat.get(key))
            .unwrap_or(0)
    };
    let usage = cgroupfs::read_u64(dir, "memory.usage_in_bytes")?;
    let inactive_file = get("inactive_file");
    let memsw_usage = cgroupfs::read_u64_opt(dir, "memory.memsw.usage_in_bytes")?;
    Ok(MemoryStats {
        usage,
        max_usage: cgroupfs::read_u64_opt(dir, "memory.max_usage_in_bytes")?,
        limit: limit_or_none(cgroupfs::read_u64(dir, LIMIT)?),
        working_set: usage.saturating_sub(inactive_file),
        rss: get("rss"),
        cache: get("cache"),
        inactive_file,
        pgfault: get("pgfault"),
        pgmajfault: get("pgmajfault"),
        own_pgfault: stat.get_or_zero("pgfault"),
        own_pgmajfault: stat.get_or_zero("pgmajfault"),
        swap_usage: memsw_usage.map_or(0, |sw| sw.saturating_sub(usage)),
        swap_limit: cgroupfs::read_u64_opt(dir, MEMSW_LIMIT)?.and_then(limit_or_none),
        oom_kill_count: oom_kill_count(dir)?,
        failcnt: cgroupfs::read_u64_opt(dir, "memory.failcnt")?.unwrap_or(0),
        kernel_usage: cgroupfs::read_u64_opt(dir, "memory.kmem.usage_in_bytes")?.unwrap_or(0),
        mapped_file: get("mapped_file"),
        reservation: cgroupfs::read_u64_opt(dir, "memory.soft_limit_in_bytes")?
            .and_then(limit_or_none),
        psi: None,
    })
}

/// The "oom_kill" counter of memory.oom_control (kernel 4.13+; 0 on older kernels).
pub(super) fn oom_kill_count(dir: &Path) -> Result<u64, CgroupError> {
    Ok(FlatKeyed::read(dir, "memory.oom_control")?.get_or_zero("oom_kill"))
}
