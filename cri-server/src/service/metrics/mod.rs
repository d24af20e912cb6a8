//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metric names
//! (`container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`, …) computed from
//! the cgroup stats berthd already reads, so that a kubelet with `PodAndContainerStatsFromCRI`
//! serves the same `/metrics/cadvisor` series it would get from cAdvisor.
//!
//! The contract (CRI api.proto): every [`cri::Metric`] names a descriptor that
//! ListMetricDescriptors returned, and its `label_values` follow that descriptor's
//! `label_keys`, in the same order. Every descriptor here has cAdvisor's base labels
//! (`container`, `id`, `image`, `name`, `namespace`, `pod`) plus its own (`interface`,
//! `device`, `failure_type`, `scope`), all sorted. Values are live (`timestamp` 0). The CRI
//! carries integers only, so seconds are whole seconds.
//!
//! Pod-level metrics (the pod cgroup, the pod's network) carry `container=""`, as cAdvisor's
//! pod cgroup series do; container metrics carry the container's name.

use std::collections::BTreeMap;

use berth_cgroups::Stats;
use chrono::{DateTime, Utc};
use k8s_cri::v1 as cri;

/// cAdvisor's labels on every container series.
const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric berth reports.
struct Descriptor {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    /// Labels besides [`BASE_LABELS`].
    extra: &'static [&'static str],
}

use cri::MetricType::{Counter, Gauge};

const fn d(
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    extra: &'static [&'static str],
) -> Descriptor {
    Descriptor {
        name,
        help,
        kind,
        extra,
    }
}

