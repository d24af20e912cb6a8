//! PodSandboxStats and ListPodSandboxStats: CPU, memory and I/O pressure from the pod's cgroup
//! (pressure stall information on cgroup v2 only, absent on v1), network from the pause's
//! netns (`/proc/<pid>/net/dev`), and the containers' stats from the container service.

use std::sync::Arc;

use chrono::Utc;
use cri_api::v1 as cri;
use tonic::Status;

use super::error::{Result, SandboxError};
use super::network::POD_IFNAME;
use super::status::{labels_match, nanos};
use super::{blocking, cgroup, Sandboxes};
use crate::service::container::{cgroup_usage, ContainerService};
use crate::service::metrics::{parse_net_dev, Identity, Usage};
use crate::store::sandbox::{Sandbox, SandboxState};

pub(super) async fn stats(
    ctx: &Arc<Sandboxes>,
    req: cri::PodSandboxStatsRequest,
    containers: &ContainerService,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    let id = req.pod_sandbox_id;
    let sandbox = ctx
        .store
        .get(&id)
        .map_err(|e| SandboxError::from(e).into_status(&id))?;
    let pod = sandbox.meta.pod();
    let stats = sandbox_stats(ctx, sandbox, containers)
        .await
        .map_err(|e| e.into_status(&pod))?;
    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
}

pub(super) async fn list_stats(
    ctx: &Arc<Sandboxes>,
    req: cri::ListPodSandboxStatsRequest,
    containers: &ContainerService,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let mut stats = Vec::new();
    for sandbox in ctx.store.list() {
        if !filter.id.is_empty() && !sandbox.meta.id.starts_with(&filter.id) {
            continue;
        }
        if !labels_match(&sandbox.meta.config.labels, &filter.label_selector) {
            continue;
        }
        // Only running pods have usage; a sandbox that fails to measure is skipped (logged),
        // as containerd does, so one broken pod does not hide the others.
        if !sandbox.state().is_ready() {
            continue;
        }
        let id = sandbox.meta.id.clone();
        match sandbox_stats(ctx, sandbox, containers).await {
            Ok(s) => stats.push(s),
            Err(e) => tracing::warn!(sandbox = %id, error = %e, "pod sandbox stats"),
        }
    }
    Ok(cri::ListPodSandboxStatsResponse { stats })
}

async fn sandbox_stats(
    ctx: &Arc<Sandboxes>,
    sandbox: Arc<Sandbox>,
    containers: &ContainerService,
) -> Result<cri::PodSandboxStats> {
    let meta = &sandbox.meta;
    let container_stats = containers
        .list_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: meta.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.stats)
        .unwrap_or_default();
    let (ctx2, sb) = (ctx.clone(), sandbox.clone());
    let mut linux = blocking(move || measure(&ctx2, &sb)).await?;
    linux.containers = container_stats;
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: meta.id.clone(),
            metadata: meta.config.metadata.clone(),
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
        }),
        linux: Some(linux),
        windows: None,
    })
}

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// Blocking: reads cgroup files and /proc.
fn measure(ctx: &Sandboxes, sandbox: &Sandbox) -> Result<cri::LinuxPodSandboxStats> {
    let meta = &sandbox.meta;
    let now = nanos(&Utc::now());
    let cgroup = |source| SandboxError::Cgroup {
        path: meta.cgroup_parent.clone(),
        source: Box::new(source),
    };
    let path = cgroup::path(&meta.cgroup_parent, &meta.id, meta.cgroup_driver())?;
    let usage = berth_cgroups::manager(&path)
        .and_then(|m| m.stats())
        .map_err(cgroup)?;
    let mut converted = cgroup_usage(&usage, now);
    converted.cpu.usage_nano_cores = ctx
        .stats
        .rate(&meta.id, now, usage.cpu.usage_total_ns)
        .and_then(value);
    let network = match sandbox.state() {
        SandboxState::Ready { pid } if !meta.host_network() => {
            std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .ok()
                .map(|text| network_usage(&text, now))
        }
        _ => None,
    };
    Ok(cri::LinuxPodSandboxStats {
        cpu: Some(converted.cpu),
        memory: Some(converted.memory),
        network,
        process: Some(cri::ProcessUsage {
            timestamp: now,
            process_count: value(usage.pids.current),
        }),
        containers: Vec::new(),
        io: converted.io,
    })
}

/// The pod interface is the default, the others (but `lo`) follow.
fn network_usage(text: &str, now: i64) -> cri::NetworkUsage {
    let mut usage = cri::NetworkUsage {
        timestamp: now,
        default_interface: None,
        interfaces: Vec::new(),
    };
    for i in parse_net_dev(text) {
        let name = i.name;
        let iface = cri::NetworkInterfaceUsage {
            rx_bytes: value(i.rx_bytes),
            rx_errors: value(i.rx_errors),
            tx_bytes: value(i.tx_bytes),
            tx_errors: value(i.tx_errors),
            name,
        };
        if iface.name == POD_IFNAME {
            usage.default_interface = Some(iface);
        } else {
            usage.interfaces.push(iface);
        }
    }
    usage
}

/// ListPodSandboxMetrics: cAdvisor-named metrics of every ready pod (its cgroup and network)
/// and of its running containers.
pub(super) async fn metrics(
    ctx: &Arc<Sandboxes>,
    containers: &ContainerService,
) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    let ready: Vec<Arc<Sandbox>> = ctx
        .store
        .list()
        .into_iter()
        .filter(|s| s.state().is_ready())
        .collect();
    let containers = containers.clone();
    let pod_metrics =
        blocking(move || Ok(ready.iter().map(|s| pod_metrics(s, &containers)).collect()))
            .await
            .map_err(|e| e.into_status("metrics"))?;
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
}

/// Blocking: reads cgroup files and /proc.
fn pod_metrics(sandbox: &Sandbox, containers: &ContainerService) -> cri::PodSandboxMetrics {
    let meta = &sandbox.meta;
    let pod = meta.config.metadata.clone().unwrap_or_default();
    let cgroup = cgroup::path(&meta.cgroup_parent, &meta.id, meta.cgroup_driver())
        .ok()
        .and_then(|p| berth_cgroups::manager(&p).ok())
        .and_then(|m| m.stats().ok());
    let network = match sandbox.state() {
        SandboxState::Ready { pid } if !meta.host_network() => {
            std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
                .map(|t| parse_net_dev(&t))
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let who = Identity {
        container: String::new(),
        id: meta.id.clone(),
        image: meta.image_name().to_owned(),
        name: meta.name.clone(),
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
    };
    let usage = Usage {
        cgroup,
        network,
        started_at: Some(meta.created_at),
        ..Default::default()
    };
    cri::PodSandboxMetrics {
        pod_sandbox_id: meta.id.clone(),
        metrics: crate::service::metrics::metrics(&who, &usage),
        container_metrics: containers.metrics_in_sandbox(&meta.id, &pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    1500      10    2    0    0     0          0         0      700       7    1    0    0     0       0          0\n";
        let u = network_usage(text, 5);
        let d = u.default_interface.unwrap();
        assert_eq!(d.name, "eth0");
        assert_eq!(d.rx_bytes.unwrap().value, 1500);
        assert_eq!(d.rx_errors.unwrap().value, 2);
        assert_eq!(d.tx_bytes.unwrap().value, 700);
        assert_eq!(d.tx_errors.unwrap().value, 1);
        assert!(u.interfaces.is_empty());
    }
}
