//! CRI `LinuxContainerResources` as OCI resources (containerd's `WithResources`), and the
//! oom_score_adj (with `restrict_oom_score_adj`).

use std::collections::HashMap;

use cri_api::v1 as cri;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::{HostInfo, SpecError};

/// containerd's CPU shares for the pause container.
pub const SANDBOX_CPU_SHARES: u64 = 2;

/// Applies `res` onto `out`: zero means unset, as in the CRI. Memory swap follows the memory
/// limit (no swapping) unless memory_swap_limit_in_bytes is set, and only where the swap
/// controller exists; hugepage limits only where the hugetlb controller exists; `unified` is
/// copied (cgroup v2 keys).
pub fn apply(
    res: &cri::LinuxContainerResources,
    host: &HostInfo,
    out: &mut LinuxResources,
) -> Result<(), SpecError> {
    let non_negative = |field: &'static str, v: i64| {
        u64::try_from(v).map_err(|_| SpecError::Invalid {
            field,
            reason: format!("{v} is negative"),
        })
    };
    let mut cpu = out.cpu().clone().unwrap_or_default();
    if res.cpu_period != 0 {
        cpu.set_period(Some(non_negative("resources.cpu_period", res.cpu_period)?));
    }
    if res.cpu_quota != 0 {
        cpu.set_quota(Some(res.cpu_quota));
    }
    if res.cpu_shares != 0 {
        cpu.set_shares(Some(non_negative("resources.cpu_shares", res.cpu_shares)?));
    }
    if !res.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(res.cpuset_cpus.clone()));
    }
    if !res.cpuset_mems.is_empty() {
        cpu.set_mems(Some(res.cpuset_mems.clone()));
    }
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }

    let mut memory = out.memory().unwrap_or_default();
    if res.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(res.memory_limit_in_bytes));
        if res.memory_swap_limit_in_bytes == 0 && host.swap_controller {
            memory.set_swap(Some(res.memory_limit_in_bytes));
        }
    }
    if res.memory_swap_limit_in_bytes != 0 && host.swap_controller {
        memory.set_swap(Some(res.memory_swap_limit_in_bytes));
    }
    if memory != LinuxMemory::default() {
        out.set_memory(Some(memory));
    }

    if host.hugetlb_controller && !res.hugepage_limits.is_empty() {
        let mut limits = out.hugepage_limits().clone().unwrap_or_default();
        for h in &res.hugepage_limits {
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone());
            l.set_limit(i64::try_from(h.limit).unwrap_or(i64::MAX));
            limits.push(l);
        }
        out.set_hugepage_limits(Some(limits));
    }

    if !res.unified.is_empty() {
        let mut unified = out.unified().clone().unwrap_or_default();
        unified.extend(res.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.set_unified(Some(unified));
    }
    Ok(())
}

/// The oom_score_adj to ask for: never below the host's floor when restricted.
pub fn oom_score_adj(wanted: i64, host: &HostInfo) -> Result<i32, SpecError> {
    let wanted = i32::try_from(wanted)
        .ok()
        .filter(|v| (-1000..=1000).contains(v))
        .ok_or_else(|| SpecError::Invalid {
            field: "resources.oom_score_adj",
            reason: format!("{wanted} is outside -1000…1000"),
        })?;
    Ok(match host.min_oom_score_adj {
        Some(min) if wanted < min => min,
        _ => wanted,
    })
}

/// containerd's annotations of the pod's resources on the pause container.
pub fn sandbox_annotations(res: &cri::LinuxContainerResources) -> HashMap<String, String> {
    [
        ("io.kubernetes.cri.sandbox-cpu-period", res.cpu_period),
        ("io.kubernetes.cri.sandbox-cpu-quota", res.cpu_quota),
        ("io.kubernetes.cri.sandbox-cpu-shares", res.cpu_shares),
        (
            "io.kubernetes.cri.sandbox-memory",
            res.memory_limit_in_bytes,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res() -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 21,
            }],
            unified: [("memory.high".to_string(), "50000000".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn converts_everything() {
        let mut out = LinuxResources::default();
        apply(&res(), &HostInfo::default(), &mut out).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(
            (cpu.period(), cpu.quota(), cpu.shares()),
            (Some(100_000), Some(50_000), Some(512))
        );
        assert_eq!(
            (cpu.cpus().as_deref(), cpu.mems().as_deref()),
            (Some("0-1"), Some("0"))
        );
        let mem = out.memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        let huge = out.hugepage_limits().clone().unwrap();
        assert_eq!(
            (huge[0].page_size().as_str(), huge[0].limit()),
            ("2MB", 4 << 21)
        );
        assert_eq!(out.unified().as_ref().unwrap()["memory.high"], "50000000");
    }

    #[test]
    fn swap_and_controllers() {
        let mut out = LinuxResources::default();
        let r = cri::LinuxContainerResources {
            memory_swap_limit_in_bytes: 128 << 20,
            ..res()
        };
        apply(&r, &HostInfo::default(), &mut out).unwrap();
        assert_eq!(out.memory().unwrap().swap(), Some(128 << 20));
        let host = HostInfo {
            swap_controller: false,
            hugetlb_controller: false,
            ..HostInfo::default()
        };
        let mut out = LinuxResources::default();
        apply(&res(), &host, &mut out).unwrap();
        assert_eq!(out.memory().unwrap().swap(), None);
        assert!(out.hugepage_limits().is_none());
    }

    #[test]
    fn zero_means_unset() {
        let mut out = LinuxResources::default();
        apply(
            &cri::LinuxContainerResources::default(),
            &HostInfo::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, LinuxResources::default());
        let bad = cri::LinuxContainerResources {
            cpu_shares: -1,
            ..Default::default()
        };
        assert!(apply(&bad, &HostInfo::default(), &mut out).is_err());
    }

    #[test]
    fn oom_score_adj_restricted() {
        let host = HostInfo::default();
        assert_eq!(oom_score_adj(-998, &host).unwrap(), -998);
        let restricted = HostInfo {
            min_oom_score_adj: Some(0),
            ..HostInfo::default()
        };
        assert_eq!(oom_score_adj(-998, &restricted).unwrap(), 0);
        assert_eq!(oom_score_adj(500, &restricted).unwrap(), 500);
        assert!(oom_score_adj(1001, &host).is_err());
    }

    #[test]
    fn sandbox_resource_annotations() {
        let a = sandbox_annotations(&res());
        assert_eq!(a["io.kubernetes.cri.sandbox-cpu-quota"], "50000");
        assert_eq!(
            a["io.kubernetes.cri.sandbox-memory"],
            (64 << 20).to_string()
        );
    }
}