const DESCRIPTORS: &[Descriptor] = &[
    d(
        CPU_USAGE,
        "Cumulative cpu time consumed in seconds.",
        Counter,
        &[],
    ),
    d(
        CPU_USER,
        "Cumulative user cpu time consumed in seconds.",
        Counter,
        &[],
    ),
    d(
        CPU_SYSTEM,
        "Cumulative system cpu time consumed in seconds.",
        Counter,
        &[],
    ),
    d(
        CFS_PERIODS,
        "Number of elapsed enforcement period intervals.",
        Counter,
        &[],
    ),
    d(
        CFS_THROTTLED_PERIODS,
        "Number of throttled period intervals.",
        Counter,
        &[],
    ),
    d(
        CFS_THROTTLED_SECONDS,
        "Total time duration the container has been throttled.",
        Counter,
        &[],
    ),
    d(
        MEM_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        Gauge,
        &[],
    ),
    d(
        MEM_MAX_USAGE,
        "Maximum memory usage recorded in bytes.",
        Gauge,
        &[],
    ),
    d(MEM_WORKING_SET, "Current working set in bytes.", Gauge, &[]),
    d(MEM_RSS, "Size of RSS in bytes.", Gauge, &[]),
    d(
        MEM_CACHE,
        "Number of bytes of page cache memory.",
        Gauge,
        &[],
    ),
    d(MEM_SWAP, "Container swap usage in bytes.", Gauge, &[]),
    d(
        MEM_FAILURES,
        "Cumulative count of memory allocation failures.",
        Counter,
        &["failure_type", "scope"],
    ),
    d(
        OOM_EVENTS,
        "Count of out of memory events observed for the container.",
        Counter,
        &[],
    ),
    d(
        SPEC_MEM_LIMIT,
        "Memory limit for the container.",
        Gauge,
        &[],
    ),
    d(SPEC_CPU_SHARES, "CPU share of the container.", Gauge, &[]),
    d(SPEC_CPU_QUOTA, "CPU quota of the container.", Gauge, &[]),
    d(SPEC_CPU_PERIOD, "CPU period of the container.", Gauge, &[]),
    d(
        PROCESSES,
        "Number of processes running inside the container.",
        Gauge,
        &[],
    ),
    d(
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        Gauge,
        &[],
    ),
    d(
        FS_USAGE,
        "Number of bytes that are consumed by the container on this filesystem.",
        Gauge,
        &["device"],
    ),
    d(
        FS_READS_BYTES,
        "Cumulative count of bytes read.",
        Counter,
        &["device"],
    ),
    d(
        FS_WRITES_BYTES,
        "Cumulative count of bytes written.",
        Counter,
        &["device"],
    ),
    d(
        FS_READS,
        "Cumulative count of reads completed.",
        Counter,
        &["device"],
    ),
    d(
        FS_WRITES,
        "Cumulative count of writes completed.",
        Counter,
        &["device"],
    ),
    d(
        NET_RX_BYTES,
        "Cumulative count of bytes received.",
        Counter,
        &["interface"],
    ),
    d(
        NET_RX_PACKETS,
        "Cumulative count of packets received.",
        Counter,
        &["interface"],
    ),
    d(
        NET_RX_ERRORS,
        "Cumulative count of errors encountered while receiving.",
        Counter,
        &["interface"],
    ),
    d(
        NET_RX_DROPPED,
        "Cumulative count of packets dropped while receiving.",
        Counter,
        &["interface"],
    ),
    d(
        NET_TX_BYTES,
        "Cumulative count of bytes transmitted.",
        Counter,
        &["interface"],
    ),
    d(
        NET_TX_PACKETS,
        "Cumulative count of packets transmitted.",
        Counter,
        &["interface"],
    ),
    d(
        NET_TX_ERRORS,
        "Cumulative count of errors encountered while transmitting.",
        Counter,
        &["interface"],
    ),
    d(
        NET_TX_DROPPED,
        "Cumulative count of packets dropped while transmitting.",
        Counter,
        &["interface"],
    ),
];

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const CPU_USER: &str = "container_cpu_user_seconds_total";
const CPU_SYSTEM: &str = "container_cpu_system_seconds_total";
const CFS_PERIODS: &str = "container_cpu_cfs_periods_total";
const CFS_THROTTLED_PERIODS: &str = "container_cpu_cfs_throttled_periods_total";
const CFS_THROTTLED_SECONDS: &str = "container_cpu_cfs_throttled_seconds_total";
const MEM_USAGE: &str = "container_memory_usage_bytes";
const MEM_MAX_USAGE: &str = "container_memory_max_usage_bytes";
const MEM_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEM_RSS: &str = "container_memory_rss";
const MEM_CACHE: &str = "container_memory_cache";
const MEM_SWAP: &str = "container_memory_swap";
const MEM_FAILURES: &str = "container_memory_failures_total";
const OOM_EVENTS: &str = "container_oom_events_total";
const SPEC_MEM_LIMIT: &str = "container_spec_memory_limit_bytes";
const SPEC_CPU_SHARES: &str = "container_spec_cpu_shares";
const SPEC_CPU_QUOTA: &str = "container_spec_cpu_quota";
const SPEC_CPU_PERIOD: &str = "container_spec_cpu_period";
const PROCESSES: &str = "container_processes";
const START_TIME: &str = "container_start_time_seconds";
const FS_USAGE: &str = "container_fs_usage_bytes";
const FS_READS_BYTES: &str = "container_fs_reads_bytes_total";
const FS_WRITES_BYTES: &str = "container_fs_writes_bytes_total";
const FS_READS: &str = "container_fs_reads_total";
const FS_WRITES: &str = "container_fs_writes_total";
const NET_RX_BYTES: &str = "container_network_receive_bytes_total";
const NET_RX_PACKETS: &str = "container_network_receive_packets_total";
const NET_RX_ERRORS: &str = "container_network_receive_errors_total";
const NET_RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
const NET_TX_BYTES: &str = "container_network_transmit_bytes_total";
const NET_TX_PACKETS: &str = "container_network_transmit_packets_total";
const NET_TX_ERRORS: &str = "container_network_transmit_errors_total";
const NET_TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";

impl Descriptor {
    /// The base labels and the extra ones, sorted.
    fn label_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = BASE_LABELS.iter().chain(self.extra).copied().collect();
        keys.sort_unstable();
        keys
    }
}

/// Every descriptor, for ListMetricDescriptors.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_owned(),
            help: d.help.to_owned(),
            label_keys: d.label_keys().into_iter().map(str::to_owned).collect(),
        })
        .collect()
}

/// The base label values of one series: who it is about.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The container's name in the pod; empty for pod-level series.
    pub container: String,
    /// The container (or sandbox) ID.
    pub id: String,
    pub image: String,
    /// The container's (or sandbox's) reserved name.
    pub name: String,
    pub namespace: String,
    pub pod: String,
}

/// Counters of one network interface (`/proc/<pid>/net/dev`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev` (loopback left out).
pub fn parse_net_dev(text: &str) -> Vec<Interface> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let n: Vec<u64> = counters
            .split_whitespace()
            .map(|c| c.parse().unwrap_or(0))
            .collect();
        if name == "lo" || n.len() < 16 {
            continue;
        }
        out.push(Interface {
            name: name.to_owned(),
            rx_bytes: n[0],
            rx_packets: n[1],
            rx_errors: n[2],
            rx_dropped: n[3],
            tx_bytes: n[8],
            tx_packets: n[9],
            tx_errors: n[10],
            tx_dropped: n[11],
        });
    }
    out
}

