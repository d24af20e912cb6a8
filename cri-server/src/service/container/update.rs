//! UpdateContainerResources (`<runtime> update --resources -` with the OCI form of the CRI
//! resources, recorded in the status) and ReopenContainerLog (the shim reopens the log file
//! the kubelet rotated).

use std::sync::Arc;

use cri_api::v1 as cri;
use serde_json::Value;

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
    // The OCI form CreateContainer gives the same values (memory+swap follows the memory
    // limit unless set, so that a larger limit is not refused by the memory+swap limit
    // CreateContainer set to the old one).
    let oci = oci_resources(&resources, &inner.host).map_err(|e| ContainerError::Invalid {
        rpc: "UpdateContainerResources",
        reason: format!("container {}: {e}", c.id()),
    })?;
    let inner = inner.clone();
    blocking("update container resources", move || {
        let runtime = inner.runtime(&c)?;
        // `<runtime> update` writes the cgroup of the running container in place: the same
        // resources again write the same values, and the container is never restarted.
        c.update(|s| {
            if matches!(s.state, State::Created | State::Running { .. }) {
                runtime.update(c.id(), &oci)?;
            }
            s.resources = Some(resources.clone());
            Ok::<_, ContainerError>(())
        })?;
        tracing::info!(container = %c.id(), "container resources updated");
        Ok(cri::UpdateContainerResourcesResponse {})
    })
    .await
}

/// OCI `linux.resources` from the CRI's, as CreateContainer converts them (zero means "not
/// set", as the CRI defines it).
pub(super) fn oci_resources(
    r: &cri::LinuxContainerResources,
    host: &crate::spec::HostInfo,
) -> Result<Value, crate::spec::SpecError> {
    let mut out = oci_spec::runtime::LinuxResources::default();
    crate::spec::apply_resources(r, host, &mut out)?;
    Ok(serde_json::to_value(out).expect("OCI resources serialize"))
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
    use serde_json::json;

    #[test]
    fn zero_fields_are_left_out_and_swap_follows_the_limit() {
        let r = cri::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 16 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let host = crate::spec::HostInfo::default();
        assert_eq!(
            oci_resources(&r, &host).unwrap(),
            json!({"cpu": {"shares": 512, "cpus": "0"},
                   "memory": {"limit": 16777216, "swap": 16777216}})
        );
        let no_swap = crate::spec::HostInfo {
            swap_controller: false,
            ..Default::default()
        };
        assert_eq!(
            oci_resources(&r, &no_swap).unwrap(),
            json!({"cpu": {"shares": 512, "cpus": "0"}, "memory": {"limit": 16777216}})
        );
        assert_eq!(
            oci_resources(&Default::default(), &host).unwrap(),
            json!({})
        );
        let negative = cri::LinuxContainerResources {
            cpu_shares: -1,
            ..Default::default()
        };
        assert!(oci_resources(&negative, &host).is_err());
    }
}
