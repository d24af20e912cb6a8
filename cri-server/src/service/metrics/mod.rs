//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metric names
//! (`container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`, …) computed from
//! the cgroup stats berthd already reads, /proc of the cgroup's processes and statvfs of the
//! writable layer's filesystem, so that a kubelet with `PodAndContainerStatsFromCRI` serves the
//! same `/metrics/cadvisor` series it would get from cAdvisor.
//!
//! The contract (CRI api.proto): every [`cri::Metric`] names a descriptor that
//! ListMetricDescriptors returned, and its `label_values` follow that descriptor's
//! `label_keys`, in the same order. Every descriptor here has cAdvisor's base labels
//! (`container`, `id`, `image`, `name`, `namespace`, `pod`) plus its own (`interface`,
//! `device`, `major`/`minor`/`operation`, `failure_type`, `scope`, `pagesize`, `ulimit`), all
//! sorted. Values are live (`timestamp` 0). The CRI carries unsigned integers only, so seconds
//! are whole seconds, and cAdvisor's "unlimited" (a huge limit, or -1 for ulimits) is 0 for
//! limits and left out for ulimits.
//!
//! Pod-level metrics (the pod cgroup, the pod's network) carry `container=""`, as cAdvisor's
//! pod cgroup series do; container metrics carry the container's name.
//!
//! Where the kernel has no per-cgroup pressure file (cgroup v1 without a unified side, a
//! kernel without PSI) the `container_pressure_*` series are left out; so is
//! `container_spec_cpu_quota` of a container without a quota (as cAdvisor).

mod descriptors;
mod filesystem;
mod net_dev;
mod processes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_cgroups::Stats;
use chrono::{DateTime, Utc};
use cri_api::v1 as cri;

pub use descriptors::descriptors;
use descriptors::*;
pub use net_dev::{parse_net_dev, Interface};

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

/// What is known of one container or pod at one moment; what could not be read is None.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cgroup: Option<Stats>,
    pub oom_kills: Option<u64>,
    /// The writable layer: the directory holding it (whose filesystem is measured) and the
    /// bytes it uses.
    pub writable_layer: Option<(String, u64)>,
    pub resources: Option<cri::LinuxContainerResources>,
    pub started_at: Option<DateTime<Utc>>,
    pub network: Vec<Interface>,
}

/// Where the metrics read what the cgroup stats do not carry: the host's /proc and /sys, or
/// fake trees in tests; and the time of the reading.
struct Host {
    proc: PathBuf,
    sys: PathBuf,
    now: DateTime<Utc>,
}

impl Host {
    fn live() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            now: Utc::now(),
        }
    }
}

/// Builds the metrics of one series owner.
struct Builder<'a> {
    who: &'a Identity,
    out: Vec<cri::Metric>,
}

