//! UpdateContainerResources (`<runtime> update --resources -` with the OCI form of the CRI
//! resources, recorded in the status) and ReopenContainerLog (the shim reopens the log file
//! the kubelet rotated).

use std::sync::Arc;

use cri_api::v1 as cri;
use serde_json::{json, Map, Value};

use super::error::{blocking, ContainerError};
use super::Containers;
use crate::store::container::State;

pub(super) async fn update_resources(
    inner: &Arc<Containers>,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, ContainerError> {
    let c = inner.get(&req.container_id)?;
    let Some(resources) = req.linux else {
        return Ok(cri::UpdateContainerResourcesResponse {});
    };
    let inner = inner.clone();
    blocking("update container resources", move || {
        let runtime = inner.runtime(&c)?;
        c.update(|s| {
            if matches!(s.state, State::Created | State::Running { .. }) {
                runtime.update(c.id(), &oci_resources(&resources))?;
            }
            s.resources = Some(resources.clone());
            Ok::<_, ContainerError>(())
        })?;
        tracing::info!(container = %c.id(), "container resources updated");
        Ok(cri::UpdateContainerResourcesResponse {})
    })
    .await
}

/// OCI `linux.resources` from the CRI's (zero means "not set", as the CRI defines it).
pub(super) fn oci_resources(r: &cri::LinuxContainerResources) -> Value {
    let mut out = Map::new();
    let mut cpu = Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    let mut memory = Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !memory.is_empty() {
        out.insert("memory".into(), Value::Object(memory));
    }
    if !r.hugepage_limits.is_empty() {
        let limits: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
        out.insert("hugepageLimits".into(), Value::Array(limits));
    }
    if !r.unified.is_empty() {
        out.insert("unified".into(), json!(r.unified));
    }
    Value::Object(out)
}

pub(super) async fn reopen_log(
    inner: &Arc<Containers>,
    req: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, ContainerError> {
    let c = inner.get(&req.container_id)?;
    let inner = inner.clone();
    blocking("reopen container log", move || {
        let State::Running { pid, .. } = c.status().state else {
            return Err(ContainerError::WrongState {
                id: c.id().to_owned(),
                state: c.status().state.name(),
                op: "reopen its log (it is not running)",
            });
        };
        inner
            .shim(&c, pid)
            .reopen_log()
            .map_err(|source| ContainerError::Shim {
                id: c.id().to_owned(),
                source,
            })?;
        Ok(cri::ReopenContainerLogResponse {})
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_are_left_out() {
        let r = cri::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 16 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        assert_eq!(
            oci_resources(&r),
            json!({"cpu": {"shares": 512, "cpus": "0"}, "memory": {"limit": 16777216}})
        );
        assert_eq!(oci_resources(&Default::default()), json!({}));
    }
}
