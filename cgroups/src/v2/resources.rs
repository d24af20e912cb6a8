//! OCI `linux.resources` → cgroup v2 files, as runc maps them. [`plan`] is a pure function from
//! the resources (and which files exist) to the ordered list of writes, so every mapping is
//! unit-tested without a kernel; devices are not files on v2 (see `devices_bpf`).

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxHugepageLimit, LinuxRdma, LinuxResources};

use crate::stats::HugetlbStats;
use crate::{cgroupfs, CgroupError};

/// One write to a v2 cgroup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// The controller the file belongs to (for error messages).
    pub controller: &'static str,
    /// File name in the cgroup directory.
    pub file: String,
    /// Value written.
    pub value: String,
}

/// cpu.shares (v1, 2..262144) → cpu.weight (v2, 1..10000), runc's linear formula.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    (1 + shares.saturating_sub(2).saturating_mul(9999) / 262142).clamp(1, 10000)
}

/// blkio.weight (v1, 10..1000) → io.weight (v2, 1..10000), runc's formula.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    (1 + (u64::from(weight).saturating_sub(10)) * 9999 / 990).clamp(1, 10000)
}

/// OCI memory.swap is memory+swap (v1 semantics); v2's memory.swap.max is swap alone.
/// Returns the memory.swap.max value: -1 for "max", 0 for "unset", else bytes of swap.
pub fn swap_to_v2(swap: i64, memory: i64) -> Result<i64, CgroupError> {
    // Unlimited memory and unset swap: unlimited swap too (v1 compatibility).
    if memory == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    let invalid = |reason: String| CgroupError::InvalidResource {
        what: "memory.swap",
        reason,
    };
    if memory == 0 || memory == -1 {
        return Err(invalid(format!(
            "swap limit {swap} needs a memory limit (memory+swap semantics)"
        )));
    }
    if memory < 0 || swap < 0 {
        return Err(invalid(format!(
            "invalid values memory {memory}, swap {swap}"
        )));
    }
    if swap < memory {
        return Err(invalid(format!(
            "memory+swap limit {swap} is below the memory limit {memory}"
        )));
    }
    Ok(swap - memory)
}

/// runc's numToStr: 0 → nothing to write, -1 → "max", else the number.
fn num_to_str(v: i64) -> Option<String> {
    match v {
        0 => None,
        -1 => Some("max".into()),
        v => Some(v.to_string()),
    }
}

