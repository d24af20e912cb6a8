use super::*;
use std::fs;

use crate::{CgroupManager, CgroupPath, V2Manager};

pub(crate) fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("valid linux.resources JSON")
}

fn writes(plan: &[FileWrite]) -> Vec<(&str, &str)> {
    plan.iter()
        .map(|w| (w.file.as_str(), w.value.as_str()))
        .collect()
}

const FULL: &str = r#"{
  "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0",
          "idle": 0, "burst": 1000},
  "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200},
  "pids": {"limit": 100},
  "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
  "blockIO": {"weight": 500,
              "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
              "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]},
  "unified": {"memory.high": "90000000", "cpu.uclamp.min": "10"}
}"#;

/// The files of a cgroup2 directory with every controller enabled (no BFQ).
const V2_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.freeze",
    "cgroup.events",
    "cgroup.kill",
    "cgroup.controllers",
    "cgroup.subtree_control",
    "cpu.idle",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.stat",
    "cpu.uclamp.min",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.max",
    "memory.low",
    "memory.high",
    "memory.swap.max",
    "memory.current",
    "memory.events",
    "memory.stat",
    "pids.max",
    "pids.current",
    "hugetlb.2MB.max",
    "hugetlb.2MB.rsvd.max",
    "hugetlb.1GB.max",
    "io.weight",
    "io.max",
    "io.stat",
];

#[test]
fn shares_to_weight_is_runcs_formula() {
    assert_eq!(cpu_shares_to_weight(0), 0);
    assert_eq!(cpu_shares_to_weight(2), 1);
    assert_eq!(cpu_shares_to_weight(1024), 39);
    assert_eq!(cpu_shares_to_weight(102), 4);
    assert_eq!(cpu_shares_to_weight(262144), 10000);
    assert_eq!(
        cpu_shares_to_weight(1),
        1,
        "below the v1 minimum clamps, no underflow"
    );
    assert_eq!(cpu_shares_to_weight(u64::MAX / 10000), 10000);
}

#[test]
fn blkio_weight_to_io_weight_is_runcs_formula() {
    assert_eq!(blkio_weight_to_io_weight(0), 0);
    assert_eq!(blkio_weight_to_io_weight(10), 1);
    assert_eq!(blkio_weight_to_io_weight(100), 910);
    assert_eq!(blkio_weight_to_io_weight(500), 4950);
    assert_eq!(blkio_weight_to_io_weight(1000), 10000);
    assert_eq!(blkio_weight_to_io_weight(5), 1);
}

#[test]
fn swap_is_converted_from_memory_plus_swap() {
    assert_eq!(swap_to_v2(0, -1).unwrap(), -1);
    assert_eq!(swap_to_v2(-1, 100).unwrap(), -1);
    assert_eq!(swap_to_v2(0, 100).unwrap(), 0);
    assert_eq!(swap_to_v2(300, 100).unwrap(), 200);
    assert_eq!(swap_to_v2(100, 100).unwrap(), 0);
    assert!(swap_to_v2(50, 100).is_err());
    assert!(swap_to_v2(100, 0).is_err());
    assert!(swap_to_v2(100, -1).is_err());
}

