use super::*;
use std::fs;

use crate::setup::UnifiedMount;
use crate::v2::resources::tests::layout;

fn manager(root: &Path, spec: &str) -> V2Manager {
    V2Manager::with_root(
        root,
        &CgroupPath::from_spec(Some(spec), "c1", false).unwrap(),
    )
}

#[test]
fn create_enables_available_controllers_in_ancestors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = layout(tmp.path(), "");
    fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    let m = manager(&root, "/berth/c1");
    m.create().unwrap();
    assert!(root.join("berth/c1").is_dir());
    assert_eq!(
        fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids"
    );
    // Creating again is fine.
    m.create().unwrap();
}

#[test]
fn relative_paths_resolve_under_own_cgroup() {
    let mounts = CgroupMounts {
        v1: vec![],
        unified: Some(UnifiedMount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/".into(),
        }),
    };
    let own = crate::setup::parse_proc_cgroup(Path::new("f"), "0::/user.slice/me\n").unwrap();
    let path = CgroupPath::from_spec(Some("pods/c1"), "c1", false).unwrap();
    let m = V2Manager::with_mounts(&mounts, &own, &path).unwrap();
    assert_eq!(m.dir(), Path::new("/sys/fs/cgroup/user.slice/me/pods/c1"));
    assert!(V2Manager::with_mounts(&mounts, &[], &path).is_err());
    let abs = CgroupPath::from_spec(Some("/berth/c1"), "c1", false).unwrap();
    let m = V2Manager::with_mounts(&mounts, &[], &abs).unwrap();
    assert_eq!(m.paths(), vec![PathBuf::from("/sys/fs/cgroup/berth/c1")]);
}

#[test]
fn freezer_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "c1");
    let m = manager(tmp.path(), "/c1");
    fs::write(dir.join("cgroup.freeze"), "0\n").unwrap();
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    assert_eq!(m.freezer_state().unwrap(), FreezerState::Thawed);
    fs::write(dir.join("cgroup.freeze"), "1\n").unwrap();
    assert_eq!(m.freezer_state().unwrap(), FreezerState::Freezing);
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    assert_eq!(m.freezer_state().unwrap(), FreezerState::Frozen);
    // freeze() writes cgroup.freeze and returns once cgroup.events says frozen.
    fs::write(dir.join("cgroup.freeze"), "0").unwrap();
    m.freeze().unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    m.thaw().unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
}

#[test]
fn kill_all_uses_cgroup_kill_for_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "c1");
    let m = manager(tmp.path(), "/c1");
    m.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.kill")).unwrap(), "1");
}

