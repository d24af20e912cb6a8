//! UpdatePodSandboxResources (in-place pod resize, KEP-1287; pod-level resources, KEP-5419):
//! the kubelet tells the runtime the pod's new overhead and resources.
//!
//! What berth does with them, decided from what containerd 2.x does
//! (`internal/cri/server/sandbox_update_resources.go`): containerd writes no cgroup file. It
//! hands the new overhead and resources to its NRI plugins, records them in the sandbox's
//! status and in its sandbox store (an extension of the sandbox record), and answers OK. The
//! pod cgroup is the kubelet's: it made it (`cgroup_parent`, a cgroupfs directory or a slice
//! under the systemd driver) and resized it before this call, which only informs the runtime.
//! Writing the same limits again from here would race the kubelet's own writes (and under
//! systemd, fight the slice's properties, which systemd would put back).
//!
//! berth has no NRI, so it does the rest of what containerd does: the new resources are
//! recorded in the sandbox's checkpoint (the CRI's PodSandboxStatus has no field for them:
//! they are reported in its verbose info, `overhead` and `resources`), and a kubelet's pod
//! cgroup is left alone. A pod cgroup berth made itself — `/berth/<id>`, or the slice
//! `berth-pod<id>.slice`, for a pod run without cgroup_parent, which no kubelet sizes — gets
//! the limits applied, as the kubelet would size its own: the pod's resources plus its
//! overhead (memory limit, CPU quota and shares added; cpuset, huge pages and unified values
//! from `resources`). Idempotent: the same resources again write the same values.

use std::sync::Arc;

use berth_cgroups::CgroupManager;
use cri_api::v1 as cri;
use tonic::Status;

use super::error::SandboxError;
use super::{blocking, cgroup, Sandboxes};
use crate::config::CgroupDriver;
use crate::store::sandbox::PodResources;

pub(super) async fn update_resources(
    ctx: &Arc<Sandboxes>,
    req: cri::UpdatePodSandboxResourcesRequest,
) -> Result<cri::UpdatePodSandboxResourcesResponse, Status> {
    let id = req.pod_sandbox_id;
    let sandbox = ctx
        .store
        .get(&id)
        .map_err(|e| SandboxError::from(e).into_status(&id))?;
    let pod = sandbox.meta.pod();
    let resources = PodResources {
        overhead: req.overhead,
        resources: req.resources,
    };
    let meta = sandbox.meta.clone();
    let limits = if meta.owns_cgroup_parent {
        let sum = pod_limits(resources.resources.as_ref(), resources.overhead.as_ref());
        let mut oci = oci_spec::runtime::LinuxResources::default();
        crate::spec::apply_resources(&sum, &ctx.host, &mut oci)
            .map_err(|e| SandboxError::from(e).into_status(&pod))?;
        Some(oci)
    } else {
        None
    };
    let sb = sandbox.clone();
    blocking(move || {
        if let Some(oci) = &limits {
            apply(&meta.cgroup_parent, &meta.id, meta.cgroup_driver(), oci)?;
        }
        Ok(sb.set_resources(resources)?)
    })
    .await
    .map_err(|e| e.into_status(&pod))?;
    if sandbox.meta.owns_cgroup_parent {
        tracing::info!(pod = %pod, sandbox = %sandbox.meta.id, cgroup = %sandbox.meta.cgroup_parent, "pod resources applied to the pod cgroup berth made");
    } else {
        tracing::info!(pod = %pod, sandbox = %sandbox.meta.id, "pod resources recorded (the pod cgroup is the kubelet's)");
    }
    Ok(cri::UpdatePodSandboxResourcesResponse {})
}

/// The pod cgroup's limits: `resources` plus `overhead` where both limit (memory, CPU quota at
/// one period, shares); a limit `resources` leaves unset stays unset (no limit plus overhead is
/// still no limit); cpuset, huge pages and unified values are `resources`'.
fn pod_limits(
    resources: Option<&cri::LinuxContainerResources>,
    overhead: Option<&cri::LinuxContainerResources>,
) -> cri::LinuxContainerResources {
    let mut sum = resources.cloned().unwrap_or_default();
    let Some(o) = overhead else {
        return sum;
    };
    if sum.memory_limit_in_bytes > 0 {
        sum.memory_limit_in_bytes += o.memory_limit_in_bytes.max(0);
    }
    if sum.cpu_quota > 0 && o.cpu_quota > 0 {
        let period = if sum.cpu_period > 0 {
            sum.cpu_period
        } else {
            100_000
        };
        let o_period = if o.cpu_period > 0 {
            o.cpu_period
        } else {
            100_000
        };
        // The overhead's quota at the pod's period.
        sum.cpu_quota += o.cpu_quota * period / o_period;
    }
    if sum.cpu_shares > 0 {
        sum.cpu_shares += o.cpu_shares.max(0);
    }
    sum
}

/// Writes `oci` to the pod cgroup berth made: the cgroupfs directory in every hierarchy, or
/// under systemd the slice's properties (and the files systemd has no property for).
fn apply(
    parent: &str,
    id: &str,
    driver: CgroupDriver,
    oci: &oci_spec::runtime::LinuxResources,
) -> Result<(), SandboxError> {
    let cgroup = |source| SandboxError::Cgroup {
        path: parent.to_owned(),
        source: Box::new(source),
    };
    match driver {
        CgroupDriver::Cgroupfs => {
            let manager =
                berth_cgroups::manager(&cgroup::path(parent, id, driver)?).map_err(cgroup)?;
            manager.apply(oci).map_err(cgroup)
        }
        CgroupDriver::Systemd => {
            let unit = berth_cgroups::SystemdUnit::parse(&format!("::{parent}")).map_err(cgroup)?;
            let manager = berth_cgroups::systemd::SystemdManager::existing(unit).map_err(cgroup)?;
            manager.apply(oci).map_err(cgroup)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(memory: i64, quota: i64, period: i64, shares: i64) -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_quota: quota,
            cpu_period: period,
            cpu_shares: shares,
            ..Default::default()
        }
    }

    #[test]
    fn pod_limits_add_the_overhead_to_what_is_limited() {
        let r = res(64 << 20, 50_000, 100_000, 512);
        let o = res(16 << 20, 5_000, 50_000, 64);
        let sum = pod_limits(Some(&r), Some(&o));
        assert_eq!(sum.memory_limit_in_bytes, 80 << 20);
        assert_eq!(sum.cpu_quota, 60_000, "5ms per 50ms is 10ms per 100ms");
        assert_eq!(sum.cpu_period, 100_000);
        assert_eq!(sum.cpu_shares, 576);
        // No overhead: the resources as they are; unlimited stays unlimited.
        assert_eq!(pod_limits(Some(&r), None), r);
        let unlimited = pod_limits(Some(&res(0, 0, 0, 0)), Some(&o));
        assert_eq!(unlimited, res(0, 0, 0, 0));
        assert_eq!(
            pod_limits(None, None),
            cri::LinuxContainerResources::default()
        );
    }
}