#[test]
fn full_plan_in_runcs_order() {
    let p = plan(&resources(FULL), |f| V2_FILES.contains(&f)).unwrap();
    assert_eq!(
        writes(&p),
        vec![
            ("cpu.idle", "0"),
            ("cpu.weight", "39"),
            ("cpu.max.burst", "1000"),
            ("cpu.max", "50000 100000"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("memory.swap.max", "104857600"),
            ("memory.max", "104857600"),
            ("memory.low", "52428800"),
            ("pids.max", "100"),
            ("hugetlb.2MB.max", "4194304"),
            ("hugetlb.2MB.rsvd.max", "4194304"),
            ("io.weight", "4950"),
            ("io.max", "8:0 rbps=1048576"),
            ("io.max", "8:16 wiops=100"),
            ("cpu.uclamp.min", "10"),
            ("memory.high", "90000000"),
        ]
    );
}

#[test]
fn unlimited_values() {
    let r = resources(
        r#"{"cpu": {"quota": -1, "period": 100000}, "memory": {"limit": -1},
            "pids": {"limit": -1}}"#,
    );
    let p = plan(&r, |f| V2_FILES.contains(&f)).unwrap();
    assert_eq!(
        writes(&p),
        vec![
            ("cpu.max", "max 100000"),
            ("memory.swap.max", "max"),
            ("memory.max", "max"),
            ("pids.max", "max"),
        ]
    );
    let r = resources(r#"{"cpu": {"quota": 20000}, "pids": {"limit": 0}}"#);
    let p = plan(&r, |f| V2_FILES.contains(&f)).unwrap();
    assert_eq!(writes(&p), vec![("cpu.max", "20000"), ("pids.max", "max")]);
}

#[test]
fn swap_equal_to_limit_disables_swap_and_missing_swap_file_is_tolerated() {
    let r = resources(r#"{"memory": {"limit": 1000, "swap": 1000}}"#);
    let plan_with = plan(&r, |f| V2_FILES.contains(&f)).unwrap();
    assert_eq!(
        writes(&plan_with),
        vec![("memory.swap.max", "0"), ("memory.max", "1000")]
    );
    // No swap accounting: disabling swap is what the host does anyway.
    let plan_without = plan(&r, |f| f != "memory.swap.max" && V2_FILES.contains(&f)).unwrap();
    assert_eq!(writes(&plan_without), vec![("memory.max", "1000")]);
    // But a real swap limit without the file is an error.
    let r = resources(r#"{"memory": {"limit": 1000, "swap": 3000}}"#);
    let err = plan(&r, |f| f != "memory.swap.max" && V2_FILES.contains(&f)).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::UnsupportedResource {
                controller: "memory",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bfq_takes_raw_weights_and_device_weights() {
    let r = resources(
        r#"{"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 50}]}}"#,
    );
    let with_bfq = |f: &str| f == "io.bfq.weight";
    assert_eq!(
        writes(&plan(&r, with_bfq).unwrap()),
        vec![("io.bfq.weight", "300"), ("io.bfq.weight", "8:0 50")]
    );
    // Without BFQ the device weight is dropped (runc does the same) and the weight converted.
    assert_eq!(
        writes(&plan(&r, |f| f == "io.weight").unwrap()),
        vec![("io.weight", "2930")]
    );
}

#[test]
fn missing_controller_files_name_the_controller() {
    let r = resources(r#"{"pids": {"limit": 10}}"#);
    let err = plan(&r, |_| false).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::UnsupportedResource {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("pids.max"), "{err}");
    let r = resources(r#"{"hugepageLimits": [{"pageSize": "64KB", "limit": 1}]}"#);
    let err = plan(&r, |f| V2_FILES.contains(&f)).unwrap_err();
    assert!(err.to_string().contains("hugetlb.64KB.max"), "{err}");
    let r = resources(r#"{"cpu": {"realtimeRuntime": 1000}}"#);
    assert!(matches!(
        plan(&r, |_| true).unwrap_err(),
        CgroupError::UnsupportedResource {
            controller: "cpu",
            ..
        }
    ));
    let r = resources(r#"{"network": {"classID": 5}}"#);
    assert!(plan(&r, |_| true).is_err());
    // Class id 0 asks for nothing.
    let r = resources(r#"{"network": {"classID": 0}}"#);
    assert!(plan(&r, |_| true).is_ok());
    let r = resources(r#"{"unified": {"../escape": "1"}}"#);
    assert!(matches!(
        plan(&r, |_| true).unwrap_err(),
        CgroupError::InvalidResource { .. }
    ));
    let r = resources(r#"{"unified": {"memory.oom.group": "1"}}"#);
    assert!(plan(&r, |f| V2_FILES.contains(&f)).is_err());
}

#[test]
fn rdma_lines_are_sorted_and_skip_empty() {
    let r = resources(
        r#"{"rdma": {"mlx5_1": {"hcaHandles": 3}, "mlx5_0": {"hcaHandles": 2, "hcaObjects": 100},
                     "none": {}}}"#,
    );
    assert_eq!(
        rdma_lines(r.rdma().as_ref().unwrap()),
        vec![
            "mlx5_0 hca_handles=2 hca_objects=100",
            "mlx5_1 hca_handles=3"
        ]
    );
}

/// Lays out `root/<rel>` like a cgroup2 directory.
pub(crate) fn layout(root: &Path, rel: &str) -> std::path::PathBuf {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).unwrap();
    for f in V2_FILES {
        fs::write(dir.join(f), "").unwrap();
    }
    dir
}

#[test]
fn apply_writes_every_file_in_a_cgroup2_like_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "berth/c1");
    let path = CgroupPath::from_spec(Some("/berth/c1"), "c1", false).unwrap();
    let m = V2Manager::with_root(tmp.path(), &path);
    assert_eq!(m.paths(), vec![dir.clone()]);
    m.apply(&resources(FULL)).unwrap();
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
    for (file, want) in [
        ("cpu.idle", "0"),
        ("cpu.weight", "39"),
        ("cpu.max.burst", "1000"),
        ("cpu.max", "50000 100000"),
        ("cpuset.cpus", "0-1"),
        ("cpuset.mems", "0"),
        ("memory.swap.max", "104857600"),
        ("memory.max", "104857600"),
        ("memory.low", "52428800"),
        ("pids.max", "100"),
        ("hugetlb.2MB.max", "4194304"),
        ("hugetlb.2MB.rsvd.max", "4194304"),
        ("hugetlb.1GB.max", ""),
        ("io.weight", "4950"),
        // Each io.max line is its own write; a plain file keeps the last one.
        ("io.max", "8:16 wiops=100"),
        ("cpu.uclamp.min", "10"),
        ("memory.high", "90000000"),
        ("cgroup.procs", ""),
    ] {
        assert_eq!(read(file), want, "{file}");
    }
}

#[test]
fn enable_controllers_writes_subtree_control_down_to_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for rel in ["", "a", "a/b"] {
        let d = layout(root, rel);
        fs::write(d.join("cgroup.controllers"), "cpu io memory pids").unwrap();
    }
    fs::write(root.join("a/cgroup.subtree_control"), "cpu").unwrap();
    enable_controllers(root, &root.join("a/b"), &["cpu", "memory", "hugetlb"]).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory"
    );
    assert_eq!(
        fs::read_to_string(root.join("a/cgroup.subtree_control")).unwrap(),
        "+memory"
    );
    assert_eq!(
        fs::read_to_string(root.join("a/b/cgroup.subtree_control")).unwrap(),
        ""
    );
}

#[test]
fn page_sizes_skip_rsvd_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = layout(tmp.path(), "x");
    assert_eq!(page_sizes(&dir, ".max").unwrap(), vec!["1GB", "2MB"]);
}