impl Builder<'_> {
    fn push(&mut self, name: &'static str, value: u64, extra: &[(&str, &str)]) {
        let d = Descriptor::of(name);
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

/// The metrics of one container or pod. Blocking: reads /proc and statvfs.
pub fn metrics(who: &Identity, usage: &Usage) -> Vec<cri::Metric> {
    metrics_on(&Host::live(), who, usage)
}

fn metrics_on(host: &Host, who: &Identity, usage: &Usage) -> Vec<cri::Metric> {
    let mut b = Builder {
        who,
        out: Vec::new(),
    };
    b.push(LAST_SEEN, host.now.timestamp().max(0) as u64, &[]);
    if let Some(s) = &usage.cgroup {
        cpu(&mut b, s);
        memory(&mut b, s);
        pressure(&mut b, s);
        tasks(&mut b, host, s);
        block_io(&mut b, host, s);
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
    if let Some((dir, bytes)) = &usage.writable_layer {
        writable_layer(&mut b, host, Path::new(dir), *bytes);
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

fn cpu(b: &mut Builder, s: &Stats) {
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
}

fn memory(b: &mut Builder, s: &Stats) {
    let m = &s.memory;
    b.push(MEM_USAGE, m.usage, &[]);
    if let Some(max) = m.max_usage {
        b.push(MEM_MAX_USAGE, max, &[]);
    }
    b.push(MEM_WORKING_SET, m.working_set, &[]);
    b.push(MEM_RSS, m.rss, &[]);
    b.push(MEM_CACHE, m.cache, &[]);
    b.push(MEM_KERNEL, m.kernel_usage, &[]);
    b.push(MEM_MAPPED_FILE, m.mapped_file, &[]);
    b.push(MEM_SWAP, m.swap_usage, &[]);
    b.push(MEM_FAILCNT, m.failcnt, &[]);
    for (kind, scope, n) in [
        ("pgfault", "container", m.own_pgfault),
        ("pgmajfault", "container", m.own_pgmajfault),
        ("pgfault", "hierarchy", m.pgfault),
        ("pgmajfault", "hierarchy", m.pgmajfault),
    ] {
        b.push(MEM_FAILURES, n, &[("failure_type", kind), ("scope", scope)]);
    }
    // cAdvisor reports an unlimited limit as 0.
    b.push(SPEC_MEM_LIMIT, m.limit.unwrap_or(0), &[]);
    b.push(SPEC_MEM_RESERVATION, m.reservation.unwrap_or(0), &[]);
    b.push(SPEC_MEM_SWAP_LIMIT, m.swap_limit.unwrap_or(0), &[]);
    for h in &s.hugetlb {
        let size = [("pagesize", h.page_size.as_str())];
        b.push(HUGETLB_USAGE, h.usage, &size);
        if let Some(max) = h.max_usage {
            b.push(HUGETLB_MAX_USAGE, max, &size);
        }
    }
}

/// Stall times: "full" (no task could make progress) is cAdvisor's stalled, "some" its waiting.
fn pressure(b: &mut Builder, s: &Stats) {
    const US_PER_SEC: u64 = 1_000_000;
    let p = &s.pressure;
    for (psi, stalled, waiting) in [
        (&p.cpu, PSI_CPU_STALLED, PSI_CPU_WAITING),
        (&p.memory, PSI_MEMORY_STALLED, PSI_MEMORY_WAITING),
        (&p.io, PSI_IO_STALLED, PSI_IO_WAITING),
    ] {
        if let Some(psi) = psi {
            let full = psi.full.as_ref().map_or(0, |f| f.total_us);
            b.push(stalled, full / US_PER_SEC, &[]);
            b.push(waiting, psi.some.total_us / US_PER_SEC, &[]);
        }
    }
}

/// Processes (the cgroup's own, as cAdvisor counts them), threads (every task below it: the
/// pids controller), their descriptors and the root process's soft limits.
fn tasks(b: &mut Builder, host: &Host, s: &Stats) {
    b.push(PROCESSES, s.procs.len() as u64, &[]);
    b.push(THREADS, s.pids.current, &[]);
    b.push(THREADS_MAX, s.pids.limit.unwrap_or(0), &[]);
    let fds = processes::descriptors(&host.proc, &s.procs);
    b.push(FILE_DESCRIPTORS, fds.files, &[]);
    b.push(SOCKETS, fds.sockets, &[]);
    if let Some(root) = processes::root_pid(&host.proc, &s.procs) {
        for (ulimit, soft) in processes::soft_limits(&host.proc, root) {
            b.push(ULIMITS_SOFT, soft, &[("ulimit", ulimit)]);
        }
    }
}

fn block_io(b: &mut Builder, host: &Host, s: &Stats) {
    for dev in &s.blkio {
        let device = filesystem::block_device(&host.sys, dev.major, dev.minor);
        let (major, minor) = (dev.major.to_string(), dev.minor.to_string());
        let by_device = [("device", device.as_str())];
        b.push(FS_READS_BYTES, dev.read_bytes, &by_device);
        b.push(FS_WRITES_BYTES, dev.write_bytes, &by_device);
        b.push(FS_READS, dev.read_ios, &by_device);
        b.push(FS_WRITES, dev.write_ios, &by_device);
        for (operation, bytes) in [("Read", dev.read_bytes), ("Write", dev.write_bytes)] {
            b.push(
                BLKIO_DEVICE_USAGE,
                bytes,
                &[
                    ("device", device.as_str()),
                    ("major", major.as_str()),
                    ("minor", minor.as_str()),
                    ("operation", operation),
                ],
            );
        }
    }
}

/// The writable layer's usage, and the size and inodes of the filesystem holding it, labelled
/// with the device that filesystem is mounted from (its directory if that cannot be found).
fn writable_layer(b: &mut Builder, host: &Host, dir: &Path, bytes: u64) {
    let device =
        filesystem::device_of(&host.proc, dir).unwrap_or_else(|| dir.display().to_string());
    let device = [("device", device.as_str())];
    b.push(FS_USAGE, bytes, &device);
    if let Some(c) = filesystem::capacity(dir) {
        b.push(FS_LIMIT, c.bytes, &device);
        b.push(FS_INODES_TOTAL, c.inodes, &device);
        b.push(FS_INODES_FREE, c.inodes_free, &device);
    }
}
