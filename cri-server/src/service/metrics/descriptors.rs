//! The metrics berth reports: cAdvisor's names, help texts, types and label keys.

use cri_api::v1 as cri;

/// cAdvisor's labels on every container series.
pub(super) const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric berth reports.
pub(super) struct Descriptor {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: cri::MetricType,
    /// Labels besides [`BASE_LABELS`].
    pub(super) extra: &'static [&'static str],
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

const DEVICE: &[&str] = &["device"];
const INTERFACE: &[&str] = &["interface"];
const PAGESIZE: &[&str] = &["pagesize"];

pub(super) const DESCRIPTORS: &[Descriptor] = &[
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
    d(
        MEM_KERNEL,
        "Size of kernel memory allocated in bytes.",
        Gauge,
        &[],
    ),
    d(
        MEM_MAPPED_FILE,
        "Size of memory mapped files in bytes.",
        Gauge,
        &[],
    ),
    d(MEM_SWAP, "Container swap usage in bytes.", Gauge, &[]),
    d(
        MEM_FAILCNT,
        "Number of memory usage hits limits.",
        Counter,
        &[],
    ),
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
        HUGETLB_USAGE,
        "Current hugepage usage in bytes.",
        Gauge,
        PAGESIZE,
    ),
    d(
        HUGETLB_MAX_USAGE,
        "Maximum hugepage usages recorded in bytes.",
        Gauge,
        PAGESIZE,
    ),
    d(
        PSI_CPU_STALLED,
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        Counter,
        &[],
    ),
    d(
        PSI_CPU_WAITING,
        "Total time duration tasks in the container have waited due to CPU congestion.",
        Counter,
        &[],
    ),
    d(
        PSI_MEMORY_STALLED,
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        Counter,
        &[],
    ),
    d(
        PSI_MEMORY_WAITING,
        "Total time duration tasks in the container have waited due to memory congestion.",
        Counter,
        &[],
    ),
    d(
        PSI_IO_STALLED,
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        Counter,
        &[],
    ),
    d(
        PSI_IO_WAITING,
        "Total time duration tasks in the container have waited due to IO congestion.",
        Counter,
        &[],
    ),
    d(
        SPEC_MEM_LIMIT,
        "Memory limit for the container.",
        Gauge,
        &[],
    ),
    d(
        SPEC_MEM_RESERVATION,
        "Memory reservation limit for the container.",
        Gauge,
        &[],
    ),
    d(
        SPEC_MEM_SWAP_LIMIT,
        "Memory swap limit for the container.",
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
        THREADS,
        "Number of threads running inside the container.",
        Gauge,
        &[],
    ),
    d(
        THREADS_MAX,
        "Maximum number of threads allowed inside the container, infinity if value is zero.",
        Gauge,
        &[],
    ),
    d(
        FILE_DESCRIPTORS,
        "Number of open file descriptors for the container.",
        Gauge,
        &[],
    ),
    d(
        SOCKETS,
        "Number of open sockets for the container.",
        Gauge,
        &[],
    ),
    d(
        ULIMITS_SOFT,
        "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice.",
        Gauge,
        &["ulimit"],
    ),
    d(
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        Gauge,
        &[],
    ),
    d(
        LAST_SEEN,
        "Last time a container was seen by the exporter.",
        Gauge,
        &[],
    ),
    d(
        FS_USAGE,
        "Number of bytes that are consumed by the container on this filesystem.",
        Gauge,
        DEVICE,
    ),
    d(
        FS_LIMIT,
        "Number of bytes that can be consumed by the container on this filesystem.",
        Gauge,
        DEVICE,
    ),
    d(FS_INODES_FREE, "Number of available Inodes.", Gauge, DEVICE),
    d(FS_INODES_TOTAL, "Number of Inodes.", Gauge, DEVICE),
    d(
        FS_READS_BYTES,
        "Cumulative count of bytes read.",
        Counter,
        DEVICE,
    ),
    d(
        FS_WRITES_BYTES,
        "Cumulative count of bytes written.",
        Counter,
        DEVICE,
    ),
    d(
        FS_READS,
        "Cumulative count of reads completed.",
        Counter,
        DEVICE,
    ),
    d(
        FS_WRITES,
        "Cumulative count of writes completed.",
        Counter,
        DEVICE,
    ),
    d(
        BLKIO_DEVICE_USAGE,
        "Blkio device bytes usage.",
        Counter,
        &["device", "major", "minor", "operation"],
    ),
    d(
        NET_RX_BYTES,
        "Cumulative count of bytes received.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_RX_PACKETS,
        "Cumulative count of packets received.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_RX_ERRORS,
        "Cumulative count of errors encountered while receiving.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_RX_DROPPED,
        "Cumulative count of packets dropped while receiving.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_TX_BYTES,
        "Cumulative count of bytes transmitted.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_TX_PACKETS,
        "Cumulative count of packets transmitted.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_TX_ERRORS,
        "Cumulative count of errors encountered while transmitting.",
        Counter,
        INTERFACE,
    ),
    d(
        NET_TX_DROPPED,
        "Cumulative count of packets dropped while transmitting.",
        Counter,
        INTERFACE,
    ),
];

