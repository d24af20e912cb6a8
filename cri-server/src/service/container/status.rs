//! ListContainers and ContainerStatus: the store's records as CRI messages.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cri_api::v1 as cri;

use super::error::{blocking, ContainerError};
use super::{monitor, Containers};
use crate::store::container::{Container, State};

pub(super) fn now_ns() -> i64 {
    ns(Utc::now())
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(0)
}

fn image_spec(c: &Container) -> cri::ImageSpec {
    let asked = c.meta.config.image.clone().unwrap_or_default();
    cri::ImageSpec {
        image: c.meta.image_name.clone(),
        annotations: asked.annotations,
        user_specified_image: asked.user_specified_image,
        runtime_handler: asked.runtime_handler,
        image_ref: asked.image_ref,
    }
}

/// The CRI status of `c` from its record (no I/O).
pub(super) fn cri_status(c: &Container, _verbose: bool) -> cri::ContainerStatus {
    let status = c.status();
    let (started_at, finished_at, exit_code, reason, message) = match &status.state {
        State::Created => (0, 0, 0, String::new(), String::new()),
        State::Running { started_at, .. } => (ns(*started_at), 0, 0, String::new(), String::new()),
        State::Exited {
            started_at,
            finished_at,
            code,
            reason,
            message,
        } => (
            started_at.map(ns).unwrap_or(0),
            ns(*finished_at),
            *code,
            reason.as_cri().to_owned(),
            message.clone(),
        ),
    };
    let config = &c.meta.config;
    cri::ContainerStatus {
        id: c.id().to_owned(),
        metadata: config.metadata.clone(),
        state: status.state.cri() as i32,
        created_at: ns(c.meta.created_at),
        started_at,
        finished_at,
        exit_code,
        image: Some(image_spec(c)),
        image_ref: c.meta.image_ref.clone(),
        reason,
        message,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: mounts_with_image_refs(c),
        log_path: c
            .meta
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: status.resources.map(|r| cri::ContainerResources {
            linux: Some(r),
            windows: None,
        }),
        image_id: c.meta.image_id.clone(),
        user: None,
        // What StopContainer sends: the config's, else the image's STOPSIGNAL, else SIGTERM.
        stop_signal: super::stop_signal::reported(c.meta.stop_signal.as_deref()) as i32,
    }
}

/// `ContainerStatus.resources`: for a created or running container, the limits in force in
/// its cgroup now (read back from the files, so a change made outside berthd, or one the kernel
/// adjusted, shows); for an exited container, or when the cgroup cannot be read (it went with
/// the container), the ones last applied. Blocking.
fn live_resources(c: &Container) -> Option<cri::ContainerResources> {
    let status = c.status();
    let recorded = status.resources;
    let live = match status.state {
        State::Created | State::Running { .. } => {
            let unified: Vec<String> = recorded
                .as_ref()
                .map(|r| r.unified.keys().cloned().collect())
                .unwrap_or_default();
            match super::cgroup_path(c)
                .and_then(|p| berth_cgroups::manager(&p))
                .and_then(|m| m.read_resources(&unified))
            {
                Ok(live) => Some(live),
                Err(e) => {
                    tracing::debug!(container = %c.id(), error = %e, "cgroup limits not readable: the recorded ones are reported");
                    None
                }
            }
        }
        State::Exited { .. } => None,
    };
    let linux = match live {
        Some(live) => Some(from_cgroup(&live, recorded.as_ref(), cgroup_v2())),
        None => recorded,
    };
    linux.map(|l| cri::ContainerResources {
        linux: Some(l),
        windows: None,
    })
}

/// True on a cgroup v2 (unified) host, where cpu.shares is read back from cpu.weight.
fn cgroup_v2() -> bool {
    static V2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V2.get_or_init(|| {
        matches!(
            berth_cgroups::detect_setup(),
            Ok(berth_cgroups::CgroupSetup::Unified)
        )
    })
}

