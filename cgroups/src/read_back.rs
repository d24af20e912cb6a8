//! The limits in force in a cgroup, read back from its files (what the kernel holds now, not
//! what was last asked for), as OCI `linux.resources`: cpu shares, CFS quota and period,
//! cpuset cpus and mems, memory and memory+swap limits, huge page limits and, on cgroup v2,
//! the `unified` files asked for by name.
//!
//! Unlimited values read as -1 (the OCI form); a controller that is not there leaves its
//! fields unset; an empty file (a cpuset not set, a fake tree's untouched file) reads as unset.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{
    LinuxCpu, LinuxHugepageLimit, LinuxHugepageLimitBuilder, LinuxMemory, LinuxResources,
};

use crate::stats::limit_or_none;
use crate::v2::resources::page_sizes;
use crate::{cgroupfs, CgroupError};

/// `dir/file` as a limit: "max" and v1's page-rounded i64::MAX read as -1; `None` when the
/// file is missing or empty.
fn limit(dir: &Path, file: &str) -> Result<Option<i64>, CgroupError> {
    let Some(s) = cgroupfs::read_opt(dir, file)? else {
        return Ok(None);
    };
    parse_limit(&dir.join(file), s.split_whitespace().next())
}

fn parse_limit(path: &Path, word: Option<&str>) -> Result<Option<i64>, CgroupError> {
    let Some(word) = word else {
        return Ok(None);
    };
    // v1's cpu.cfs_quota_us says "-1" for no quota.
    if word == "-1" {
        return Ok(Some(-1));
    }
    let v = cgroupfs::parse_u64(path, word)?;
    Ok(Some(
        limit_or_none(v)
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or(-1),
    ))
}

/// `dir/file` trimmed; `None` when missing or empty.
fn text(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    Ok(cgroupfs::read_opt(dir, file)?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty()))
}

/// `dir/file` as an unsigned value; `None` when missing or empty.
fn unsigned(dir: &Path, file: &str) -> Result<Option<u64>, CgroupError> {
    match text(dir, file)? {
        Some(s) => cgroupfs::parse_u64(&dir.join(file), &s).map(Some),
        None => Ok(None),
    }
}

/// cpu.weight (v2) → cpu.shares: the smallest shares that `cpu_shares_to_weight` maps to
/// `weight`, so that shares → weight → shares → weight is stable.
pub fn cpu_weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let weight = weight.clamp(1, 10000);
    2 + ((weight - 1) * 262142).div_ceil(9999)
}