/// What is known of one container or pod at one moment; what could not be read is None.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cgroup: Option<Stats>,
    pub oom_kills: Option<u64>,
    /// The writable layer: the filesystem holding it and the bytes it uses.
    pub writable_layer: Option<(String, u64)>,
    pub resources: Option<cri::LinuxContainerResources>,
    pub started_at: Option<DateTime<Utc>>,
    pub network: Vec<Interface>,
}

/// Builds the metrics of one series owner.
struct Builder<'a> {
    who: &'a Identity,
    out: Vec<cri::Metric>,
}

impl Builder<'_> {
    fn push(&mut self, name: &'static str, value: u64, extra: &[(&str, &str)]) {
        let d = DESCRIPTORS
            .iter()
            .find(|d| d.name == name)
            .expect("every metric has a descriptor");
        debug_assert_eq!(d.extra.len(), extra.len(), "{name}: labels");
        let mut labels: BTreeMap<&str, &str> = BTreeMap::from([
            ("container", self.who.container.as_str()),
            ("id", self.who.id.as_str()),
            ("image", self.who.image.as_str()),
            ("name", self.who.name.as_str()),
            ("namespace", self.who.namespace.as_str()),
            ("pod", self.who.pod.as_str()),
        ]);
        labels.extend(extra.iter().copied());
        let label_values = d
            .label_keys()
            .iter()
            .map(|k| labels.get(k).copied().unwrap_or_default().to_owned())
            .collect();
        self.out.push(cri::Metric {
            name: name.to_owned(),
            timestamp: 0,
            metric_type: d.kind as i32,
            label_values,
            value: Some(cri::UInt64Value { value }),
        });
    }
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// The metrics of one container or pod.
pub fn metrics(who: &Identity, usage: &Usage) -> Vec<cri::Metric> {
    let mut b = Builder {
        who,
        out: Vec::new(),
    };
    if let Some(s) = &usage.cgroup {
        b.push(CPU_USAGE, s.cpu.usage_total_ns / NS_PER_SEC, &[]);
        b.push(CPU_USER, s.cpu.usage_user_ns / NS_PER_SEC, &[]);
        b.push(CPU_SYSTEM, s.cpu.usage_system_ns / NS_PER_SEC, &[]);
        b.push(CFS_PERIODS, s.cpu.periods, &[]);
        b.push(CFS_THROTTLED_PERIODS, s.cpu.throttled_periods, &[]);
        b.push(
            CFS_THROTTLED_SECONDS,
            s.cpu.throttled_time_ns / NS_PER_SEC,
            &[],
        );
        let m = &s.memory;
        b.push(MEM_USAGE, m.usage, &[]);
        if let Some(max) = m.max_usage {
            b.push(MEM_MAX_USAGE, max, &[]);
        }
        b.push(MEM_WORKING_SET, m.working_set, &[]);
        b.push(MEM_RSS, m.rss, &[]);
        b.push(MEM_CACHE, m.cache, &[]);
        b.push(MEM_SWAP, m.swap_usage, &[]);
        for (kind, n) in [("pgfault", m.pgfault), ("pgmajfault", m.pgmajfault)] {
            b.push(
                MEM_FAILURES,
                n,
                &[("failure_type", kind), ("scope", "hierarchy")],
            );
        }
        // cAdvisor reports an unlimited container as 0.
        b.push(SPEC_MEM_LIMIT, m.limit.unwrap_or(0), &[]);
        b.push(PROCESSES, s.pids.current, &[]);
        for dev in &s.blkio {
            let device = block_device(dev.major, dev.minor);
            let device = [("device", device.as_str())];
            b.push(FS_READS_BYTES, dev.read_bytes, &device);
            b.push(FS_WRITES_BYTES, dev.write_bytes, &device);
            b.push(FS_READS, dev.read_ios, &device);
            b.push(FS_WRITES, dev.write_ios, &device);
        }
    }
    if let Some(n) = usage.oom_kills {
        b.push(OOM_EVENTS, n, &[]);
    }
    if let Some(r) = &usage.resources {
        if r.cpu_shares > 0 {
            b.push(SPEC_CPU_SHARES, r.cpu_shares as u64, &[]);
        }
        if r.cpu_quota > 0 {
            b.push(SPEC_CPU_QUOTA, r.cpu_quota as u64, &[]);
        }
        if r.cpu_period > 0 {
            b.push(SPEC_CPU_PERIOD, r.cpu_period as u64, &[]);
        }
    }
    if let Some(t) = usage.started_at {
        b.push(START_TIME, t.timestamp().max(0) as u64, &[]);
    }
    if let Some((device, bytes)) = &usage.writable_layer {
        b.push(FS_USAGE, *bytes, &[("device", device)]);
    }
    for i in &usage.network {
        let iface = [("interface", i.name.as_str())];
        b.push(NET_RX_BYTES, i.rx_bytes, &iface);
        b.push(NET_RX_PACKETS, i.rx_packets, &iface);
        b.push(NET_RX_ERRORS, i.rx_errors, &iface);
        b.push(NET_RX_DROPPED, i.rx_dropped, &iface);
        b.push(NET_TX_BYTES, i.tx_bytes, &iface);
        b.push(NET_TX_PACKETS, i.tx_packets, &iface);
        b.push(NET_TX_ERRORS, i.tx_errors, &iface);
        b.push(NET_TX_DROPPED, i.tx_dropped, &iface);
    }
    b.out
}

