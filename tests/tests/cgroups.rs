//! cgroups: cpu shares/quota/period, memory limit, pids limit read back from the host's cgroup
//! dirs and from inside; cgroupsPath honored; `update` on a running container; an OOM kill
//! visible in the exit code and in `events --stats` — compared with runc.

use std::path::{Path, PathBuf};

use berth_tests::compare::same;
use berth_tests::host::{cgroup_dir, read_trim};
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle, Value};

/// A cgroupsPath of this test alone.
fn unique_cgroups_path(rt: &Runtime, tag: &str) -> String {
    format!("/{}", rt.new_id(&format!("cg-{tag}")))
}

fn limits_bundle(cg_path: &str) -> Bundle {
    let mut b = Bundle::new();
    b.set("/linux/cgroupsPath", json!(cg_path));
    b.set(
        "/linux/resources",
        json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "memory": {"limit": 67108864},
            "pids": {"limit": 50},
        }),
    );
    b
}

/// What the host's cgroup files say for the container's init.
fn host_limits(pid: i32) -> (String, String, String, String, String) {
    let dir = |c: &str| -> PathBuf {
        cgroup_dir(pid, c).unwrap_or_else(|| panic!("no {c} cgroup for pid {pid}"))
    };
    if berth_tests::host::cgroup_v1() {
        (
            read_trim(&dir("cpu").join("cpu.shares")),
            read_trim(&dir("cpu").join("cpu.cfs_quota_us")),
            read_trim(&dir("cpu").join("cpu.cfs_period_us")),
            read_trim(&dir("memory").join("memory.limit_in_bytes")),
            read_trim(&dir("pids").join("pids.max")),
        )
    } else {
        let d = dir("");
        let max = read_trim(&d.join("cpu.max"));
        let (q, p) = max.split_once(' ').unwrap();
        (
            read_trim(&d.join("cpu.weight")),
            q.to_string(),
            p.to_string(),
            read_trim(&d.join("memory.max")),
            read_trim(&d.join("pids.max")),
        )
    }
}

/// Limits of the spec land in the host's cgroup dirs, at cgroupsPath; the container reads the
/// same through its /sys/fs/cgroup.
#[test]
fn limits_and_cgroups_path() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let cg = unique_cgroups_path(&rt, "limits");
        let mut b = limits_bundle(&cg);
        let id = rt.start_sleeper("cg-limits", &mut b);
        let pid = rt.pid(&id);
        for c in ["cpu", "memory", "pids"] {
            let d = cgroup_dir(pid, c).unwrap();
            assert!(
                d.ends_with(cg.trim_start_matches('/')),
                "{}: {c} cgroup {} is not at cgroupsPath {cg}",
                rt.name(),
                d.display()
            );
        }
        let host = host_limits(pid);
        let inside = rt
            .exec(
                &id,
                &[
                    "cat",
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "/sys/fs/cgroup/pids/pids.max",
                    "/sys/fs/cgroup/cpu/cpu.shares",
                ],
            )
            .ok()
            .out();
        seen.push((host, inside));
    }
    assert_eq!(
        seen[0].0,
        (
            "512".into(),
            "50000".into(),
            "100000".into(),
            "67108864".into(),
            "50".into()
        )
    );
    same(
        "cgroup limits (host files, inside view)",
        &seen[0],
        &seen[1],
    );
}

/// The container's cgroup is removed by delete.
#[test]
fn cgroup_removed_on_delete() {
    require_root!();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let cg = unique_cgroups_path(&rt, "rm");
        let mut b = limits_bundle(&cg);
        let id = rt.start_sleeper("cg-rm", &mut b);
        let dir = cgroup_dir(rt.pid(&id), "memory").unwrap();
        assert!(dir.is_dir());
        rt.cmd(&["delete", "--force", &id]).ok();
        berth_tests::wait::until(
            &format!("{}: {} removed", rt.name(), dir.display()),
            std::time::Duration::from_secs(10),
            || !dir.exists(),
        );
    }
}

