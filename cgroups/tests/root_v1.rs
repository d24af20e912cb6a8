//! Root tests on this host's real cgroup v1 (hybrid) hierarchy: create, join, limits read back,
//! memory+swap ordering, freeze/thaw, stats, OOM kill, kill_all, remove.

mod common;

use std::path::Path;
use std::time::Duration;

use berth_cgroups::{detect_setup, CgroupManager, CgroupSetup, FreezerState, V1Manager};
use common::{can_run, read, spawn_helper, spawn_sleep, unique_path, CgroupGuard};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("valid linux.resources JSON")
}

/// A fresh v1 cgroup, or None (with the reason printed) when the host has no v1 controllers.
fn v1_cgroup(test: &str) -> Option<CgroupGuard<V1Manager>> {
    if !can_run(test) {
        return None;
    }
    match detect_setup().unwrap() {
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {}
        CgroupSetup::Unified => {
            println!("{test}: skipped: host has no cgroup v1 controllers");
            return None;
        }
    }
    let cg = V1Manager::new(&unique_path()).unwrap();
    let guard = CgroupGuard { cg: Box::new(cg) };
    guard.cg.create().unwrap();
    Some(guard)
}

#[test]
fn lifecycle_limits_freeze_stats_kill_remove() {
    let Some(g) = v1_cgroup("lifecycle_limits_freeze_stats_kill_remove") else {
        return;
    };
    let cg = &g.cg;
    for p in cg.paths() {
        assert!(p.is_dir(), "{} created", p.display());
    }
    let name = cg.cgroup_path().to_string();

    let mut child = spawn_helper("burn");
    cg.add_task(child.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    assert!(common::proc_in_cgroup(child.pid(), "memory", &name));
    assert!(
        common::proc_in_cgroup(child.pid(), "", &name),
        "joined cgroup2 too"
    );

    let blkio = common::block_device()
        .map(|(ma, mi)| {
            format!(r#","blockIO": {{"throttleReadBpsDevice": [{{"major": {ma}, "minor": {mi}, "rate": 1048576}}]}}"#)
        })
        .unwrap_or_default();
    cg.apply(&resources(&format!(
        r#"{{
        "cpu": {{"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}},
        "memory": {{"limit": 268435456, "reservation": 134217728, "swap": 536870912, "swappiness": 20}},
        "pids": {{"limit": 64}},
        "devices": [{{"allow": false, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 136, "access": "rw"}}]
        {blkio}
    }}"#
    )))
    .unwrap();
    let dir = |c: &str| cg.controller_dir(c).unwrap().to_owned();
    assert_eq!(read(&dir("cpu"), "cpu.shares"), "512");
    assert_eq!(read(&dir("cpu"), "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&dir("cpu"), "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&dir("cpuset"), "cpuset.cpus"), "0");
    assert_eq!(read(&dir("memory"), "memory.limit_in_bytes"), "268435456");
    assert_eq!(
        read(&dir("memory"), "memory.soft_limit_in_bytes"),
        "134217728"
    );
    assert_eq!(
        read(&dir("memory"), "memory.memsw.limit_in_bytes"),
        "536870912"
    );
    assert_eq!(read(&dir("memory"), "memory.swappiness"), "20");
    assert_eq!(read(&dir("pids"), "pids.max"), "64");
    assert_eq!(
        read(&dir("devices"), "devices.list"),
        "c 1:3 rwm\nc 1:5 rwm\nc 136:* rw"
    );
    if let Some((ma, mi)) = common::block_device() {
        assert_eq!(
            read(&dir("blkio"), "blkio.throttle.read_bps_device"),
            format!("{ma}:{mi} 1048576")
        );
    }

    // The kernel refuses limit > memsw: raising needs memsw first, lowering the limit first.
    cg.apply(&resources(
        r#"{"memory": {"limit": 1073741824, "swap": 2147483648}}"#,
    ))
    .unwrap();
    assert_eq!(read(&dir("memory"), "memory.limit_in_bytes"), "1073741824");
    cg.apply(&resources(
        r#"{"memory": {"limit": 67108864, "swap": 100663296}}"#,
    ))
    .unwrap();
    assert_eq!(read(&dir("memory"), "memory.limit_in_bytes"), "67108864");
    assert_eq!(
        read(&dir("memory"), "memory.memsw.limit_in_bytes"),
        "100663296"
    );
    // An update to unlimited.
    cg.apply(&resources(
        r#"{"memory": {"limit": -1}, "pids": {"limit": -1}}"#,
    ))
    .unwrap();
    assert_eq!(read(&dir("pids"), "pids.max"), "max");

    child.go();
    std::thread::sleep(Duration::from_millis(500));
    let s = cg.stats().unwrap();
    assert!(s.cpu.usage_total_ns > 0, "{s:?}");
    assert!(s.cpu.usage_user_ns + s.cpu.usage_system_ns > 0, "{s:?}");
    assert!(s.memory.usage > 0, "{s:?}");
    assert_eq!(s.memory.limit, None);
    assert!(s.pids.current >= 1, "{s:?}");
    assert_eq!(s.pids.limit, None);
    assert_eq!(s.memory.oom_kill_count, 0);
    // No pressure stall information in the usage types on v1 (not zero).
    assert_eq!(
        (&s.cpu.psi, &s.memory.psi, &s.io.psi),
        (&None, &None, &None)
    );

    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

    cg.kill_all(Signal::SIGKILL).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(10))
        .expect("child killed");
    assert!(!status.success());
    assert!(cg.pids().unwrap().is_empty());
    cg.remove().unwrap();
    for p in cg.paths() {
        assert!(!p.exists(), "{} removed", p.display());
    }
    // Removing again is fine.
    cg.remove().unwrap();
}

#[test]
fn oom_kill_is_counted() {
    let Some(g) = v1_cgroup("oom_kill_is_counted") else {
        return;
    };
    let cg = &g.cg;
    cg.apply(&resources(
        r#"{"memory": {"limit": 8388608, "swap": 8388608}}"#,
    ))
    .unwrap();
    let mut child = spawn_helper("alloc:64");
    cg.add_task(child.pid()).unwrap();
    child.go();
    let status = child
        .wait_exit(Duration::from_secs(30))
        .expect("the allocating child ends");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "OOM-killed: {status:?}"
    );
    assert!(cg.oom_kill_count().unwrap() >= 1);
    assert!(cg.stats().unwrap().memory.oom_kill_count >= 1);
}

