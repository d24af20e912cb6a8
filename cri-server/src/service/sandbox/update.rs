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
//! berth has no NRI, so it does the rest of what containerd does and no more: the pod's
//! cgroup is left alone (also the `/berth/<id>` directory or `berth-pod<id>.slice` berth makes
//! for a pod without cgroup_parent, which no kubelet sized either), and the new resources are
//! recorded in the sandbox's checkpoint. The CRI's PodSandboxStatus has no field for them:
//! they are reported in its verbose info (`overhead`, `resources`). Idempotent: the same
//! resources again change nothing.

use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::error::SandboxError;
use super::{blocking, Sandboxes};
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
    let sb = sandbox.clone();
    blocking(move || Ok(sb.set_resources(resources)?))
        .await
        .map_err(|e| e.into_status(&pod))?;
    tracing::info!(pod = %pod, sandbox = %sandbox.meta.id, "pod resources recorded (the pod cgroup is the kubelet's)");
    Ok(cri::UpdatePodSandboxResourcesResponse {})
}