pub(super) const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
pub(super) const CPU_USER: &str = "container_cpu_user_seconds_total";
pub(super) const CPU_SYSTEM: &str = "container_cpu_system_seconds_total";
pub(super) const CFS_PERIODS: &str = "container_cpu_cfs_periods_total";
pub(super) const CFS_THROTTLED_PERIODS: &str = "container_cpu_cfs_throttled_periods_total";
pub(super) const CFS_THROTTLED_SECONDS: &str = "container_cpu_cfs_throttled_seconds_total";
pub(super) const MEM_USAGE: &str = "container_memory_usage_bytes";
pub(super) const MEM_MAX_USAGE: &str = "container_memory_max_usage_bytes";
pub(super) const MEM_WORKING_SET: &str = "container_memory_working_set_bytes";
pub(super) const MEM_RSS: &str = "container_memory_rss";
pub(super) const MEM_CACHE: &str = "container_memory_cache";
pub(super) const MEM_KERNEL: &str = "container_memory_kernel_usage";
pub(super) const MEM_MAPPED_FILE: &str = "container_memory_mapped_file";
pub(super) const MEM_SWAP: &str = "container_memory_swap";
pub(super) const MEM_FAILCNT: &str = "container_memory_failcnt";
pub(super) const MEM_FAILURES: &str = "container_memory_failures_total";
pub(super) const OOM_EVENTS: &str = "container_oom_events_total";
pub(super) const HUGETLB_USAGE: &str = "container_hugetlb_usage_bytes";
pub(super) const HUGETLB_MAX_USAGE: &str = "container_hugetlb_max_usage_bytes";
pub(super) const PSI_CPU_STALLED: &str = "container_pressure_cpu_stalled_seconds_total";
pub(super) const PSI_CPU_WAITING: &str = "container_pressure_cpu_waiting_seconds_total";
pub(super) const PSI_MEMORY_STALLED: &str = "container_pressure_memory_stalled_seconds_total";
pub(super) const PSI_MEMORY_WAITING: &str = "container_pressure_memory_waiting_seconds_total";
pub(super) const PSI_IO_STALLED: &str = "container_pressure_io_stalled_seconds_total";
pub(super) const PSI_IO_WAITING: &str = "container_pressure_io_waiting_seconds_total";
pub(super) const SPEC_MEM_LIMIT: &str = "container_spec_memory_limit_bytes";
pub(super) const SPEC_MEM_RESERVATION: &str = "container_spec_memory_reservation_limit_bytes";
pub(super) const SPEC_MEM_SWAP_LIMIT: &str = "container_spec_memory_swap_limit_bytes";
pub(super) const SPEC_CPU_SHARES: &str = "container_spec_cpu_shares";
pub(super) const SPEC_CPU_QUOTA: &str = "container_spec_cpu_quota";
pub(super) const SPEC_CPU_PERIOD: &str = "container_spec_cpu_period";
pub(super) const PROCESSES: &str = "container_processes";
pub(super) const THREADS: &str = "container_threads";
pub(super) const THREADS_MAX: &str = "container_threads_max";
pub(super) const FILE_DESCRIPTORS: &str = "container_file_descriptors";
pub(super) const SOCKETS: &str = "container_sockets";
pub(super) const ULIMITS_SOFT: &str = "container_ulimits_soft";
pub(super) const START_TIME: &str = "container_start_time_seconds";
pub(super) const LAST_SEEN: &str = "container_last_seen";
pub(super) const FS_USAGE: &str = "container_fs_usage_bytes";
pub(super) const FS_LIMIT: &str = "container_fs_limit_bytes";
pub(super) const FS_INODES_FREE: &str = "container_fs_inodes_free";
pub(super) const FS_INODES_TOTAL: &str = "container_fs_inodes_total";
pub(super) const FS_READS_BYTES: &str = "container_fs_reads_bytes_total";
pub(super) const FS_WRITES_BYTES: &str = "container_fs_writes_bytes_total";
pub(super) const FS_READS: &str = "container_fs_reads_total";
pub(super) const FS_WRITES: &str = "container_fs_writes_total";
pub(super) const BLKIO_DEVICE_USAGE: &str = "container_blkio_device_usage_total";
pub(super) const NET_RX_BYTES: &str = "container_network_receive_bytes_total";
pub(super) const NET_RX_PACKETS: &str = "container_network_receive_packets_total";
pub(super) const NET_RX_ERRORS: &str = "container_network_receive_errors_total";
pub(super) const NET_RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
pub(super) const NET_TX_BYTES: &str = "container_network_transmit_bytes_total";
pub(super) const NET_TX_PACKETS: &str = "container_network_transmit_packets_total";
pub(super) const NET_TX_ERRORS: &str = "container_network_transmit_errors_total";
pub(super) const NET_TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";

impl Descriptor {
    /// The base labels and the extra ones, sorted.
    pub(super) fn label_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = BASE_LABELS.iter().chain(self.extra).copied().collect();
        keys.sort_unstable();
        keys
    }

    /// The descriptor of the metric `name`.
    pub(super) fn of(name: &str) -> &'static Descriptor {
        DESCRIPTORS
            .iter()
            .find(|d| d.name == name)
            .expect("every metric has a descriptor")
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
