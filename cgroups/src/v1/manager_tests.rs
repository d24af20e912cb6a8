use super::*;
use std::fs;

use crate::setup::{UnifiedMount, V1Mount};

/// Files of each v1 controller's cgroup directory (as this machine's kernel has them).
const FILES: &[(&str, &[&str])] = &[
    (
        "cpu",
        &[
            "cpu.shares",
            "cpu.cfs_quota_us",
            "cpu.cfs_period_us",
            "cpu.cfs_burst_us",
            "cpu.rt_runtime_us",
            "cpu.rt_period_us",
            "cpu.idle",
            "cpu.stat",
        ],
    ),
    (
        "cpuacct",
        &[
            "cpuacct.usage",
            "cpuacct.usage_user",
            "cpuacct.usage_sys",
            "cpuacct.stat",
        ],
    ),
    ("cpuset", &["cpuset.cpus", "cpuset.mems"]),
    (
        "memory",
        &[
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.swappiness",
            "memory.oom_control",
            "memory.usage_in_bytes",
            "memory.max_usage_in_bytes",
            "memory.stat",
            "memory.memsw.usage_in_bytes",
        ],
    ),
    (
        "devices",
        &["devices.allow", "devices.deny", "devices.list"],
    ),
    ("freezer", &["freezer.state"]),
    (
        "blkio",
        &[
            "blkio.weight",
            "blkio.leaf_weight",
            "blkio.weight_device",
            "blkio.leaf_weight_device",
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
            "blkio.throttle.read_iops_device",
            "blkio.throttle.write_iops_device",
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced_recursive",
        ],
    ),
    ("pids", &["pids.max", "pids.current"]),
    (
        "net_cls,net_prio",
        &["net_cls.classid", "net_prio.ifpriomap"],
    ),
    ("systemd", &[]),
];

struct Fixture {
    tmp: tempfile::TempDir,
    mounts: CgroupMounts,
}

impl Fixture {
    /// v1 mounts under a temp dir; `with` picks the hierarchies (by mount dir name).
    fn new(with: &[&str], unified: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut mounts = CgroupMounts::default();
        for (name, _) in FILES.iter().filter(|(n, _)| with.contains(n)) {
            let mount_point = tmp.path().join(name);
            fs::create_dir_all(&mount_point).unwrap();
            let controllers = if *name == "systemd" {
                vec!["name=systemd".to_owned()]
            } else {
                name.split(',').map(str::to_owned).collect()
            };
            mounts.v1.push(V1Mount {
                mount_point,
                root: "/".into(),
                controllers,
            });
        }
        if unified {
            let mount_point = tmp.path().join("unified");
            fs::create_dir_all(&mount_point).unwrap();
            fs::write(mount_point.join("cgroup.controllers"), "hugetlb\n").unwrap();
            fs::write(mount_point.join("cgroup.subtree_control"), "").unwrap();
            mounts.unified = Some(UnifiedMount {
                mount_point,
                root: "/".into(),
            });
        }
        Self { tmp, mounts }
    }

    fn manager(&self, spec: &str) -> V1Manager {
        let path = CgroupPath::from_spec(Some(spec), "c1", false).unwrap();
        V1Manager::with_mounts(&self.mounts, &[], &path).unwrap()
    }

    /// Creates the cgroup's directories with each controller's files, as the kernel would.
    fn layout(&self, m: &V1Manager) {
        for (name, files) in FILES {
            let Some(dir) = m.paths().into_iter().find(|p| {
                p.strip_prefix(self.tmp.path())
                    .is_ok_and(|r| r.starts_with(name))
            }) else {
                continue;
            };
            fs::create_dir_all(&dir).unwrap();
            for f in *files {
                fs::write(dir.join(f), "").unwrap();
            }
        }
    }
}

const ALL: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls,net_prio",
    "systemd",
];

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("valid linux.resources JSON")
}

