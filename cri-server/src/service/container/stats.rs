//! ContainerStats and ListContainerStats: CPU, memory and I/O pressure from the container's
//! cgroup, the writable layer from its snapshot (containerd: `container_stats_list.go`).
//! Pressure stall information (KEP-4205) is cgroup v2's: on v1 `cpu.psi`, `memory.psi` and
//! `io` are absent, never zero.

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

/// A cgroup's usage in the CRI's terms, the same for pods and containers.
pub(crate) struct CgroupUsage {
    /// `usage_nano_cores` is left to the caller (a rate between two samples).
    pub(crate) cpu: cri::CpuUsage,
    pub(crate) memory: cri::MemoryUsage,
    /// `None` where the cgroup has no I/O pressure (cgroup v1, PSI off): IoUsage carries
    /// nothing else.
    pub(crate) io: Option<cri::IoUsage>,
}

/// Converts a cgroup's stats, sampled at `now` (nanoseconds since the epoch).
pub(crate) fn cgroup_usage(s: &berth_cgroups::Stats, now: i64) -> CgroupUsage {
    let m = &s.memory;
    CgroupUsage {
        cpu: cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(s.cpu.usage_total_ns),
            usage_nano_cores: None,
            psi: s.cpu.psi.as_ref().map(psi),
        },
        memory: cri::MemoryUsage {
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
            psi: m.psi.as_ref().map(psi),
        },
        io: s.io.psi.as_ref().map(|p| cri::IoUsage {
            timestamp: now,
            psi: Some(psi(p)),
        }),
    }
}

/// Swap in use, and on cgroup v2 (where memory.swap.max limits swap alone) what is left of
/// the limit; cgroup v1's limit is of memory and swap together, which says nothing of swap.
fn swap(m: &berth_cgroups::stats::MemoryStats, now: i64, v2: bool) -> cri::SwapUsage {
    cri::SwapUsage {
        timestamp: now,
        swap_usage_bytes: value(m.swap_usage),
        swap_available_bytes: m
            .swap_limit
            .filter(|_| v2)
            .map(|l| l.saturating_sub(m.swap_usage))
            .and_then(value),
    }
}

/// A pressure file as the CRI's PsiStats: totals in microseconds, as the kernel counts them
/// (and cAdvisor and containerd pass them on), averages in percent; `Full` absent where the
/// kernel has no full line.
fn psi(p: &berth_cgroups::stats::Psi) -> cri::PsiStats {
    let data = |d: &berth_cgroups::stats::PsiData| cri::PsiData {
        total: d.total_us,
        avg10: d.avg10,
        avg60: d.avg60,
        avg300: d.avg300,
    };
    cri::PsiStats {
        full: p.full.as_ref().map(data),
        some: Some(data(&p.some)),
    }
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
            let mut usage = cgroup_usage(&s, now);
            usage.cpu.usage_nano_cores = inner
                .cpu
                .rate(c.id(), now, s.cpu.usage_total_ns)
                .and_then(value);
            out.cpu = Some(usage.cpu);
            out.memory = Some(usage.memory);
            out.io = usage.io;
            out.swap = Some(swap(&s.memory, now, inner.host.cgroup2_unified));
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

#[cfg(test)]
mod tests {
    use berth_cgroups::stats::{Psi, PsiData};
    use berth_cgroups::Stats;

    use super::*;

    fn line(total_us: u64, avg10: f64) -> PsiData {
        PsiData {
            total_us,
            avg10,
            avg60: 0.5,
            avg300: 0.25,
        }
    }

    #[test]
    fn pressure_is_converted_where_the_cgroup_has_it() {
        let mut s = Stats::default();
        s.cpu.usage_total_ns = 7;
        s.cpu.psi = Some(Psi {
            some: line(1_500, 4.57),
            // cpu.pressure of a kernel before 5.13.
            full: None,
        });
        s.memory.psi = Some(Psi {
            some: line(3_000_000, 1.0),
            full: Some(line(2_000_000, 0.1)),
        });
        s.io.psi = Some(Psi {
            some: line(9, 0.0),
            full: Some(line(4, 0.0)),
        });
        let u = cgroup_usage(&s, 42);
        assert_eq!(u.cpu.usage_core_nano_seconds.unwrap().value, 7);
        let cpu = u.cpu.psi.unwrap();
        assert_eq!(
            cpu.some,
            Some(cri::PsiData {
                total: 1_500,
                avg10: 4.57,
                avg60: 0.5,
                avg300: 0.25
            })
        );
        assert_eq!(cpu.full, None);
        let memory = u.memory.psi.unwrap();
        assert_eq!(memory.some.unwrap().total, 3_000_000);
        assert_eq!(
            memory.full.map(|f| (f.total, f.avg10)),
            Some((2_000_000, 0.1))
        );
        let io = u.io.unwrap();
        assert_eq!(io.timestamp, 42);
        let io = io.psi.unwrap();
        assert_eq!((io.some.unwrap().total, io.full.unwrap().total), (9, 4));
    }

    #[test]
    fn no_pressure_leaves_the_fields_absent() {
        // cgroup v1, or PSI off: the cgroup gives none.
        let u = cgroup_usage(&Stats::default(), 42);
        assert_eq!(u.cpu.psi, None);
        assert_eq!(u.memory.psi, None);
        assert_eq!(u.io, None);
        // The rest is still there.
        assert_eq!(u.memory.usage_bytes.unwrap().value, 0);
        assert_eq!(u.memory.timestamp, 42);
    }
}