fn hugepages(dir: &Path, suffix: &str) -> Result<Option<Vec<LinuxHugepageLimit>>, CgroupError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for size in page_sizes(dir, suffix)? {
        if let Some(l) = limit(dir, &format!("hugetlb.{size}{suffix}"))? {
            out.push(
                LinuxHugepageLimitBuilder::default()
                    .page_size(size)
                    .limit(l)
                    .build()
                    .expect("page size and limit are set"),
            );
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn resources(
    cpu: LinuxCpu,
    memory: LinuxMemory,
    hugepage_limits: Option<Vec<LinuxHugepageLimit>>,
    unified: Option<HashMap<String, String>>,
) -> LinuxResources {
    let mut r = LinuxResources::default();
    if cpu != LinuxCpu::default() {
        r.set_cpu(Some(cpu));
    }
    if memory != LinuxMemory::default() {
        r.set_memory(Some(memory));
    }
    r.set_hugepage_limits(hugepage_limits);
    r.set_unified(unified);
    r
}

/// The v1 directories a read needs (each `None` when its controller is not mounted).
pub(crate) struct V1Dirs<'a> {
    pub cpu: Option<&'a Path>,
    pub cpuset: Option<&'a Path>,
    pub memory: Option<&'a Path>,
    pub hugetlb: Option<&'a Path>,
    /// The cgroup2 directory of a hybrid host (hugetlb may live there).
    pub unified: Option<&'a Path>,
}

/// cgroup v1: cpu.shares, cpu.cfs_quota_us/cfs_period_us, cpuset.cpus/mems,
/// memory.limit_in_bytes, memory.memsw.limit_in_bytes, hugetlb.<size>.limit_in_bytes (or
/// hugetlb.<size>.max on the cgroup2 side of a hybrid host).
pub(crate) fn read_v1(d: &V1Dirs<'_>) -> Result<LinuxResources, CgroupError> {
    let mut cpu = LinuxCpu::default();
    if let Some(dir) = d.cpu {
        cpu.set_shares(unsigned(dir, "cpu.shares")?);
        cpu.set_quota(limit(dir, "cpu.cfs_quota_us")?);
        cpu.set_period(unsigned(dir, "cpu.cfs_period_us")?);
    }
    if let Some(dir) = d.cpuset {
        cpu.set_cpus(text(dir, "cpuset.cpus")?);
        cpu.set_mems(text(dir, "cpuset.mems")?);
    }
    let mut memory = LinuxMemory::default();
    if let Some(dir) = d.memory {
        memory.set_limit(limit(dir, "memory.limit_in_bytes")?);
        memory.set_swap(limit(dir, "memory.memsw.limit_in_bytes")?);
    }
    let hugepage_limits = match (d.hugetlb, d.unified) {
        (Some(dir), _) => hugepages(dir, ".limit_in_bytes")?,
        (None, Some(dir)) => hugepages(dir, ".max")?,
        (None, None) => None,
    };
    Ok(resources(cpu, memory, hugepage_limits, None))
}

/// cgroup v2: cpu.weight (as shares), cpu.max, cpuset.cpus/mems, memory.max, memory.swap.max
/// (as memory+swap, the OCI form), hugetlb.<size>.max, and the files named in `unified` that
/// exist.
pub(crate) fn read_v2(dir: &Path, unified: &[String]) -> Result<LinuxResources, CgroupError> {
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(unsigned(dir, "cpu.weight")?.map(cpu_weight_to_shares));
    if let Some(max) = text(dir, "cpu.max")? {
        let path = dir.join("cpu.max");
        let mut words = max.split_whitespace();
        cpu.set_quota(parse_limit(&path, words.next())?);
        if let Some(p) = words.next() {
            cpu.set_period(Some(cgroupfs::parse_u64(&path, p)?));
        }
    }
    cpu.set_cpus(text(dir, "cpuset.cpus")?);
    cpu.set_mems(text(dir, "cpuset.mems")?);
    let mut memory = LinuxMemory::default();
    let mem = limit(dir, "memory.max")?;
    memory.set_limit(mem);
    memory.set_swap(match (limit(dir, "memory.swap.max")?, mem) {
        (Some(swap), Some(mem)) if swap >= 0 && mem >= 0 => Some(swap.saturating_add(mem)),
        (Some(swap), _) if swap >= 0 => Some(swap),
        (Some(_), _) => Some(-1),
        (None, _) => None,
    });
    let mut files = HashMap::new();
    for key in unified {
        // Only a file of this cgroup (a name, no path).
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            continue;
        }
        if let Some(v) = cgroupfs::read_opt(dir, key)? {
            files.insert(key.clone(), v.trim().to_owned());
        }
    }
    Ok(resources(
        cpu,
        memory,
        hugepages(dir, ".max")?,
        (!files.is_empty()).then_some(files),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::resources::cpu_shares_to_weight;

    #[test]
    fn weight_to_shares_round_trips_through_the_weight() {
        for shares in [2, 3, 100, 512, 1024, 1536, 4096, 100_000, 262_144] {
            let w = cpu_shares_to_weight(shares);
            assert_eq!(cpu_shares_to_weight(cpu_weight_to_shares(w)), w, "{shares}");
        }
        assert_eq!(cpu_weight_to_shares(1), 2);
        assert_eq!(cpu_weight_to_shares(10000), 262_144);
        assert_eq!(cpu_weight_to_shares(0), 0);
    }

    #[test]
    fn limits_parse_unlimited_as_minus_one() {
        let p = Path::new("f");
        assert_eq!(parse_limit(p, Some("max")).unwrap(), Some(-1));
        assert_eq!(parse_limit(p, Some("-1")).unwrap(), Some(-1));
        assert_eq!(
            parse_limit(p, Some("9223372036854771712")).unwrap(),
            Some(-1)
        );
        assert_eq!(parse_limit(p, Some("1048576")).unwrap(), Some(1048576));
        assert_eq!(parse_limit(p, None).unwrap(), None);
        assert!(parse_limit(p, Some("x")).is_err());
    }
}