/// update on a running container: memory and pids (flags), cpu (--resources file), visible on
/// the host and inside.
#[test]
fn update_running_container() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let cg = unique_cgroups_path(&rt, "update");
        let mut b = limits_bundle(&cg);
        let id = rt.start_sleeper("cg-update", &mut b);
        rt.cmd(&["update", "--memory", "33554432", "--pids-limit", "20", &id])
            .ok();
        let res = b.path().join("resources.json");
        std::fs::write(
            &res,
            json!({"cpu": {"shares": 256, "quota": 20000, "period": 100000}}).to_string(),
        )
        .unwrap();
        rt.cmd(&["update", "--resources", res.to_str().unwrap(), &id])
            .ok();
        let pid = rt.pid(&id);
        let inside = rt
            .exec(
                &id,
                &[
                    "cat",
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "/sys/fs/cgroup/pids/pids.max",
                ],
            )
            .ok()
            .out();
        seen.push((host_limits(pid), inside));
    }
    assert_eq!(
        seen[0].0,
        (
            "256".into(),
            "20000".into(),
            "100000".into(),
            "33554432".into(),
            "20".into()
        )
    );
    same("limits after update", &seen[0], &seen[1]);
}

/// The pids limit is enforced: forks beyond it fail.
#[test]
fn pids_limit_enforced() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/linux/resources/pids", json!({"limit": 5}));
    b.sh("for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>/dev/null; echo forked; kill $(jobs -p) 2>/dev/null; true");
    let (ob, or) = berth_tests::compare::run_both("pids", &b);
    let fail = |o: &berth_tests::Outcome| o.stderr.contains("fork") || o.stdout.contains("fork");
    assert!(
        fail(&ob) || ob.code != 0,
        "berth: forks beyond the limit succeeded: {ob:?}"
    );
    same(
        "pids limit enforced",
        fail(&ob) || ob.code != 0,
        fail(&or) || or.code != 0,
    );
}

fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// An OOM kill: memory limit 8 MiB (no swap), an exec'd `tail /dev/zero` is killed (137),
/// and `events --stats` counts the OOM kill.
#[test]
fn oom_kill_visible() {
    require_root!();
    let mut codes = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let cg = unique_cgroups_path(&rt, "oom");
        let mut b = Bundle::new();
        b.set("/linux/cgroupsPath", json!(cg));
        b.set(
            "/linux/resources/memory",
            json!({"limit": 8388608, "swap": 8388608}),
        );
        let id = rt.start_sleeper("oom", &mut b);
        let o = rt.exec(&id, &["tail", "/dev/zero"]);
        codes.push(o.code);
        let ev = rt.cmd(&["events", "--stats", &id]).ok();
        if rt.kind() == berth_tests::runtime::Kind::Berth {
            let v: Value = serde_json::from_str(ev.stdout.lines().last().unwrap_or(""))
                .unwrap_or_else(|e| panic!("events --stats not JSON ({e}): {ev:?}"));
            assert_eq!(v["type"], "stats", "{v}");
            let n = find_key(&v, "oom_kill_count")
                .or_else(|| find_key(&v, "oomKillCount"))
                .or_else(|| find_key(&v, "oom_kill"))
                .and_then(Value::as_u64);
            assert!(
                n.unwrap_or(0) >= 1,
                "no OOM kill counted in events --stats: {v}"
            );
            // The host's memory cgroup agrees.
            if berth_tests::host::cgroup_v1() {
                let d = cgroup_dir(rt.pid(&id), "memory").unwrap();
                let oom =
                    std::fs::read_to_string(Path::new(&d).join("memory.oom_control")).unwrap();
                assert!(!oom.contains("oom_kill 0"), "{oom}");
            }
        }
    }
    assert_eq!(codes[0], 137, "berth: exec of tail /dev/zero under 8 MiB");
    same("exit code of the OOM-killed process", codes[0], codes[1]);
}