/// Builds the ordered writes for `r`. `exists(file)` tells whether the cgroup directory has a
/// file (controllers not enabled have none); a requested file that is missing is an error naming
/// the controller.
pub fn plan(
    r: &LinuxResources,
    exists: impl Fn(&str) -> bool,
) -> Result<Vec<FileWrite>, CgroupError> {
    let mut out = Vec::new();
    let mut push = |controller: &'static str, file: &str, value: String| {
        out.push(FileWrite {
            controller,
            file: file.to_owned(),
            value,
        });
    };

    if let Some(cpu) = r.cpu() {
        if cpu.realtime_runtime().is_some_and(|v| v != 0)
            || cpu.realtime_period().is_some_and(|v| v != 0)
        {
            return Err(CgroupError::UnsupportedResource {
                controller: "cpu",
                what: "realtime runtime/period: cgroup v2 has no RT group scheduling".into(),
            });
        }
        if let Some(idle) = cpu.idle() {
            push("cpu", "cpu.idle", idle.to_string());
        }
        let weight = cpu_shares_to_weight(cpu.shares().unwrap_or(0));
        if weight != 0 {
            push("cpu", "cpu.weight", weight.to_string());
        }
        if let Some(burst) = cpu.burst() {
            push("cpu", "cpu.max.burst", burst.to_string());
        }
        let quota = cpu.quota().unwrap_or(0);
        let period = cpu.period().unwrap_or(0);
        if quota != 0 || period != 0 {
            let mut v = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_owned()
            };
            if period != 0 {
                v.push_str(&format!(" {period}"));
            }
            push("cpu", "cpu.max", v);
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            push("cpuset", "cpuset.cpus", cpus.to_owned());
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            push("cpuset", "cpuset.mems", mems.to_owned());
        }
    }

    if let Some(mem) = r.memory() {
        let limit = mem.limit().unwrap_or(0);
        let swap = mem.swap().unwrap_or(0);
        let swap_v2 = swap_to_v2(swap, limit)?;
        let mut swap_str = num_to_str(swap_v2);
        if swap_str.is_none() && swap_v2 == 0 && swap > 0 {
            // memory == memory+swap: no swap at all.
            swap_str = Some("0".into());
        }
        if let Some(s) = swap_str {
            // Without swap accounting, "max" and "0" are what the host does anyway.
            if exists("memory.swap.max") || (s != "max" && s != "0") {
                push("memory", "memory.swap.max", s);
            }
        }
        if let Some(v) = num_to_str(limit) {
            push("memory", "memory.max", v);
        }
        if let Some(v) = num_to_str(mem.reservation().unwrap_or(0)) {
            push("memory", "memory.low", v);
        }
        if mem.swappiness().is_some() || mem.disable_oom_killer() == Some(true) {
            tracing::warn!(
                "memory swappiness and disableOOMKiller have no cgroup v2 equivalent: ignored"
            );
        }
    }

    if let Some(p) = r.pids() {
        push("pids", "pids.max", crate::v1::pids::pids_max(p.limit()));
    }

    if let Some(limits) = r.hugepage_limits() {
        for (file, value) in hugetlb_writes(limits, &exists)? {
            push("hugetlb", &file, value);
        }
    }

    if let Some(b) = r.block_io() {
        let bfq = exists("io.bfq.weight");
        if let Some(w) = b.weight().filter(|&w| w != 0) {
            if bfq {
                push("io", "io.bfq.weight", w.to_string());
            } else {
                push("io", "io.weight", blkio_weight_to_io_weight(w).to_string());
            }
        }
        for wd in b.weight_device().iter().flatten() {
            match wd.weight().filter(|&w| w != 0) {
                Some(w) if bfq => push(
                    "io",
                    "io.bfq.weight",
                    format!("{}:{} {w}", wd.major(), wd.minor()),
                ),
                Some(_) => tracing::warn!(
                    device = %format!("{}:{}", wd.major(), wd.minor()),
                    "per-device I/O weight needs BFQ (io.bfq.weight): ignored, as runc does"
                ),
                None => {}
            }
        }
        let throttles = [
            (b.throttle_read_bps_device(), "rbps"),
            (b.throttle_write_bps_device(), "wbps"),
            (b.throttle_read_iops_device(), "riops"),
            (b.throttle_write_iops_device(), "wiops"),
        ];
        for (devices, key) in throttles {
            for td in devices.iter().flatten() {
                push(
                    "io",
                    "io.max",
                    format!("{}:{} {key}={}", td.major(), td.minor(), td.rate()),
                );
            }
        }
    }

    if let Some(rdma) = r.rdma() {
        for line in rdma_lines(rdma) {
            push("rdma", "rdma.max", line);
        }
    }

    if let Some(net) = r.network() {
        // Class id 0 is "no class": nothing asked.
        if net.class_id().is_some_and(|id| id != 0)
            || net.priorities().as_ref().is_some_and(|p| !p.is_empty())
        {
            return Err(CgroupError::UnsupportedResource {
                controller: "net_cls/net_prio",
                what: "network class id / interface priorities: cgroup v2 has no such controllers"
                    .into(),
            });
        }
    }

    if let Some(unified) = r.unified() {
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for key in keys {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(CgroupError::InvalidResource {
                    what: "unified",
                    reason: format!("{key:?} is not a cgroup file name"),
                });
            }
            push("unified", key, unified[key].clone());
        }
    }

    for w in &out {
        if !exists(&w.file) {
            return Err(CgroupError::UnsupportedResource {
                controller: w.controller,
                what: format!(
                    "{} = {:?}: no such file in the cgroup (controller not available or not enabled)",
                    w.file, w.value
                ),
            });
        }
    }
    Ok(out)
}