#[test]
fn one_directory_per_hierarchy_plus_unified() {
    let fx = Fixture::new(ALL, true);
    let m = fx.manager("/berth/c1");
    let paths = m.paths();
    assert_eq!(paths.len(), ALL.len() + 1);
    assert!(paths.contains(&fx.tmp.path().join("net_cls,net_prio/berth/c1")));
    assert!(paths.contains(&fx.tmp.path().join("systemd/berth/c1")));
    assert_eq!(
        m.unified_dir(),
        Some(fx.tmp.path().join("unified/berth/c1").as_path())
    );
    assert_eq!(m.controller_dir("net_prio"), m.controller_dir("net_cls"));
    assert!(m.controller_dir("hugetlb").is_none());
}

#[test]
fn relative_paths_use_own_cgroup_per_hierarchy() {
    let fx = Fixture::new(&["cpu", "memory"], false);
    let own = crate::setup::parse_proc_cgroup(
        Path::new("f"),
        "4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
    )
    .unwrap();
    let path = CgroupPath::from_spec(Some("pods/c1"), "c1", false).unwrap();
    let m = V1Manager::with_mounts(&fx.mounts, &own, &path).unwrap();
    assert_eq!(
        m.controller_dir("memory").unwrap(),
        fx.tmp.path().join("memory/process_api/abc/pods/c1")
    );
    assert_eq!(
        m.controller_dir("cpu").unwrap(),
        fx.tmp.path().join("cpu/pods/c1")
    );
    assert!(V1Manager::with_mounts(&fx.mounts, &[], &path).is_err());
}

#[test]
fn create_copies_cpuset_from_parents() {
    let fx = Fixture::new(&["cpuset"], false);
    let root = fx.tmp.path().join("cpuset");
    fs::write(root.join("cpuset.cpus"), "0-1\n").unwrap();
    fs::write(root.join("cpuset.mems"), "0\n").unwrap();
    // Kernel-made files of the new cgroups start empty.
    for d in ["berth", "berth/c1"] {
        fs::create_dir_all(root.join(d)).unwrap();
        fs::write(root.join(d).join("cpuset.cpus"), "").unwrap();
        fs::write(root.join(d).join("cpuset.mems"), "").unwrap();
    }
    fs::write(root.join("berth/cpuset.mems"), "0\n").unwrap();
    let m = fx.manager("/berth/c1");
    m.create().unwrap();
    for d in ["berth", "berth/c1"] {
        assert_eq!(
            fs::read_to_string(root.join(d).join("cpuset.cpus"))
                .unwrap()
                .trim(),
            "0-1"
        );
        assert_eq!(
            fs::read_to_string(root.join(d).join("cpuset.mems"))
                .unwrap()
                .trim(),
            "0"
        );
    }
}

#[test]
fn apply_writes_every_controller() {
    let fx = Fixture::new(ALL, false);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    let mem_dir = m.controller_dir("memory").unwrap().to_owned();
    fs::write(
        mem_dir.join("memory.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .unwrap();
    let r = resources(
        r#"{
      "devices": [{"allow": false, "access": "rwm"},
                  {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                  {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}],
      "cpu": {"shares": 512, "quota": 25000, "period": 50000, "realtimeRuntime": 950,
              "realtimePeriod": 1000, "cpus": "0", "mems": "0", "idle": 1, "burst": 10},
      "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200,
                 "kernel": 1, "swappiness": 10, "disableOOMKiller": true},
      "pids": {"limit": 0},
      "blockIO": {"weight": 300, "leafWeight": 200,
                  "weightDevice": [{"major": 8, "minor": 0, "weight": 50, "leafWeight": 60}],
                  "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                  "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}],
                  "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
                  "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 20}]},
      "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}
    }"#,
    );
    // The kernel echoes cpu.shares; a plain file does too.
    m.apply(&r).unwrap();
    let read =
        |ctrl: &str, f: &str| fs::read_to_string(m.controller_dir(ctrl).unwrap().join(f)).unwrap();
    for (ctrl, file, want) in [
        ("cpu", "cpu.shares", "512"),
        ("cpu", "cpu.cfs_quota_us", "25000"),
        ("cpu", "cpu.cfs_period_us", "50000"),
        ("cpu", "cpu.rt_runtime_us", "950"),
        ("cpu", "cpu.rt_period_us", "1000"),
        ("cpu", "cpu.idle", "1"),
        ("cpu", "cpu.cfs_burst_us", "10"),
        ("cpuset", "cpuset.cpus", "0"),
        ("cpuset", "cpuset.mems", "0"),
        ("memory", "memory.limit_in_bytes", "104857600"),
        ("memory", "memory.memsw.limit_in_bytes", "209715200"),
        ("memory", "memory.soft_limit_in_bytes", "52428800"),
        ("memory", "memory.swappiness", "10"),
        ("memory", "memory.oom_control", "1"),
        ("pids", "pids.max", "max"),
        ("blkio", "blkio.weight", "300"),
        ("blkio", "blkio.leaf_weight", "200"),
        ("blkio", "blkio.weight_device", "8:0 50"),
        ("blkio", "blkio.leaf_weight_device", "8:0 60"),
        ("blkio", "blkio.throttle.read_bps_device", "8:0 1048576"),
        ("blkio", "blkio.throttle.write_bps_device", "8:0 2097152"),
        ("blkio", "blkio.throttle.read_iops_device", "8:0 10"),
        ("blkio", "blkio.throttle.write_iops_device", "8:0 20"),
        ("net_cls", "net_cls.classid", "1048577"),
        ("net_prio", "net_prio.ifpriomap", "eth0 5"),
        // Each devices write is its own; the file keeps the last of each kind.
        ("devices", "devices.allow", "c 1:3 rwm"),
        ("devices", "devices.deny", "c 1:3 w"),
    ] {
        assert_eq!(read(ctrl, file), want, "{file}");
    }
}

