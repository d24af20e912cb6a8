//! ListMetricDescriptors and ListPodSandboxMetrics of a running pod on its own network, as
//! the CRI validation suite (critest) checks them (root): every cAdvisor metric it expects is
//! described (with help and label keys), and every one it expects values of is reported for
//! the pod or its container, with as many label values as its descriptor has keys; values are
//! the container's own (limits set, descriptors open, files written into its writable layer).

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use calls::{run_container, run_pod, shell_container, Busybox};
use cri_api::v1 as cri;

/// cAdvisor's container metrics critest expects a runtime to describe (the list the metrics
/// unit tests check too).
fn expected() -> impl Iterator<Item = &'static str> {
    include_str!("data/critest_metrics.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Described, but with values only where the host has them: block I/O accounting (a virtual
/// disk may report none, as critest allows), huge pages, and pressure stall information
/// (a kernel with PSI, the cgroup on cgroup2; checked below where the kernel has it).
const HOST_DEPENDENT: &[&str] = &[
    "container_pressure_cpu_stalled_seconds_total",
    "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total",
    "container_pressure_io_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total",
    "container_pressure_memory_waiting_seconds_total",
    "container_blkio_device_usage_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_hugetlb_usage_bytes",
    "container_hugetlb_max_usage_bytes",
];

const MIB: i64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_pod_reports_every_metric_critest_expects() {
    let test = "a_running_pod_reports_every_metric_critest_expects";
    if !(support::can_run(test) && pods::can_run(test)) {
        return;
    }
    let fx = Busybox::push();
    let (pods, guard, mut rt) = calls::pods_pulling(41, fx.host(), &[&fx.image]).await;

    let descriptors = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    for name in expected() {
        let d = descriptors
            .iter()
            .find(|d| d.name == *name)
            .unwrap_or_else(|| panic!("{name}: not described"));
        assert!(!d.help.is_empty(), "{name}: no help");
        assert!(!d.label_keys.is_empty(), "{name}: no label keys");
    }

    let pod_config = pods::pod("cadvisor");
    let pod = run_pod(&mut rt, &pod_config, "").await;
    guard.sandbox(&pod);
    // As critest's container: CPU and memory limits, ten files written into its writable
    // layer; then a listening socket and a wait (the fixture links only a few applets).
    let mut app = shell_container(
        "app",
        &fx.image,
        "busybox mkdir -p /var/lib/disk && for i in 1 2 3 4 5 6 7 8 9 10; do echo hi >> /var/lib/disk/f$i; done; \
         busybox sync; busybox nc -l -p 8080 & sleep 300",
    );
    app.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 1024,
            memory_limit_in_bytes: 64 * MIB,
            memory_swap_limit_in_bytes: 64 * MIB,
            ..Default::default()
        }),
        ..Default::default()
    });
    let app = run_container(&mut rt, &pod, &pod_config, app).await;

    // The pod's metrics and its container's, once the container's shell has written its files
    // and started nc.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (pod_metrics, app_metrics) = loop {
        let p = rt
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics
            .into_iter()
            .find(|p| p.pod_sandbox_id == pod)
            .expect("the pod's metrics");
        let c = p
            .container_metrics
            .iter()
            .find(|c| c.container_id == app)
            .map(|c| c.metrics.clone())
            .unwrap_or_default();
        let sockets = calls::metric(&descriptors, &c, "container_sockets", None);
        let fs = calls::metric(&descriptors, &c, "container_fs_usage_bytes", None);
        if sockets.unwrap_or(0) >= 1 && fs.unwrap_or(0) > 0 {
            break (p.metrics, c);
        }
        assert!(
            Instant::now() < deadline,
            "sockets {sockets:?}, fs {fs:?}\n{p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // critest's checks: a value (with as many labels as the descriptor has keys) for every
    // described metric it does not hold optional.
    let mut found: HashMap<&str, &cri::Metric> = HashMap::new();
    for m in pod_metrics.iter().chain(&app_metrics) {
        found.entry(m.name.as_str()).or_insert(m);
        let d = descriptors
            .iter()
            .find(|d| d.name == m.name)
            .unwrap_or_else(|| panic!("{}: reported, not described", m.name));
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{m:?}");
    }
    for d in &descriptors {
        if HOST_DEPENDENT.contains(&d.name.as_str()) {
            continue;
        }
        assert!(found.contains_key(d.name.as_str()), "{}: no value", d.name);
    }

    // The values are the container's.
    let get = |name: &str| calls::metric(&descriptors, &app_metrics, name, None);
    assert_eq!(
        get("container_spec_memory_limit_bytes"),
        Some(64 << 20),
        "from the cgroup"
    );
    assert_eq!(get("container_spec_cpu_quota"), Some(20_000));
    assert_eq!(get("container_spec_cpu_period"), Some(100_000));
    assert_eq!(get("container_spec_cpu_shares"), Some(1024));
    if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        // cgroup v1 with swap accounting: memory+swap, as cAdvisor reads it.
        assert_eq!(
            get("container_spec_memory_swap_limit_bytes"),
            Some(64 << 20)
        );
    }
    // nc and sleep (sh execs its last command).
    assert!(get("container_processes").unwrap() >= 2);
    assert!(get("container_threads").unwrap() >= 2);
    // Each has stdin, stdout and stderr; nc listens.
    assert!(get("container_file_descriptors").unwrap() >= 7);
    assert!(get("container_sockets").unwrap() >= 1, "nc's socket");
    let nofile = calls::metric(
        &descriptors,
        &app_metrics,
        "container_ulimits_soft",
        Some(("ulimit", "max_open_files")),
    );
    assert!(nofile.unwrap() > 0);
    let now = chrono::Utc::now().timestamp() as u64;
    let seen = get("container_last_seen").unwrap();
    assert!(seen <= now && seen + 60 > now, "{seen} vs {now}");
    let usage = get("container_fs_usage_bytes").unwrap();
    let limit = get("container_fs_limit_bytes").unwrap();
    let (inodes, free) = (
        get("container_fs_inodes_total").unwrap(),
        get("container_fs_inodes_free").unwrap(),
    );
    assert!(usage > 0 && usage < limit, "{usage} of {limit}");
    assert!(free > 0 && free < inodes, "{free} of {inodes}");
    assert!(get("container_memory_kernel_usage").is_some());
    // PSI: this kernel tracks stalls and the container has a cgroup2 side (v2, or hybrid).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if Path::new("/proc/pressure/cpu").exists() && own.lines().any(|l| l.starts_with("0::")) {
        for name in HOST_DEPENDENT.iter().filter(|n| n.contains("pressure")) {
            assert!(get(name).is_some(), "{name}: no value");
        }
    }
    assert!(get("container_memory_usage_bytes").unwrap() > 0);

    calls::remove_pod(&mut rt, &pod).await;
    drop(pods);
}