/// `/dev/<name>` of a block device (from sysfs), else `major:minor`.
fn block_device(major: u64, minor: u64) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_unique_sorted_and_cover_every_metric() {
        let all = descriptors();
        let mut names: Vec<_> = all.iter().map(|d| d.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for d in &all {
            let mut sorted = d.label_keys.clone();
            sorted.sort();
            assert_eq!(sorted, d.label_keys, "{}", d.name);
            for base in BASE_LABELS {
                assert!(d.label_keys.iter().any(|k| k == base), "{}", d.name);
            }
        }
    }

    #[test]
    fn metrics_follow_their_descriptors() {
        let mut stats = Stats::default();
        stats.cpu.usage_total_ns = 2_500_000_000;
        stats.memory.working_set = 4096;
        stats.memory.limit = Some(1 << 20);
        stats.pids.current = 3;
        let who = Identity {
            container: "app".into(),
            id: "c1".into(),
            image: "busybox".into(),
            name: "app_pod_ns_uid_0".into(),
            namespace: "ns".into(),
            pod: "pod".into(),
        };
        let net = parse_net_dev(
            "h1\nh2\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n  eth0: 1500 10 2 3 0 0 0 0 700 7 1 4 0 0 0 0\n",
        );
        let usage = Usage {
            cgroup: Some(stats),
            oom_kills: Some(1),
            writable_layer: Some(("/var/lib/berth".into(), 8192)),
            resources: Some(cri::LinuxContainerResources {
                cpu_shares: 512,
                ..Default::default()
            }),
            started_at: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            network: net,
        };
        let out = metrics(&who, &usage);
        let descriptors = descriptors();
        for m in &out {
            let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let get = |name: &str, label: Option<(&str, &str)>| {
            let d = descriptors.iter().find(|d| d.name == name).unwrap();
            out.iter()
                .find(|m| {
                    m.name == name
                        && label.is_none_or(|(k, v)| {
                            let i = d.label_keys.iter().position(|x| x == k).unwrap();
                            m.label_values[i] == v
                        })
                })
                .map(|m| m.value.as_ref().unwrap().value)
        };
        assert_eq!(get(CPU_USAGE, None), Some(2));
        assert_eq!(get(MEM_WORKING_SET, None), Some(4096));
        assert_eq!(get(SPEC_MEM_LIMIT, None), Some(1 << 20));
        assert_eq!(get(PROCESSES, None), Some(3));
        assert_eq!(get(OOM_EVENTS, None), Some(1));
        assert_eq!(get(SPEC_CPU_SHARES, None), Some(512));
        assert_eq!(get(SPEC_CPU_QUOTA, None), None);
        assert_eq!(get(START_TIME, None), Some(1_700_000_000));
        assert_eq!(
            get(FS_USAGE, Some(("device", "/var/lib/berth"))),
            Some(8192)
        );
        assert_eq!(get(NET_RX_BYTES, Some(("interface", "eth0"))), Some(1500));
        assert_eq!(get(NET_RX_DROPPED, Some(("interface", "eth0"))), Some(3));
        assert_eq!(get(NET_TX_DROPPED, Some(("interface", "eth0"))), Some(4));
        assert_eq!(get(NET_RX_BYTES, Some(("interface", "lo"))), None);
        let cpu = out.iter().find(|m| m.name == CPU_USAGE).unwrap();
        assert_eq!(
            cpu.label_values,
            ["app", "c1", "busybox", "app_pod_ns_uid_0", "ns", "pod"]
        );
        assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
    }
}