#[test]
fn devices_plan_denies_all_first() {
    let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
        r#"[{"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rw"},
            {"allow": true, "type": "p", "access": "rwm"},
            {"allow": false, "type": "b", "major": 8, "minor": -1}]"#,
    )
    .unwrap();
    assert_eq!(
        devices::plan(&rules).unwrap(),
        vec![
            ("devices.deny", "a".to_owned()),
            ("devices.deny", "a *:* rwm".to_owned()),
            ("devices.allow", "c 1:3 rwm".to_owned()),
            ("devices.allow", "c 136:* rw".to_owned()),
            ("devices.deny", "b 8:* rwm".to_owned()),
        ]
    );
}

#[test]
fn absent_controllers_are_errors_only_when_requested() {
    let fx = Fixture::new(&["cpu", "memory"], false);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    m.apply(&resources(r#"{"cpu": {"shares": 2}}"#)).unwrap();
    // Nothing asked of the absent net_cls/net_prio: no error (as runc).
    for json in [
        r#"{"network": {}}"#,
        r#"{"network": {"classID": 0}}"#,
        r#"{"network": {"classID": 0, "priorities": []}}"#,
    ] {
        m.apply(&resources(json))
            .unwrap_or_else(|e| panic!("{json}: {e}"));
    }
    for (json, controller) in [
        (r#"{"network": {"classID": 1}}"#, "net_cls"),
        (r#"{"pids": {"limit": 5}}"#, "pids"),
        (
            r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}"#,
            "hugetlb",
        ),
        (r#"{"devices": []}"#, "devices"),
        (r#"{"unified": {"memory.high": "1"}}"#, "unified"),
    ] {
        match m.apply(&resources(json)) {
            Err(CgroupError::UnsupportedResource {
                controller: c,
                what,
            }) => {
                assert_eq!(c, controller, "{what}")
            }
            other => panic!("{json}: {other:?}"),
        }
    }
}

#[test]
fn swap_without_swap_accounting() {
    let fx = Fixture::new(&["memory"], false);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    let dir = m.controller_dir("memory").unwrap().to_owned();
    fs::remove_file(dir.join("memory.memsw.limit_in_bytes")).unwrap();
    let err = m
        .apply(&resources(r#"{"memory": {"limit": 1000, "swap": 2000}}"#))
        .unwrap_err();
    assert!(
        err.to_string().contains("memory.memsw.limit_in_bytes"),
        "{err}"
    );
    // Unlimited swap needs no file.
    m.apply(&resources(r#"{"memory": {"limit": -1, "swap": -1}}"#))
        .unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
        "-1"
    );
    let err = m
        .apply(&resources(r#"{"memory": {"limit": 1000, "swap": 500}}"#))
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResource { .. }), "{err}");
    let err = m
        .apply(&resources(r#"{"memory": {"swappiness": 101}}"#))
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResource { .. }), "{err}");
}

#[test]
fn hugetlb_falls_back_to_cgroup2_on_hybrid_hosts() {
    let fx = Fixture::new(&["memory"], true);
    let m = fx.manager("/berth/c1");
    let udir = m.unified_dir().unwrap().to_owned();
    fs::create_dir_all(&udir).unwrap();
    fs::write(udir.join("hugetlb.2MB.max"), "max").unwrap();
    m.apply(&resources(
        r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]}"#,
    ))
    .unwrap();
    assert_eq!(
        fs::read_to_string(udir.join("hugetlb.2MB.max")).unwrap(),
        "2097152"
    );
    assert_eq!(
        fs::read_to_string(fx.tmp.path().join("unified/cgroup.subtree_control")).unwrap(),
        "+hugetlb"
    );
    let err = m
        .apply(&resources(
            r#"{"hugepageLimits": [{"pageSize": "1GB", "limit": 0}]}"#,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("hugetlb.1GB.max"), "{err}");
}

#[test]
fn pressure_from_the_unified_side_on_hybrid_hosts() {
    let fx = Fixture::new(&["memory"], true);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    w_stat(&m);
    let udir = m.unified_dir().unwrap().to_owned();
    fs::create_dir_all(&udir).unwrap();
    // No pressure file (yet): none.
    assert_eq!(m.stats().unwrap().pressure.cpu, None);
    fs::write(
        udir.join("cpu.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
    )
    .unwrap();
    let s = m.stats().unwrap();
    let p = s.pressure;
    let cpu = p.cpu.unwrap();
    assert_eq!(
        (cpu.some.total_us, cpu.full.map(|f| f.total_us)),
        (2500000, Some(1000000))
    );
    assert_eq!((p.memory, p.io), (None, None));
    // The usage types' psi (what the CRI reports) is v2's only: none on v1, not zero.
    assert_eq!((s.cpu.psi, s.memory.psi, s.io.psi), (None, None, None));
}

/// The memory files stats() needs to read.
fn w_stat(m: &V1Manager) {
    let dir = m.controller_dir("memory").unwrap();
    for f in [
        "memory.usage_in_bytes",
        "memory.max_usage_in_bytes",
        "memory.memsw.usage_in_bytes",
    ] {
        fs::write(dir.join(f), "0\n").unwrap();
    }
    for f in [
        "memory.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.memsw.limit_in_bytes",
    ] {
        fs::write(dir.join(f), "9223372036854771712\n").unwrap();
    }
    fs::write(dir.join("memory.stat"), "").unwrap();
    fs::write(dir.join("memory.oom_control"), "oom_kill 0\n").unwrap();
}

#[test]
fn stats_from_files() {
    let fx = Fixture::new(ALL, false);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    let w = |ctrl: &str, f: &str, c: &str| {
        fs::write(m.controller_dir(ctrl).unwrap().join(f), c).unwrap()
    };
    w("cpuacct", "cpuacct.usage", "3000\n");
    w("cpuacct", "cpuacct.usage_user", "2000\n");
    w("cpuacct", "cpuacct.usage_sys", "1000\n");
    w(
        "cpu",
        "cpu.stat",
        "nr_periods 4\nnr_throttled 1\nthrottled_time 99\n",
    );
    w("memory", "memory.usage_in_bytes", "8388608\n");
    w("memory", "memory.max_usage_in_bytes", "9000000\n");
    w("memory", "memory.limit_in_bytes", "9223372036854771712\n");
    w("memory", "memory.memsw.usage_in_bytes", "8400000\n");
    w(
        "memory",
        "memory.memsw.limit_in_bytes",
        "9223372036854771712\n",
    );
    w(
        "memory",
        "memory.stat",
        "cache 1\nrss 2\nmapped_file 5\npgfault 4\npgmajfault 1\ntotal_cache 4096\ntotal_rss 8192\ntotal_mapped_file 2048\ntotal_inactive_file 1048576\ntotal_pgfault 9\ntotal_pgmajfault 3\n",
    );
    w("memory", "memory.failcnt", "6\n");
    w("memory", "memory.kmem.usage_in_bytes", "65536\n");
    w(
        "memory",
        "memory.soft_limit_in_bytes",
        "9223372036854771712\n",
    );
    w("cpu", "cgroup.procs", "42\n7\n");
    w(
        "memory",
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    w("pids", "pids.current", "4\n");
    w("pids", "pids.max", "max\n");
    w(
        "blkio",
        "blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n",
    );
    w(
        "blkio",
        "blkio.throttle.io_serviced_recursive",
        "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
    );
    let s = m.stats().unwrap();
    assert_eq!(
        (
            s.cpu.usage_total_ns,
            s.cpu.usage_user_ns,
            s.cpu.usage_system_ns
        ),
        (3000, 2000, 1000)
    );
    assert_eq!(
        (
            s.cpu.periods,
            s.cpu.throttled_periods,
            s.cpu.throttled_time_ns
        ),
        (4, 1, 99)
    );
    assert_eq!(s.memory.usage, 8388608);
    assert_eq!(s.memory.max_usage, Some(9000000));
    assert_eq!(s.memory.limit, None);
    assert_eq!(s.memory.working_set, 8388608 - 1048576);
    assert_eq!((s.memory.rss, s.memory.cache), (8192, 4096));
    assert_eq!((s.memory.pgfault, s.memory.pgmajfault), (9, 3));
    assert_eq!((s.memory.own_pgfault, s.memory.own_pgmajfault), (4, 1));
    assert_eq!(s.memory.swap_usage, 8400000 - 8388608);
    assert_eq!(s.memory.oom_kill_count, 2);
    assert_eq!(m.oom_kill_count().unwrap(), 2);
    assert_eq!(s.memory.failcnt, 6);
    assert_eq!(s.memory.kernel_usage, 65536);
    assert_eq!(s.memory.mapped_file, 2048);
    assert_eq!(s.memory.reservation, None);
    assert_eq!(s.memory.swap_limit, None);
    assert_eq!(s.procs, vec![7, 42]);
    assert_eq!((s.pids.current, s.pids.limit), (4, None));
    assert_eq!((s.blkio_read_bytes(), s.blkio_write_bytes()), (512, 1024));
    assert_eq!((s.blkio[0].read_ios, s.blkio[0].write_ios), (1, 2));
    // Older kernels: cpuacct.stat in USER_HZ ticks.
    fs::remove_file(
        m.controller_dir("cpuacct")
            .unwrap()
            .join("cpuacct.usage_user"),
    )
    .unwrap();
    w("cpuacct", "cpuacct.stat", "user 3\nsystem 1\n");
    let s = m.stats().unwrap();
    assert_eq!(
        (s.cpu.usage_user_ns, s.cpu.usage_system_ns),
        (30_000_000, 10_000_000)
    );
}

#[test]
fn freezer_state_parsing() {
    let fx = Fixture::new(&["freezer"], false);
    let m = fx.manager("/c1");
    fx.layout(&m);
    let f = m.controller_dir("freezer").unwrap().join("freezer.state");
    for (content, want) in [
        ("THAWED\n", FreezerState::Thawed),
        ("FREEZING\n", FreezerState::Freezing),
        ("FROZEN\n", FreezerState::Frozen),
    ] {
        fs::write(&f, content).unwrap();
        assert_eq!(m.freezer_state().unwrap(), want);
    }
    fs::write(&f, "MELTED").unwrap();
    assert!(m.freezer_state().is_err());
    let no_freezer = Fixture::new(&["cpu"], false);
    assert!(matches!(
        no_freezer.manager("/c1").freeze(),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn read_resources_reads_the_live_files_back() {
    let fx = Fixture::new(ALL, false);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    let write = |ctrl: &str, f: &str, v: &str| {
        fs::write(m.controller_dir(ctrl).unwrap().join(f), v).unwrap()
    };
    // A new cgroup as the kernel shows it: no limits, cpuset copied from the parent.
    write("cpu", "cpu.shares", "1024\n");
    write("cpu", "cpu.cfs_quota_us", "-1\n");
    write("cpu", "cpu.cfs_period_us", "100000\n");
    write("cpuset", "cpuset.cpus", "0-1\n");
    write("cpuset", "cpuset.mems", "0\n");
    write("memory", "memory.limit_in_bytes", "9223372036854771712\n");
    write(
        "memory",
        "memory.memsw.limit_in_bytes",
        "9223372036854771712\n",
    );
    let r = m.read_resources(&[]).unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.shares(), Some(1024));
    assert_eq!(cpu.quota(), Some(-1));
    assert_eq!(cpu.period(), Some(100000));
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    let mem = r.memory().unwrap();
    assert_eq!((mem.limit(), mem.swap()), (Some(-1), Some(-1)));
    assert!(r.hugepage_limits().is_none());
    assert!(r.unified().is_none());

    // What apply wrote is what is read back (the files are the truth, not the request).
    m.apply(&resources(
        r#"{"cpu": {"shares": 512, "quota": 25000, "period": 50000, "cpus": "0"},
            "memory": {"limit": 104857600, "swap": 209715200}}"#,
    ))
    .unwrap();
    let r = m.read_resources(&["memory.high".to_owned()]).unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(
        (cpu.shares(), cpu.quota(), cpu.period()),
        (Some(512), Some(25000), Some(50000))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("0"));
    let mem = r.memory().unwrap();
    assert_eq!(
        (mem.limit(), mem.swap()),
        (Some(104857600), Some(209715200))
    );
    assert!(r.unified().is_none(), "v1 has no unified files");
    // Someone else (the kernel, another tool) changed a file: the read says so.
    write("memory", "memory.limit_in_bytes", "52428800\n");
    assert_eq!(
        m.read_resources(&[]).unwrap().memory().unwrap().limit(),
        Some(52428800)
    );
}

#[test]
fn read_resources_without_controllers_leaves_them_unset() {
    let fx = Fixture::new(&["memory", "systemd"], false);
    let m = fx.manager("/berth/c1");
    fx.layout(&m);
    fs::write(
        m.controller_dir("memory")
            .unwrap()
            .join("memory.limit_in_bytes"),
        "4096\n",
    )
    .unwrap();
    let r = m.read_resources(&[]).unwrap();
    assert!(r.cpu().is_none());
    assert_eq!(r.memory().unwrap().limit(), Some(4096));
    // memsw exists but is empty in the fake tree: unset.
    assert_eq!(r.memory().unwrap().swap(), None);
}

#[test]
fn read_resources_reads_hugetlb_limits() {
    let fx = Fixture::new(&["memory"], false);
    let tmp = fx.tmp.path().join("hugetlb");
    fs::create_dir_all(tmp.join("berth/c1")).unwrap();
    let mut mounts = fx.mounts.clone();
    mounts.v1.push(V1Mount {
        mount_point: tmp.clone(),
        root: "/".into(),
        controllers: vec!["hugetlb".into()],
    });
    let path = CgroupPath::from_spec(Some("/berth/c1"), "c1", false).unwrap();
    let m = V1Manager::with_mounts(&mounts, &[], &path).unwrap();
    let dir = tmp.join("berth/c1");
    fs::write(dir.join("hugetlb.2MB.limit_in_bytes"), "4194304\n").unwrap();
    fs::write(dir.join("hugetlb.2MB.rsvd.limit_in_bytes"), "4194304\n").unwrap();
    fs::write(
        dir.join("hugetlb.1GB.limit_in_bytes"),
        "9223372036854771712\n",
    )
    .unwrap();
    let r = m.read_resources(&[]).unwrap();
    let got: Vec<(String, i64)> = r
        .hugepage_limits()
        .clone()
        .unwrap()
        .iter()
        .map(|l| (l.page_size().clone(), l.limit()))
        .collect();
    assert_eq!(
        got,
        vec![("1GB".to_owned(), -1), ("2MB".to_owned(), 4194304)]
    );
}
