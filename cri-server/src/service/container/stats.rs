//! ContainerStats and ListContainerStats: CPU and memory from the container's cgroup, the
//! writable layer from its snapshot (containerd: `container_stats_list.go`).

use std::sync::Arc;

use cri_api::v1 as cri;

use super::error::{blocking, ContainerError};
use super::Containers;
use crate::store::container::{Container, State};

pub(super) async fn stats(
    inner: &Arc<Containers>,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, ContainerError> {
    let c = inner.get(&req.container_id)?;
    let inner = inner.clone();
    blocking("container stats", move || {
        Ok(cri::ContainerStatsResponse {
            stats: Some(one(&inner, &c)),
        })
    })
    .await
}

pub(super) async fn list_stats(
    inner: &Arc<Containers>,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, ContainerError> {
    let stats = records(inner, req.filter.unwrap_or_default()).await?;
    Ok(cri::ListContainerStatsResponse { stats })
}

/// The stats of the containers that have not exited and pass `filter`, oldest first
/// (ListContainerStats and StreamContainerStats).
pub(super) async fn records(
    inner: &Arc<Containers>,
    filter: cri::ContainerStatsFilter,
) -> Result<Vec<cri::ContainerStats>, ContainerError> {
    let containers: Vec<Arc<Container>> = inner
        .store
        .list()
        .into_iter()
        .filter(|c| !matches!(c.status().state, State::Exited { .. }))
        .filter(|c| super::status::matches_stats(c, &filter))
        .collect();
    let inner = inner.clone();
    blocking("list container stats", move || {
        Ok(containers.iter().map(|c| one(&inner, c)).collect())
    })
    .await
}

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// One container's stats; what cannot be measured (a cgroup already gone) is left unset.
fn one(inner: &Containers, c: &Container) -> cri::ContainerStats {
    let now = super::status::now_ns();
    let config = &c.meta.config;
    let mut out = cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id().to_owned(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        ..Default::default()
    };
    let cgroup = super::cgroup_path(c)
        .and_then(|p| berth_cgroups::manager(&p))
        .and_then(|m| m.stats());
    match cgroup {
        Ok(s) => {
            out.cpu = Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(s.cpu.usage_total_ns),
                usage_nano_cores: None,
                psi: None,
            });
            let m = &s.memory;
            out.memory = Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: value(m.working_set),
                available_bytes: m
                    .limit
                    .map(|l| l.saturating_sub(m.working_set))
                    .and_then(value),
                usage_bytes: value(m.usage),
                rss_bytes: value(m.rss),
                page_faults: value(m.pgfault),
                major_page_faults: value(m.pgmajfault),
                psi: None,
            });
        }
        Err(e) => {
            tracing::debug!(container = %c.id(), error = %e, "no cgroup stats");
        }
    }
    match inner.images.snapshots().usage(&c.meta.snapshot_key) {
        Ok(u) => {
            out.writable_layer = Some(cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: inner.images.snapshots().root().display().to_string(),
                }),
                used_bytes: value(u.bytes),
                inodes_used: value(u.inodes),
            });
        }
        Err(e) => {
            tracing::debug!(container = %c.id(), error = %e, "no writable layer usage");
        }
    }
    out
}

/// The cAdvisor-named metrics of the running containers of a sandbox (ListPodSandboxMetrics).
/// Blocking: reads cgroup files.
pub(super) fn metrics_in_sandbox(
    inner: &Containers,
    sandbox_id: &str,
    pod: &cri::PodSandboxMetadata,
) -> Vec<cri::ContainerMetrics> {
    use crate::service::metrics::{self, Identity, Usage};
    inner
        .in_sandbox(sandbox_id)
        .into_iter()
        .filter_map(|c| {
            let status = c.status();
            let State::Running { started_at, .. } = status.state else {
                return None;
            };
            let manager = super::cgroup_path(&c).and_then(|p| berth_cgroups::manager(&p));
            let (cgroup, oom_kills) = match manager {
                Ok(m) => (m.stats().ok(), m.oom_kill_count().ok()),
                Err(e) => {
                    tracing::debug!(container = %c.id(), error = %e, "no cgroup for metrics");
                    (None, None)
                }
            };
            let snapshots = inner.images.snapshots();
            let writable_layer = snapshots
                .usage(&c.meta.snapshot_key)
                .ok()
                .map(|u| (snapshots.root().display().to_string(), u.bytes));
            let who = Identity {
                container: c
                    .meta
                    .config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                id: c.id().to_owned(),
                image: c.meta.image_name.clone(),
                name: c.meta.name.clone(),
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
            };
            let usage = Usage {
                cgroup,
                oom_kills,
                writable_layer,
                resources: status.resources,
                started_at: Some(started_at),
                network: Vec::new(),
            };
            Some(cri::ContainerMetrics {
                container_id: c.id().to_owned(),
                metrics: metrics::metrics(&who, &usage),
            })
        })
        .collect()
}