/// hugetlb.<size>.max (and .rsvd.max where it exists) for each limit.
pub(crate) fn hugetlb_writes(
    limits: &[LinuxHugepageLimit],
    exists: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, CgroupError> {
    let mut out = Vec::new();
    for l in limits {
        let size = l.page_size();
        if size.is_empty() || size.contains('/') || size.contains('.') {
            return Err(CgroupError::InvalidResource {
                what: "hugepageLimits.pageSize",
                reason: format!("{size:?} is not a page size like \"2MB\""),
            });
        }
        let value = l.limit().to_string();
        let file = format!("hugetlb.{size}.max");
        if !exists(&file) {
            return Err(CgroupError::UnsupportedResource {
                controller: "hugetlb",
                what: format!("page size {size}: {file} is missing"),
            });
        }
        out.push((file, value.clone()));
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if exists(&rsvd) {
            out.push((rsvd, value));
        }
    }
    Ok(out)
}

/// rdma.max lines: "mlx5_0 hca_handles=3 hca_objects=max".
pub(crate) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Vec<String> {
    let mut devices: Vec<&String> = rdma.keys().collect();
    devices.sort();
    devices
        .into_iter()
        .filter_map(|dev| {
            let l = &rdma[dev];
            let mut line = dev.clone();
            if let Some(h) = l.hca_handles() {
                line.push_str(&format!(" hca_handles={h}"));
            }
            if let Some(o) = l.hca_objects() {
                line.push_str(&format!(" hca_objects={o}"));
            }
            (line.len() > dev.len()).then_some(line)
        })
        .collect()
}

/// Page sizes that have files "hugetlb.<size><suffix>" in `dir` (rsvd files excluded), sorted.
pub(crate) fn page_sizes(dir: &Path, suffix: &str) -> Result<Vec<String>, CgroupError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut sizes: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();
    Ok(sizes)
}

/// v2 hugetlb usage per page size (hugetlb.<size>.current, failures from .events "max").
pub(crate) fn hugetlb_stats(dir: &Path) -> Result<Vec<HugetlbStats>, CgroupError> {
    let mut out = Vec::new();
    for size in page_sizes(dir, ".max")? {
        let events = cgroupfs::FlatKeyed::read(dir, &format!("hugetlb.{size}.events"))?;
        out.push(HugetlbStats {
            usage: cgroupfs::read_u64_opt(dir, &format!("hugetlb.{size}.current"))?.unwrap_or(0),
            max_usage: None,
            failcnt: events.get_or_zero("max"),
            page_size: size,
        });
    }
    Ok(out)
}

/// Enables the `wanted` controllers (those the parent offers) in the cgroup.subtree_control of
/// every cgroup from `mount_point` down to the parent of `dir`, so that `dir` gets their files.
/// A controller the kernel refuses is left out with a warning: the write of its file fails later
/// with an error naming it.
pub(crate) fn enable_controllers(
    mount_point: &Path,
    dir: &Path,
    wanted: &[&str],
) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(mount_point).unwrap_or(Path::new(""));
    let mut current = mount_point.to_owned();
    let mut components = rel.components().peekable();
    while let Some(component) = components.next() {
        let available = cgroupfs::read_opt(&current, "cgroup.controllers")?.unwrap_or_default();
        let enabled = cgroupfs::read_opt(&current, "cgroup.subtree_control")?.unwrap_or_default();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .collect();
        if !missing.is_empty() {
            let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
            if cgroupfs::write(&current, "cgroup.subtree_control", &all.join(" ")).is_err() {
                for c in &missing {
                    if let Err(e) =
                        cgroupfs::write(&current, "cgroup.subtree_control", &format!("+{c}"))
                    {
                        tracing::warn!(controller = c, error = %e, "cannot enable cgroup v2 controller");
                    }
                }
            }
        }
        current.push(component);
        // The leaf itself keeps its subtree_control empty: it holds the processes.
        if components.peek().is_none() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "resources_tests.rs"]
pub(crate) mod tests;