#[test]
fn kill_all_signals_every_process() {
    let Some(g) = v1_cgroup("kill_all_signals_every_process") else {
        return;
    };
    let cg = &g.cg;
    let mut a = spawn_sleep();
    let mut b = spawn_sleep();
    cg.add_task(a.pid()).unwrap();
    cg.add_task(b.pid()).unwrap();
    let mut pids = cg.pids().unwrap();
    pids.sort();
    let mut want = vec![a.pid(), b.pid()];
    want.sort();
    assert_eq!(pids, want);
    cg.kill_all(Signal::SIGTERM).unwrap();
    use std::os::unix::process::ExitStatusExt;
    for c in [&mut a, &mut b] {
        let status = c
            .wait_exit(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert!(cg.pids().unwrap().is_empty());
}

#[test]
fn hugetlb_on_the_host_hierarchy() {
    let Some(g) = v1_cgroup("hugetlb_on_the_host_hierarchy") else {
        return;
    };
    let cg = &g.cg;
    let limits = r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}"#;
    if let Some(dir) = cg.controller_dir("hugetlb") {
        cg.apply(&resources(limits)).unwrap();
        assert_eq!(read(dir, "hugetlb.2MB.limit_in_bytes"), "4194304");
        return;
    }
    let Some(udir) = cg.unified_dir().map(Path::to_owned) else {
        println!("hugetlb_on_the_host_hierarchy: skipped: no hugetlb on v1 and no cgroup2");
        return;
    };
    let root = udir.parent().unwrap().to_owned();
    let controllers = read(&root, "cgroup.controllers");
    if !controllers.split_whitespace().any(|c| c == "hugetlb") {
        println!("hugetlb_on_the_host_hierarchy: skipped: hugetlb is on neither hierarchy");
        return;
    }
    let was_enabled = read(&root, "cgroup.subtree_control")
        .split_whitespace()
        .any(|c| c == "hugetlb");
    let result = cg.apply(&resources(limits));
    let value = std::fs::read_to_string(udir.join("hugetlb.2MB.max"));
    // Leave the host's root cgroup as we found it.
    drop(g);
    if !was_enabled {
        let _ = std::fs::write(root.join("cgroup.subtree_control"), "-hugetlb");
    }
    result.unwrap();
    assert_eq!(value.unwrap().trim(), "4194304");
}

#[test]
fn manager_picks_the_hosts_layout() {
    if !can_run("manager_picks_the_hosts_layout") {
        return;
    }
    let setup = detect_setup().unwrap();
    let path = unique_path();
    let cg = berth_cgroups::manager(&path).unwrap();
    let guard = CgroupGuard { cg };
    let paths = guard.cg.paths();
    match setup {
        // One directory per v1 hierarchy, plus the cgroup2 one on hybrid hosts.
        CgroupSetup::Hybrid => {
            assert!(paths.len() > 2, "{paths:?}");
            assert!(paths.iter().any(|p| p.starts_with("/sys/fs/cgroup/memory")));
            assert!(paths
                .iter()
                .any(|p| p.starts_with("/sys/fs/cgroup/unified")));
        }
        CgroupSetup::Legacy => assert!(paths.len() > 1, "{paths:?}"),
        CgroupSetup::Unified => assert_eq!(paths.len(), 1),
    }
    guard.cg.create().unwrap();
    let mut child = spawn_sleep();
    guard.cg.add_task(child.pid()).unwrap();
    assert_eq!(guard.cg.pids().unwrap(), vec![child.pid()]);
    guard.cg.kill_all(Signal::SIGKILL).unwrap();
    child.wait_exit(Duration::from_secs(10)).expect("killed");
    guard.cg.remove().unwrap();
    assert!(paths.iter().all(|p| !p.exists()));
}
