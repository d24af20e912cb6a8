//! PodSandboxStatus and ListPodSandbox.

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::error::SandboxError;
use super::{blocking, Sandboxes};
use crate::service::container::ContainerService;
use crate::store::sandbox::{Sandbox, SandboxState};

pub(super) async fn status(
    ctx: &Arc<Sandboxes>,
    req: cri::PodSandboxStatusRequest,
    containers: &ContainerService,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    let id = req.pod_sandbox_id;
    let sandbox = ctx
        .store
        .get(&id)
        .map_err(|e| SandboxError::from(e).into_status(&id))?;
    let pod = sandbox.meta.pod();
    let verbose = req.verbose;
    let (sb, refresh_ctx) = (sandbox.clone(), ctx.clone());
    let (state, spec) = blocking(move || {
        let state = refresh_ctx.refresh(&sb)?;
        let spec = verbose
            .then(|| std::fs::read(sb.meta.bundle().join("config.json")).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        Ok((state, spec))
    })
    .await
    .map_err(|e| e.into_status(&pod))?;
    // The pod's and its containers' statuses as of one moment (the evented PLEG compares
    // this timestamp with its cache's).
    let timestamp = nanos(&chrono::Utc::now());
    let containers_statuses = containers.statuses_in_sandbox(&sandbox.meta.id).await?;
    let status = cri_status(&sandbox, &state);
    let mut info = HashMap::new();
    if verbose {
        info.insert(
            "info".to_owned(),
            verbose_info(&sandbox, &state, spec).to_string(),
        );
    }
    Ok(cri::PodSandboxStatusResponse {
        status: Some(status),
        info,
        containers_statuses,
        timestamp,
    })
}

/// The CRI status of a sandbox in `state` (no I/O).
pub(super) fn cri_status(sandbox: &Sandbox, state: &SandboxState) -> cri::PodSandboxStatus {
    let meta = &sandbox.meta;
    let linux = meta.config.linux.as_ref();
    let ns_options = linux
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    // After StopPodSandbox the IPs went back to IPAM (CNI DEL): none is reported.
    let network = (!meta.host_network()).then(|| cri::PodSandboxNetworkStatus {
        ip: meta
            .ips
            .first()
            .filter(|_| !state.is_released())
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        additional_ips: meta
            .ips
            .iter()
            .skip(1)
            .filter(|_| !state.is_released())
            .map(|ip| cri::PodIp { ip: ip.to_string() })
            .collect(),
    });
    cri::PodSandboxStatus {
        id: meta.id.clone(),
        metadata: meta.config.metadata.clone(),
        state: state.to_cri() as i32,
        created_at: nanos(&meta.created_at),
        network,
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(ns_options),
            }),
        }),
        labels: meta.config.labels.clone(),
        annotations: meta.config.annotations.clone(),
        runtime_handler: meta.runtime.handler.clone(),
    }
}

/// The verbose `info` JSON (containerd's keys where they exist).
fn verbose_info(
    sandbox: &Sandbox,
    state: &SandboxState,
    spec: Option<serde_json::Value>,
) -> serde_json::Value {
    let meta = &sandbox.meta;
    let resources = sandbox.resources();
    let pid = match state {
        SandboxState::Ready { pid } => *pid,
        SandboxState::NotReady { .. } => meta.pid,
    };
    serde_json::json!({
        "pid": pid,
        "state": state,
        "image": meta.image_name(),
        "runtimeHandler": meta.runtime.handler,
        "runtimeType": meta.runtime.path,
        "runtimeRoot": meta.runtime.root,
        "netNamespacePath": meta.netns,
        "cniNetwork": meta.network,
        "cgroupParent": meta.cgroup_parent,
        "cgroupsPath": meta.cgroups_path,
        "stateDir": meta.state_dir,
        "files": meta.files,
        // The pod-level resources in force (UpdatePodSandboxResources', else the config's):
        // PodSandboxStatus has no field for them.
        "overhead": resources.overhead,
        "resources": resources.resources,
        "config": meta.config,
        "runtimeSpec": spec,
    })
}

pub(super) async fn list(
    ctx: &Arc<Sandboxes>,
    req: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let all = ctx.store.list();
    let ctx = ctx.clone();
    let items = blocking(move || {
        let mut items = Vec::new();
        for sandbox in all {
            let meta = &sandbox.meta;
            if !filter.id.is_empty() && !meta.id.starts_with(&filter.id) {
                continue;
            }
            if !labels_match(&meta.config.labels, &filter.label_selector) {
                continue;
            }
            let state = ctx.refresh(&sandbox)?.to_cri();
            if filter
                .state
                .as_ref()
                .is_some_and(|s| s.state != state as i32)
            {
                continue;
            }
            items.push(cri::PodSandbox {
                id: meta.id.clone(),
                metadata: meta.config.metadata.clone(),
                state: state as i32,
                created_at: nanos(&meta.created_at),
                labels: meta.config.labels.clone(),
                annotations: meta.config.annotations.clone(),
                runtime_handler: meta.runtime.handler.clone(),
            });
        }
        Ok(items)
    })
    .await
    .map_err(|e| e.into_status("list"))?;
    Ok(cri::ListPodSandboxResponse { items })
}

/// Every `key=value` of the selector is among the labels.
pub(super) fn labels_match(
    labels: &HashMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) fn nanos(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}
