use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use berth_cgroups::{CgroupManager, CgroupPath, V2Manager};
use nix::sys::stat::{major, minor};

use super::*;

/// cAdvisor's container metrics that the CRI validation suite (critest) expects a runtime to
/// describe and, for a running pod, to report (tests/data/critest_metrics.txt).
fn expected() -> impl Iterator<Item = &'static str> {
    include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/critest_metrics.txt"
    ))
    .lines()
    .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

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
fn every_expected_metric_is_described_with_help_and_labels() {
    let all = descriptors();
    for name in expected() {
        let d = all
            .iter()
            .find(|d| d.name == *name)
            .unwrap_or_else(|| panic!("{name}: no descriptor"));
        assert!(!d.help.is_empty(), "{name}: no help");
        assert!(!d.label_keys.is_empty(), "{name}: no label keys");
    }
    let keys = |name: &str| {
        all.iter()
            .find(|d| d.name == name)
            .unwrap()
            .label_keys
            .clone()
    };
    assert_eq!(
        keys(BLKIO_DEVICE_USAGE),
        [
            "container",
            "device",
            "id",
            "image",
            "major",
            "minor",
            "name",
            "namespace",
            "operation",
            "pod"
        ]
    );
    assert!(keys(ULIMITS_SOFT).contains(&"ulimit".to_owned()));
    assert!(keys(FS_INODES_FREE).contains(&"device".to_owned()));
}

fn who() -> Identity {
    Identity {
        container: "app".into(),
        id: "c1".into(),
        image: "busybox".into(),
        name: "app_pod_ns_uid_0".into(),
        namespace: "ns".into(),
        pod: "pod".into(),
    }
}

/// Finds the value of metric `name` (whose label `label.0` is `label.1`, if given).
fn get(out: &[cri::Metric], name: &str, label: Option<(&str, &str)>) -> Option<u64> {
    let keys = Descriptor::of(name).label_keys();
    out.iter()
        .find(|m| {
            m.name == name
                && label.is_none_or(|(k, v)| {
                    let i = keys.iter().position(|x| *x == k).unwrap();
                    m.label_values[i] == v
                })
        })
        .map(|m| m.value.as_ref().unwrap().value)
}

fn assert_labels_follow_descriptors(out: &[cri::Metric]) {
    let descriptors = descriptors();
    for m in out {
        let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        assert_eq!(m.metric_type, Descriptor::of(&m.name).kind as i32);
    }
}

#[test]
fn metrics_follow_their_descriptors() {
    let mut stats = Stats::default();
    stats.cpu.usage_total_ns = 2_500_000_000;
    stats.memory.working_set = 4096;
    stats.memory.limit = Some(1 << 20);
    stats.pids.current = 3;
    let net = parse_net_dev(
        "h1\nh2\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n  eth0: 1500 10 2 3 0 0 0 0 700 7 1 4 0 0 0 0\n",
    );
    let usage = Usage {
        cgroup: Some(stats),
        oom_kills: Some(1),
        writable_layer: None,
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        }),
        started_at: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
        network: net,
    };
    let empty = tempfile::tempdir().unwrap();
    let host = Host {
        proc: empty.path().into(),
        sys: empty.path().into(),
        now: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
    };
    let out = metrics_on(&host, &who(), &usage);
    assert_labels_follow_descriptors(&out);
    assert_eq!(get(&out, CPU_USAGE, None), Some(2));
    assert_eq!(get(&out, MEM_WORKING_SET, None), Some(4096));
    assert_eq!(get(&out, SPEC_MEM_LIMIT, None), Some(1 << 20));
    assert_eq!(get(&out, THREADS, None), Some(3));
    assert_eq!(get(&out, PROCESSES, None), Some(0));
    assert_eq!(get(&out, OOM_EVENTS, None), Some(1));
    assert_eq!(get(&out, SPEC_CPU_SHARES, None), Some(512));
    assert_eq!(get(&out, SPEC_CPU_QUOTA, None), None);
    assert_eq!(get(&out, START_TIME, None), Some(1_700_000_000));
    assert_eq!(get(&out, LAST_SEEN, None), Some(1_700_000_100));
    assert_eq!(get(&out, FS_USAGE, None), None);
    assert_eq!(
        get(&out, NET_RX_BYTES, Some(("interface", "eth0"))),
        Some(1500)
    );
    assert_eq!(
        get(&out, NET_RX_DROPPED, Some(("interface", "eth0"))),
        Some(3)
    );
    assert_eq!(
        get(&out, NET_TX_DROPPED, Some(("interface", "eth0"))),
        Some(4)
    );
    assert_eq!(get(&out, NET_RX_BYTES, Some(("interface", "lo"))), None);
    let cpu = out.iter().find(|m| m.name == CPU_USAGE).unwrap();
    assert_eq!(
        cpu.label_values,
        ["app", "c1", "busybox", "app_pod_ns_uid_0", "ns", "pod"]
    );
    assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
}

