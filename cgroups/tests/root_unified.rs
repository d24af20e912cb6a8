//! Root tests of the v2 manager on this host's cgroup2 mount. On a hybrid host (cgroup2 at
//! /sys/fs/cgroup/unified without controllers) the core files still work: cgroup.procs,
//! cgroup.freeze/cgroup.events, cgroup.kill, cpu.stat, and BPF device filters attach to it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use berth_cgroups::setup::CgroupMounts;
use berth_cgroups::v2::attached_device_programs;
use berth_cgroups::{CgroupManager, FreezerState, V2Manager};
use common::{can_run, spawn_helper, unique_path, CgroupGuard};
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

/// A fresh cgroup2 directory (made with mkdir, so the host's root subtree_control is left
/// alone), or None with the reason printed.
fn v2_cgroup(test: &str) -> Option<CgroupGuard<V2Manager>> {
    if !can_run(test) {
        return None;
    }
    let mounts = CgroupMounts::from_proc().unwrap();
    let Some(unified) = mounts.unified else {
        println!("{test}: skipped: no cgroup2 mount");
        return None;
    };
    let cg = V2Manager::with_root(&unified.mount_point, &unique_path());
    std::fs::create_dir(cg.dir()).unwrap();
    Some(CgroupGuard { cg: Box::new(cg) })
}

#[test]
fn core_files_freeze_stats_kill() {
    let Some(g) = v2_cgroup("core_files_freeze_stats_kill") else {
        return;
    };
    let cg = &g.cg;
    let mut child = spawn_helper("burn");
    cg.add_task(child.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    child.go();
    std::thread::sleep(Duration::from_millis(400));
    let s = cg.stats().unwrap();
    assert!(s.cpu.usage_total_ns > 0, "{s:?}");
    // The kernel's own pressure files parse (they exist in every cgroup2 directory, whatever
    // controllers it has, when the kernel has PSI on).
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        for (what, psi) in [
            ("cpu", &s.cpu.psi),
            ("memory", &s.memory.psi),
            ("io", &s.io.psi),
        ] {
            assert!(psi.is_some(), "{what}.pressure: {s:?}");
        }
        assert_eq!(s.cpu.psi, s.pressure.cpu);
    }

    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

    cg.kill_all(Signal::SIGKILL).unwrap();
    child
        .wait_exit(Duration::from_secs(10))
        .expect("cgroup.kill killed the child");
    cg.remove().unwrap();
    assert!(!cg.dir().exists());
}

#[test]
fn bpf_device_filter_is_enforced() {
    let Some(g) = v2_cgroup("bpf_device_filter_is_enforced") else {
        return;
    };
    let cg = &g.cg;
    let rules = r#"{"devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 136, "access": "rw"}]}"#;
    let r: LinuxResources = serde_json::from_str(rules).unwrap();
    if let Err(e) = cg.apply(&r) {
        panic!(
            "attaching a BPF device filter to {} failed: {e}",
            cg.dir().display()
        );
    }
    assert_eq!(attached_device_programs(cg.dir()).unwrap(), 1);
    // An update replaces the filter rather than stacking a second one.
    cg.apply(&r).unwrap();
    assert_eq!(attached_device_programs(cg.dir()).unwrap(), 1);

    let mut child = spawn_helper("devices");
    cg.add_task(child.pid()).unwrap();
    child.go();
    let status = child
        .wait_exit(Duration::from_secs(20))
        .expect("the device helper exits");
    assert_eq!(
        status.code(),
        Some(0),
        "/dev/null must open and /dev/zero must fail with EPERM (3: null refused, 4: zero allowed)"
    );

    // A filter that allows everything lets /dev/zero through again.
    let all: LinuxResources =
        serde_json::from_str(r#"{"devices": [{"allow": true, "access": "rwm"}]}"#).unwrap();
    cg.apply(&all).unwrap();
    assert_eq!(attached_device_programs(cg.dir()).unwrap(), 1);
    let mut child = spawn_helper("devices");
    cg.add_task(child.pid()).unwrap();
    child.go();
    let status = child.wait_exit(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(4), "everything allowed");
    let dir: PathBuf = cg.dir().to_owned();
    drop(g);
    assert!(!dir.exists());
}