/// The CRI form of limits read back from a cgroup (unlimited, -1, is the CRI's 0: not set).
/// What a cgroup does not hold (oom_score_adj) comes from `recorded`. On cgroup v2 cpu.weight
/// is coarser than shares: when the recorded shares give the weight in force, they are
/// reported (the kubelet compares them with what it asked for); otherwise the shares the
/// weight stands for.
fn from_cgroup(
    live: &oci_spec::runtime::LinuxResources,
    recorded: Option<&cri::LinuxContainerResources>,
    v2: bool,
) -> cri::LinuxContainerResources {
    let set = |v: Option<i64>| v.filter(|&v| v > 0).unwrap_or(0);
    let mut out = recorded.cloned().unwrap_or_default();
    let cpu = live.cpu().clone().unwrap_or_default();
    let memory = live.memory().unwrap_or_default();
    let shares = cpu.shares().unwrap_or(0);
    out.cpu_shares = match recorded.map(|r| r.cpu_shares).filter(|&r| r > 0) {
        Some(asked)
            if v2
                && berth_cgroups::v2::resources::cpu_shares_to_weight(asked as u64)
                    == berth_cgroups::v2::resources::cpu_shares_to_weight(shares) =>
        {
            asked
        }
        _ => i64::try_from(shares).unwrap_or(i64::MAX),
    };
    out.cpu_quota = set(cpu.quota());
    out.cpu_period = cpu
        .period()
        .and_then(|p| i64::try_from(p).ok())
        .unwrap_or(0);
    out.cpuset_cpus = cpu.cpus().clone().unwrap_or_default();
    out.cpuset_mems = cpu.mems().clone().unwrap_or_default();
    out.memory_limit_in_bytes = set(memory.limit());
    out.memory_swap_limit_in_bytes = set(memory.swap());
    out.hugepage_limits = live
        .hugepage_limits()
        .iter()
        .flatten()
        .filter(|h| h.limit() >= 0)
        .map(|h| cri::HugepageLimit {
            page_size: h.page_size().clone(),
            limit: h.limit() as u64,
        })
        .collect();
    out.unified = live.unified().clone().unwrap_or_default();
    out
}

/// The mounts as asked, each image volume with the ID of the image it mounts (ImageSpec's
/// image_ref, KEP-5365: the image PullImage named by that ref). Image volumes are recorded in
/// the order their mounts come.
fn mounts_with_image_refs(c: &Container) -> Vec<cri::Mount> {
    let mut volumes = c.meta.image_volumes.iter();
    c.meta
        .config
        .mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(image) = m.image.as_mut().filter(|i| !i.image.is_empty()) {
                if let Some(v) = volumes.next() {
                    image.image_ref = v.image.clone();
                }
            }
            m
        })
        .collect()
}

/// The process user of the container's spec (`ContainerStatus.user`). Blocking.
fn spec_user(spec: &serde_json::Value) -> Option<cri::ContainerUser> {
    let user = spec.pointer("/process/user")?;
    let num = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    Some(cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: num(&user["uid"]),
            gid: num(&user["gid"]),
            supplemental_groups: user["additionalGids"]
                .as_array()
                .map(|a| a.iter().map(num).collect())
                .unwrap_or_default(),
        }),
    })
}