#[test]
fn partial_update_keeps_the_current_quota_and_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "c1");
    let m = manager(tmp.path(), "/c1");
    let w = |f: &str, c: &str| fs::write(dir.join(f), c).unwrap();
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
    let r = |json: &str| -> LinuxResources { serde_json::from_str(json).unwrap() };
    let period = r(r#"{"cpu": {"period": 50000}}"#);
    let swap = r(r#"{"memory": {"swap": 167772160}}"#);
    // `update --cpu-period 50000` of a container with a quota: the quota stays.
    w("cpu.max", "25000 100000\n");
    m.apply(&period).unwrap();
    assert_eq!(read("cpu.max"), "25000 50000");
    // `update --memory-swap 160M` with memory.max 96M: 64M of swap.
    w("memory.max", "100663296\n");
    m.apply(&swap).unwrap();
    assert_eq!(read("memory.swap.max"), "67108864");
    assert_eq!(read("memory.max"), "100663296");
    // Without a quota the period comes with "max"; without a memory limit, swap is refused.
    w("cpu.max", "max 100000\n");
    m.apply(&period).unwrap();
    assert_eq!(read("cpu.max"), "max 50000");
    w("memory.max", "max\n");
    assert!(matches!(
        m.apply(&swap),
        Err(CgroupError::InvalidResource {
            what: "memory.swap",
            ..
        })
    ));
    // Both given: the files are not consulted.
    w("cpu.max", "garbage");
    m.apply(&r(r#"{"cpu": {"quota": 1000, "period": 2000}}"#))
        .unwrap();
    assert_eq!(read("cpu.max"), "1000 2000");
}

#[test]
fn stats_and_oom_from_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "c1");
    let m = manager(tmp.path(), "/c1");
    let w = |f: &str, c: &str| fs::write(dir.join(f), c).unwrap();
    w(
        "cpu.stat",
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 30\n",
    );
    w("memory.current", "10485760\n");
    w("memory.max", "max\n");
    w(
        "memory.stat",
        "anon 4096\nfile 8192\nkernel_stack 16384\npagetables 4096\nslab 8192\nfile_mapped 1024\ninactive_file 1048576\npgfault 7\npgmajfault 1\n",
    );
    w("memory.min", "65536\n");
    w(
        "memory.pressure",
        "some avg10=1.50 avg60=0.00 avg300=0.25 total=3000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=2000000\n",
    );
    w(
        "cpu.pressure",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n",
    );
    w("cgroup.procs", "9\n3\n");
    w("memory.swap.current", "0\n");
    w("memory.swap.max", "1048576\n");
    w("memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n");
    w("pids.current", "3\n");
    w("pids.max", "100\n");
    w("hugetlb.2MB.current", "2097152\n");
    w("hugetlb.2MB.events", "max 5\n");
    w(
        "io.stat",
        "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
    );
    let s = m.stats().unwrap();
    assert_eq!(s.cpu.usage_total_ns, 1_500_000);
    assert_eq!(s.cpu.usage_user_ns, 1_000_000);
    assert_eq!(s.cpu.usage_system_ns, 500_000);
    assert_eq!((s.cpu.periods, s.cpu.throttled_periods), (10, 2));
    assert_eq!(s.cpu.throttled_time_ns, 30_000);
    assert_eq!(s.memory.usage, 10485760);
    assert_eq!(s.memory.limit, None);
    assert_eq!(s.memory.working_set, 10485760 - 1048576);
    assert_eq!((s.memory.rss, s.memory.cache), (4096, 8192));
    assert_eq!((s.memory.pgfault, s.memory.pgmajfault), (7, 1));
    assert_eq!((s.memory.own_pgfault, s.memory.own_pgmajfault), (7, 1));
    assert_eq!(s.memory.swap_limit, Some(1048576));
    assert_eq!(s.memory.oom_kill_count, 1);
    assert_eq!(s.memory.failcnt, 4);
    // No "kernel" line (kernels before 5.18): the sum of its parts.
    assert_eq!(s.memory.kernel_usage, 16384 + 4096 + 8192);
    assert_eq!(s.memory.mapped_file, 1024);
    assert_eq!(s.memory.reservation, Some(65536));
    assert_eq!(s.procs, vec![3, 9]);
    let memory = s.pressure.memory.as_ref().unwrap();
    assert_eq!(
        (
            memory.some.total_us,
            memory.full.as_ref().map(|f| f.total_us)
        ),
        (3000000, Some(2000000))
    );
    assert_eq!((memory.some.avg10, memory.some.avg300), (1.5, 0.25));
    assert_eq!(s.memory.psi.as_ref(), Some(memory));
    // cpu.pressure of a kernel before 5.13: no full line, so no full.
    let cpu = s.cpu.psi.as_ref().unwrap();
    assert_eq!((cpu.some.total_us, &cpu.full), (42, &None));
    // No io.pressure (PSI off): none, not zero.
    assert_eq!((&s.pressure.io, &s.io.psi), (&None, &None));
    assert_eq!(s.pids.current, 3);
    assert_eq!(s.pids.limit, Some(100));
    let huge: Vec<_> = s
        .hugetlb
        .iter()
        .map(|h| (h.page_size.as_str(), h.usage, h.failcnt))
        .collect();
    assert_eq!(huge, vec![("1GB", 0, 0), ("2MB", 2097152, 5)]);
    assert_eq!(s.blkio_read_bytes(), 100);
    assert_eq!(s.blkio_write_bytes(), 200);
    assert_eq!((s.blkio[0].read_ios, s.blkio[0].write_ios), (1, 2));
    assert_eq!(m.oom_kill_count().unwrap(), 1);
    w("memory.stat", "kernel 123456\nkernel_stack 16384\n");
    assert_eq!(m.stats().unwrap().memory.kernel_usage, 123456);
    fs::remove_file(dir.join("memory.events")).unwrap();
    assert!(matches!(
        m.oom_kill_count(),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn pids_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "c1");
    fs::write(dir.join("cgroup.procs"), "12\n7\n").unwrap();
    let m = manager(tmp.path(), "/c1");
    assert_eq!(m.pids().unwrap(), vec![Pid::from_raw(7), Pid::from_raw(12)]);
    // A temp dir is not cgroupfs: its files make rmdir fail, and the error names the directory.
    let err = m.remove().unwrap_err();
    assert!(err.to_string().contains("c1"), "{err}");
    let empty = manager(tmp.path(), "/gone");
    empty.remove().unwrap();
}

#[test]
fn read_resources_reads_the_live_files_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "c1");
    let m = manager(tmp.path(), "/c1");
    // A new cgroup as the kernel shows it.
    for (f, v) in [
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("hugetlb.2MB.max", "max\n"),
        ("hugetlb.2MB.rsvd.max", "max\n"),
        ("hugetlb.1GB.max", "max\n"),
        ("memory.high", "max\n"),
    ] {
        fs::write(dir.join(f), v).unwrap();
    }
    let r = m.read_resources(&[]).unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(
        cpu.shares(),
        Some(crate::cpu_weight_to_shares(100)),
        "cpu.weight 100 reads as the shares that give it"
    );
    assert_eq!(
        crate::v2::resources::cpu_shares_to_weight(cpu.shares().unwrap()),
        100
    );
    assert_eq!((cpu.quota(), cpu.period()), (Some(-1), Some(100000)));
    assert_eq!((cpu.cpus().as_deref(), cpu.mems().as_deref()), (None, None));
    let mem = r.memory().unwrap();
    assert_eq!((mem.limit(), mem.swap()), (Some(-1), Some(-1)));
    assert_eq!(r.hugepage_limits().as_ref().map(Vec::len), Some(2));
    assert!(r.unified().is_none());

    m.apply(&crate::v2::resources::tests::resources(
        r#"{"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
            "memory": {"limit": 104857600, "swap": 209715200},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "unified": {"memory.high": "94371840"}}"#,
    ))
    .unwrap();
    let r = m
        .read_resources(&[
            "memory.high".to_owned(),
            "memory.absent".to_owned(),
            "../escape".to_owned(),
        ])
        .unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.shares(), Some(crate::cpu_weight_to_shares(39)));
    assert_eq!(
        crate::v2::resources::cpu_shares_to_weight(cpu.shares().unwrap()),
        crate::v2::resources::cpu_shares_to_weight(1024)
    );
    assert_eq!((cpu.quota(), cpu.period()), (Some(50000), Some(100000)));
    assert_eq!(
        (cpu.cpus().as_deref(), cpu.mems().as_deref()),
        (Some("0-1"), Some("0"))
    );
    let mem = r.memory().unwrap();
    // memory.swap.max holds swap only; OCI's swap is memory+swap.
    assert_eq!(
        fs::read_to_string(dir.join("memory.swap.max")).unwrap(),
        "104857600"
    );
    assert_eq!(
        (mem.limit(), mem.swap()),
        (Some(104857600), Some(209715200))
    );
    let huge: Vec<(String, i64)> = r
        .hugepage_limits()
        .clone()
        .unwrap()
        .iter()
        .map(|l| (l.page_size().clone(), l.limit()))
        .collect();
    assert_eq!(
        huge,
        vec![("1GB".to_owned(), -1), ("2MB".to_owned(), 4194304)]
    );
    let unified = r.unified().clone().unwrap();
    assert_eq!(unified.len(), 1, "{unified:?}");
    assert_eq!(unified["memory.high"], "94371840");
}
