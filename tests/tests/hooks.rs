//! Hooks: all six kinds write a marker with their state JSON (stdin) and their mount
//! namespace; the order, the state each one sees and where createContainer runs are checked
//! and compared with runc.

use std::path::Path;
use std::time::Duration;

use berth_tests::compare::same;
use berth_tests::host::ns_link;
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle, Value};

const KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A hook that records `kind`: its stdin to <dir>/<kind>.json, its mount namespace to
/// <dir>/<kind>.mnt, and a line in <dir>/order. <dir> is bind-mounted at the same path in the
/// container, so the hooks that run inside see it too.
fn hook(kind: &str, dir: &Path) -> Value {
    let d = dir.display();
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "cat > {d}/{kind}.json; readlink /proc/self/ns/mnt > {d}/{kind}.mnt; echo {kind} >> {d}/order"
        )],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "timeout": 20,
    })
}

struct Observed {
    order: Vec<String>,
    statuses: Vec<String>,
    ids_match: bool,
    pid_positive: Vec<bool>,
    /// createRuntime in the host's mount namespace, createContainer in the container's.
    create_runtime_host_mnt: bool,
    create_container_container_mnt: bool,
    start_container_container_mnt: bool,
}

fn observe(rt: &Runtime) -> Observed {
    let marker = tempfile::Builder::new()
        .prefix("berth-hooks-")
        .tempdir()
        .unwrap();
    let dir = marker.path();
    let mut b = Bundle::new();
    b.mount(json!({"destination": dir, "type": "bind", "source": dir, "options": ["rbind", "rw"]}));
    for k in KINDS {
        b.push(&format!("/hooks/{k}"), hook(k, dir));
    }
    b.args(&["sleep", "300"]);
    let id = rt.new_id("hooks");
    rt.create(&id, &b, &[]).ok();
    let container_mnt = ns_link(&rt.pid(&id).to_string(), "mnt");
    let after_create = std::fs::read_to_string(dir.join("order")).unwrap_or_default();
    assert!(
        !after_create.contains("startContainer"),
        "{}: startContainer ran at create",
        rt.name()
    );
    rt.start(&id).ok();
    berth_tests::wait::until("poststart hook", Duration::from_secs(20), || {
        dir.join("poststart.json").exists()
    });
    rt.kill(&id, "KILL").ok();
    rt.wait_stopped(&id);
    rt.delete(&id).ok();
    let order: Vec<String> = std::fs::read_to_string(dir.join("order"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut statuses = Vec::new();
    let mut ids_match = true;
    let mut pid_positive = Vec::new();
    for k in KINDS {
        let text = std::fs::read_to_string(dir.join(format!("{k}.json"))).unwrap_or_else(|e| {
            panic!(
                "{}: hook {k} wrote no state ({e}); order {order:?}",
                rt.name()
            )
        });
        let s: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: hook {k} stdin not JSON ({e}): {text}", rt.name()));
        statuses.push(format!("{k}:{}", s["status"].as_str().unwrap_or("?")));
        ids_match &= s["id"] == json!(id) && s["bundle"] == json!(b.path());
        pid_positive.push(s["pid"].as_i64().unwrap_or(0) > 0);
    }
    let mnt = |k: &str| {
        std::fs::read_to_string(dir.join(format!("{k}.mnt")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    Observed {
        order,
        statuses,
        ids_match,
        pid_positive,
        create_runtime_host_mnt: mnt("createRuntime") == ns_link("self", "mnt"),
        create_container_container_mnt: mnt("createContainer") == container_mnt,
        start_container_container_mnt: mnt("startContainer") == container_mnt,
    }
}

#[test]
fn all_six_hooks() {
    require_root!();
    let b = observe(&Runtime::berth());
    let r = observe(&Runtime::runc());
    // The spec's order. runc 1.1.5 runs poststart as soon as init took the start byte, so
    // its poststart may come before startContainer: only the set of hooks is compared.
    assert_eq!(b.order, KINDS, "berth hook order");
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    same("hooks that ran", sorted(&b.order), sorted(&r.order));
    // runc 1.1.5 hands poststart the state it loaded before start ("created"); berth the
    // state after start ("running"). runc hands prestart "creating"; berth "created", as crun
    // does and runtime-tools' hooks_stdin requires. The others are compared.
    assert_eq!(b.statuses[0], "prestart:created");
    assert_eq!(b.statuses[4], "poststart:running");
    let but_pre_and_poststart = |v: &[String]| {
        v.iter()
            .filter(|s| !s.starts_with("poststart:") && !s.starts_with("prestart:"))
            .cloned()
            .collect::<Vec<_>>()
    };
    same(
        "status in each hook's state",
        but_pre_and_poststart(&b.statuses),
        but_pre_and_poststart(&r.statuses),
    );
    assert!(
        b.ids_match,
        "berth: a hook's state has the wrong id or bundle"
    );
    same(
        "pid > 0 in each hook's state",
        &b.pid_positive,
        &r.pid_positive,
    );
    assert!(
        b.create_runtime_host_mnt,
        "berth: createRuntime not in the host's mount namespace"
    );
    assert!(
        b.create_container_container_mnt,
        "berth: createContainer not in the container's mount namespace"
    );
    assert!(
        b.start_container_container_mnt,
        "berth: startContainer not in the container"
    );
    same(
        "namespaces of the hooks",
        (
            b.create_runtime_host_mnt,
            b.create_container_container_mnt,
            b.start_container_container_mnt,
        ),
        (
            r.create_runtime_host_mnt,
            r.create_container_container_mnt,
            r.start_container_container_mnt,
        ),
    );
}

/// A failing prestart hook fails create, and leaves no container behind.
#[test]
fn failing_prestart_hook_fails_create() {
    require_root!();
    let mut b = Bundle::new();
    b.push(
        "/hooks/prestart",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}),
    );
    let mut res = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("hookfail");
        let o = rt.create(&id, &b, &[]);
        res.push((o.success(), rt.try_state(&id).is_some()));
    }
    assert_eq!(res[0], (false, false), "berth");
    same("failing prestart", res[0], res[1]);
}

/// The poststart hooks get the state of the container start made: "running", with the init's
/// pid, also when the user process (`true`) is already gone by the time they run (berth read
/// the status back and handed them "stopped" and pid 0 now and then; runtime-tools'
/// hooks_stdin). Five containers, as the race went either way.
#[test]
fn poststart_state_is_running_even_if_the_process_already_exited() {
    require_root!();
    let rt = Runtime::berth();
    for _ in 0..5 {
        let marker = tempfile::Builder::new()
            .prefix("berth-hooks-")
            .tempdir()
            .unwrap();
        let dir = marker.path();
        let mut b = Bundle::new();
        b.push("/hooks/poststart", hook("poststart", dir));
        b.args(&["true"]);
        let id = rt.new_id("poststart-state");
        rt.create(&id, &b, &[]).ok();
        let pid = rt.pid(&id);
        rt.start(&id).ok();
        let text = std::fs::read_to_string(dir.join("poststart.json")).unwrap();
        let s: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(s["status"], json!("running"), "{text}");
        assert_eq!(s["pid"], json!(pid), "{text}");
        rt.wait_stopped(&id);
        rt.delete(&id).ok();
    }
}