pub(super) async fn status(
    inner: &Arc<Containers>,
    req: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, ContainerError> {
    let c = inner.get(&req.container_id)?;
    let inner = inner.clone();
    blocking("container status", move || {
        if c.status().state.is_running() {
            monitor::observe_exit(&inner, &c)?;
        }
        let mut status = cri_status(&c, req.verbose);
        status.resources = live_resources(&c);
        let spec: Option<serde_json::Value> = std::fs::read(c.meta.bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        status.user = spec.as_ref().and_then(spec_user);
        let mut info = HashMap::new();
        if req.verbose {
            let s = c.status();
            let pid = match s.state {
                State::Running { pid, .. } => pid,
                _ => 0,
            };
            let verbose = serde_json::json!({
                "sandboxID": c.meta.sandbox_id,
                "pid": pid,
                "removing": s.removing,
                "snapshotKey": c.meta.snapshot_key,
                "snapshotter": "overlayfs",
                "runtimeType": c.meta.runtime_handler,
                "runtimeHandler": c.meta.runtime_handler,
                "name": c.meta.name,
                "bundle": c.meta.bundle,
                "rootfs": c.meta.rootfs,
                "shimDir": c.meta.shim_dir,
                "cgroupsPath": c.meta.cgroups_path,
                "config": c.meta.config,
                "runtimeSpec": spec,
            });
            info.insert("info".to_owned(), verbose.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    })
    .await
}

/// The statuses of every container of a sandbox (PodSandboxStatus); exits are observed
/// first.
pub(super) async fn in_sandbox(
    inner: &Arc<Containers>,
    sandbox_id: &str,
) -> Result<Vec<cri::ContainerStatus>, ContainerError> {
    let containers = inner.in_sandbox(sandbox_id);
    let inner = inner.clone();
    blocking("container statuses", move || {
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            if c.status().state.is_running() {
                monitor::observe_exit(&inner, &c)?;
            }
            let mut status = cri_status(&c, false);
            status.resources = live_resources(&c);
            out.push(status);
        }
        Ok(out)
    })
    .await
}

fn matches(c: &Container, state: cri::ContainerState, filter: &cri::ContainerFilter) -> bool {
    if !filter.id.is_empty() && !c.id().starts_with(&filter.id) {
        return false;
    }
    if !filter.pod_sandbox_id.is_empty() && !c.meta.sandbox_id.starts_with(&filter.pod_sandbox_id) {
        return false;
    }
    if let Some(want) = &filter.state {
        if want.state != state as i32 {
            return false;
        }
    }
    filter
        .label_selector
        .iter()
        .all(|(k, v)| c.meta.config.labels.get(k) == Some(v))
}

/// Whether `c` passes a stats filter (id, sandbox, labels).
pub(super) fn matches_stats(c: &Container, filter: &cri::ContainerStatsFilter) -> bool {
    let f = cri::ContainerFilter {
        id: filter.id.clone(),
        state: None,
        pod_sandbox_id: filter.pod_sandbox_id.clone(),
        label_selector: filter.label_selector.clone(),
    };
    matches(c, cri::ContainerState::ContainerUnknown, &f)
}

pub(super) fn list(
    inner: &Containers,
    req: cri::ListContainersRequest,
) -> cri::ListContainersResponse {
    cri::ListContainersResponse {
        containers: containers(inner, &req.filter.unwrap_or_default()),
    }
}

/// The containers passing `filter`, oldest first (ListContainers and StreamContainers).
pub(super) fn containers(inner: &Containers, filter: &cri::ContainerFilter) -> Vec<cri::Container> {
    inner
        .store
        .list()
        .into_iter()
        .filter_map(|c| {
            let state = c.status().state.cri();
            matches(&c, state, filter).then(|| {
                let s = cri_status(&c, false);
                cri::Container {
                    id: s.id,
                    pod_sandbox_id: c.meta.sandbox_id.clone(),
                    metadata: s.metadata,
                    image: s.image,
                    image_ref: s.image_ref,
                    state: s.state,
                    created_at: s.created_at,
                    labels: s.labels,
                    annotations: s.annotations,
                    image_id: s.image_id,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(json: &str) -> oci_spec::runtime::LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn read_back_limits_replace_the_recorded_ones() {
        let recorded = cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50000,
            cpu_period: 100000,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 900,
            ..Default::default()
        };
        let got = from_cgroup(
            &live(
                r#"{"cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0-1",
                            "mems": "0"},
                    "memory": {"limit": 33554432, "swap": -1},
                    "hugepageLimits": [{"pageSize": "2MB", "limit": 0},
                                       {"pageSize": "1GB", "limit": -1}]}"#,
            ),
            Some(&recorded),
            false,
        );
        assert_eq!(
            got,
            cri::LinuxContainerResources {
                cpu_shares: 1024,
                cpu_quota: 20000,
                cpu_period: 100000,
                cpuset_cpus: "0-1".into(),
                cpuset_mems: "0".into(),
                memory_limit_in_bytes: 32 << 20,
                memory_swap_limit_in_bytes: 0,
                oom_score_adj: 900,
                hugepage_limits: vec![cri::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0
                }],
                ..Default::default()
            }
        );
    }

    #[test]
    fn unlimited_reads_as_not_set() {
        let got = from_cgroup(
            &live(
                r#"{"cpu": {"shares": 2, "quota": -1, "period": 100000}, "memory": {"limit": -1}}"#,
            ),
            None,
            false,
        );
        assert_eq!((got.cpu_quota, got.memory_limit_in_bytes), (0, 0));
        assert_eq!((got.cpu_shares, got.cpu_period), (2, 100000));
    }

    #[test]
    fn v2_reports_the_recorded_shares_when_they_give_the_weight_in_force() {
        let recorded = cri::LinuxContainerResources {
            cpu_shares: 1024,
            unified: [("memory.high".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        // cpu.weight 39 (from 1024 shares) reads back as 1014 shares.
        let shares = berth_cgroups::cpu_weight_to_shares(39);
        assert_ne!(shares, 1024);
        let r = live(&format!(
            r#"{{"cpu": {{"shares": {shares}}}, "unified": {{"memory.high": "94371840"}}}}"#
        ));
        let got = from_cgroup(&r, Some(&recorded), true);
        assert_eq!(got.cpu_shares, 1024);
        assert_eq!(got.unified["memory.high"], "94371840");
        // On v1 shares are exact: the file wins.
        assert_eq!(
            from_cgroup(&r, Some(&recorded), false).cpu_shares,
            shares as i64
        );
        // Another weight: the shares it stands for.
        let other = live(r#"{"cpu": {"shares": 2}}"#);
        assert_eq!(from_cgroup(&other, Some(&recorded), true).cpu_shares, 2);
    }
}