/// A cgroup v2 container cgroup, a /proc with its two processes and a sysfs, all fake; the
/// writable layer is a real directory, described in the fake mountinfo.
struct Fixture {
    _tmp: tempfile::TempDir,
    cgroup_root: PathBuf,
    host: Host,
    layer: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let cgroup_root = tmp.path().join("cgroup");
    let dir = cgroup_root.join("pod1/c1");
    fs::create_dir_all(&dir).unwrap();
    let w = |f: &str, c: &str| fs::write(dir.join(f), c).unwrap();
    w("cgroup.procs", "200\n100\n");
    w(
        "cpu.stat",
        "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\nnr_periods 10\nnr_throttled 2\nthrottled_usec 1000000\n",
    );
    w("cpu.max", "20000 100000\n");
    w("memory.current", "10485760\n");
    w("memory.peak", "20971520\n");
    w("memory.max", "67108864\n");
    w("memory.min", "0\n");
    w(
        "memory.stat",
        "anon 4096\nfile 8192\nkernel 32768\nfile_mapped 1024\ninactive_file 1048576\npgfault 7\npgmajfault 1\n",
    );
    w("memory.swap.current", "0\n");
    w("memory.swap.max", "max\n");
    w("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n");
    let psi = |some: u64, full: u64| {
        format!(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total={some}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total={full}\n"
        )
    };
    w("cpu.pressure", &psi(7_000_000, 3_000_000));
    w("memory.pressure", &psi(2_000_000, 1_000_000));
    w("io.pressure", &psi(9_000_000, 4_500_000));
    w("pids.current", "4\n");
    w("pids.max", "1024\n");
    w("hugetlb.2MB.max", "max\n");
    w("hugetlb.2MB.current", "2097152\n");
    w("hugetlb.2MB.events", "max 0\n");
    w(
        "io.stat",
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    );

    let proc = tmp.path().join("proc");
    // 100 is the container's init (pid 1 in its pid namespace): 3 descriptors, 1 a socket.
    let p100 = proc.join("100");
    fs::create_dir_all(p100.join("fd")).unwrap();
    symlink("/dev/null", p100.join("fd/0")).unwrap();
    symlink("pipe:[5]", p100.join("fd/1")).unwrap();
    symlink("socket:[77]", p100.join("fd/3")).unwrap();
    fs::write(p100.join("status"), "Name:\tsh\nNSpid:\t100\t1\n").unwrap();
    fs::write(
        p100.join("limits"),
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max open files            1024                 4096                 files     \n",
    )
    .unwrap();
    // 200 is a process exec'd into it: 2 descriptors, both sockets.
    let p200 = proc.join("200");
    fs::create_dir_all(p200.join("fd")).unwrap();
    symlink("socket:[78]", p200.join("fd/0")).unwrap();
    symlink("socket:[79]", p200.join("fd/1")).unwrap();
    fs::write(p200.join("status"), "Name:\tsh\nNSpid:\t200\t7\n").unwrap();
    fs::write(
        p200.join("limits"),
        "Max open files            9                    9                    files\n",
    )
    .unwrap();

    let layer = tmp.path().join("snapshots");
    fs::create_dir_all(&layer).unwrap();
    let dev = fs::metadata(&layer).unwrap().dev();
    fs::create_dir_all(proc.join("self")).unwrap();
    fs::write(
        proc.join("self/mountinfo"),
        format!(
            "22 1 {}:{} / / rw,relatime shared:1 - ext4 /dev/fakedisk1 rw\n",
            major(dev),
            minor(dev)
        ),
    )
    .unwrap();

    let sys = tmp.path().join("sys");
    fs::create_dir_all(sys.join("dev/block/8:0")).unwrap();
    fs::write(sys.join("dev/block/8:0/uevent"), "MAJOR=8\nDEVNAME=sda\n").unwrap();

    Fixture {
        host: Host {
            proc,
            sys,
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        },
        cgroup_root,
        layer,
        _tmp: tmp,
    }
}

#[test]
fn values_from_a_fake_cgroup_v2_and_proc_tree() {
    let fx = fixture();
    let path = CgroupPath::from_spec(Some("/pod1/c1"), "c1", false).unwrap();
    let manager = V2Manager::with_root(&fx.cgroup_root, &path);
    let usage = Usage {
        cgroup: Some(manager.stats().unwrap()),
        oom_kills: Some(manager.oom_kill_count().unwrap()),
        writable_layer: Some((fx.layer.display().to_string(), 12288)),
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 1024,
            ..Default::default()
        }),
        started_at: Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
        network: Vec::new(),
    };
    let out = metrics_on(&fx.host, &who(), &usage);
    assert_labels_follow_descriptors(&out);
    let v = |name| get(&out, name, None);
    assert_eq!(v(CPU_USAGE), Some(3));
    assert_eq!(v(CPU_USER), Some(2));
    assert_eq!(v(CPU_SYSTEM), Some(1));
    assert_eq!(v(CFS_PERIODS), Some(10));
    assert_eq!(v(CFS_THROTTLED_PERIODS), Some(2));
    assert_eq!(v(CFS_THROTTLED_SECONDS), Some(1));
    assert_eq!(v(MEM_USAGE), Some(10485760));
    assert_eq!(v(MEM_MAX_USAGE), Some(20971520));
    assert_eq!(v(MEM_WORKING_SET), Some(10485760 - 1048576));
    assert_eq!((v(MEM_RSS), v(MEM_CACHE)), (Some(4096), Some(8192)));
    assert_eq!(v(MEM_KERNEL), Some(32768));
    assert_eq!(v(MEM_MAPPED_FILE), Some(1024));
    assert_eq!(v(MEM_SWAP), Some(0));
    assert_eq!(v(MEM_FAILCNT), Some(5));
    let failures: Vec<_> = out
        .iter()
        .filter(|m| m.name == MEM_FAILURES)
        .map(|m| {
            // failure_type and scope, after container.
            (
                m.label_values[1].as_str(),
                m.label_values[7].as_str(),
                m.value.as_ref().unwrap().value,
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("pgfault", "container", 7),
            ("pgmajfault", "container", 1),
            ("pgfault", "hierarchy", 7),
            ("pgmajfault", "hierarchy", 1)
        ]
    );
    assert_eq!(v(OOM_EVENTS), Some(1));
    assert_eq!(v(SPEC_MEM_LIMIT), Some(64 << 20));
    assert_eq!(v(SPEC_MEM_RESERVATION), Some(0));
    // memory.swap.max "max": unlimited, 0 as cAdvisor reports it.
    assert_eq!(v(SPEC_MEM_SWAP_LIMIT), Some(0));
    assert_eq!(
        (v(SPEC_CPU_PERIOD), v(SPEC_CPU_QUOTA), v(SPEC_CPU_SHARES)),
        (Some(100_000), Some(20_000), Some(1024))
    );
    assert_eq!(
        get(&out, HUGETLB_USAGE, Some(("pagesize", "2MB"))),
        Some(2 << 20)
    );
    assert_eq!((v(PSI_CPU_STALLED), v(PSI_CPU_WAITING)), (Some(3), Some(7)));
    assert_eq!(
        (v(PSI_MEMORY_STALLED), v(PSI_MEMORY_WAITING)),
        (Some(1), Some(2))
    );
    assert_eq!((v(PSI_IO_STALLED), v(PSI_IO_WAITING)), (Some(4), Some(9)));
    // Processes of the cgroup itself; threads from the pids controller.
    assert_eq!(v(PROCESSES), Some(2));
    assert_eq!(v(THREADS), Some(4));
    assert_eq!(v(THREADS_MAX), Some(1024));
    assert_eq!(v(FILE_DESCRIPTORS), Some(5));
    assert_eq!(v(SOCKETS), Some(3));
    // Of the root process (pid 1 in the container), not of the exec'd one.
    assert_eq!(
        get(&out, ULIMITS_SOFT, Some(("ulimit", "max_open_files"))),
        Some(1024)
    );
    assert_eq!(v(START_TIME), Some(1_700_000_000));
    assert_eq!(v(LAST_SEEN), Some(1_800_000_000));

    let disk = Some(("device", "/dev/fakedisk1"));
    let c = filesystem::capacity(&fx.layer).unwrap();
    assert_eq!(get(&out, FS_USAGE, disk), Some(12288));
    assert_eq!(get(&out, FS_LIMIT, disk), Some(c.bytes));
    assert_eq!(get(&out, FS_INODES_TOTAL, disk), Some(c.inodes));
    assert!(get(&out, FS_INODES_FREE, disk).unwrap() <= c.inodes);

    let sda = Some(("device", "/dev/sda"));
    assert_eq!(get(&out, FS_READS_BYTES, sda), Some(4096));
    assert_eq!(get(&out, FS_WRITES, sda), Some(2));
    let blkio: Vec<_> = out
        .iter()
        .filter(|m| m.name == BLKIO_DEVICE_USAGE)
        .map(|m| (m.label_values.clone(), m.value.as_ref().unwrap().value))
        .collect();
    let labels = |op: &str| -> Vec<String> {
        [
            "app",
            "/dev/sda",
            "c1",
            "busybox",
            "8",
            "0",
            "app_pod_ns_uid_0",
            "ns",
            op,
            "pod",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    assert_eq!(blkio, vec![(labels("Read"), 4096), (labels("Write"), 8192)]);

    // Every metric critest asks values of is there, except the blkio ones (none here would be
    // fine too) and those berth does not report.
    for name in expected() {
        let absent_ok = [HUGETLB_MAX_USAGE, SPEC_MEM_RESERVATION].contains(&name)
            || name.starts_with("container_network_");
        assert!(absent_ok || v(name).is_some(), "{name}: no value");
    }
}

#[test]
fn processes_gone_and_unreadable_files_are_left_out() {
    let fx = fixture();
    let stats = Stats {
        procs: vec![100, 999],
        ..Default::default()
    };
    let usage = Usage {
        cgroup: Some(stats),
        writable_layer: Some((fx.layer.join("gone").display().to_string(), 1)),
        ..Default::default()
    };
    let out = metrics_on(&fx.host, &who(), &usage);
    assert_labels_follow_descriptors(&out);
    assert_eq!(get(&out, PROCESSES, None), Some(2));
    assert_eq!(get(&out, FILE_DESCRIPTORS, None), Some(3));
    // The layer's directory is gone: its usage is labelled with its path, no capacity.
    let gone = fx.layer.join("gone").display().to_string();
    assert_eq!(get(&out, FS_USAGE, Some(("device", &gone))), Some(1));
    assert_eq!(get(&out, FS_LIMIT, None), None);
}
