//! Lifecycle: create/start/state/kill/delete, status transitions, run (foreground exit code,
//! --detach), the create/start split, ps, pause/resume — under berth-runtime and runc.

use std::time::Duration;

use berth_tests::compare::{run_both_same, same};
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle, Value};

/// The state fields both runtimes must report alike (pid only as "> 0").
fn state_fields(s: &Value, bundle: &Bundle) -> (String, String, bool, String) {
    let id = s["id"].as_str().unwrap_or("").to_string();
    assert!(!id.is_empty(), "state has no id: {s}");
    assert_eq!(
        s["bundle"].as_str().map(std::path::PathBuf::from),
        Some(bundle.path().to_path_buf()),
        "state.bundle: {s}"
    );
    (
        s["ociVersion"].as_str().unwrap_or("").to_string(),
        s["status"].as_str().unwrap_or("").to_string(),
        s["pid"].as_i64().unwrap_or(0) > 0,
        s["bundle"].as_str().unwrap_or("").to_string(),
    )
}

/// create → created → start → running → kill → stopped → delete; each step under both runtimes.
#[test]
fn create_start_kill_delete_transitions() {
    require_root!();
    let mut bundle = Bundle::new();
    bundle.args(&["sleep", "300"]);
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("life");
        let mut steps: Vec<String> = Vec::new();
        rt.create(&id, &bundle, &[]).ok();
        let s = rt.state(&id);
        assert_eq!(s["id"], json!(id), "{}: {s}", rt.name());
        let (oci, status, pid_ok, _) = state_fields(&s, &bundle);
        assert!(oci.starts_with("1."), "{}: ociVersion {oci}", rt.name());
        steps.push(format!("{status} pid>0={pid_ok}"));
        // runc deletes a created container without --force (it kills the waiting init).
        let other = rt.new_id("life-created");
        rt.create(&other, &bundle, &[]).ok();
        let d = rt.delete(&other);
        steps.push(format!("delete created ok={}", d.success()));
        steps.push(format!("deleted gone={}", rt.try_state(&other).is_none()));
        rt.start(&id).ok();
        rt.wait_status(&id, "running", Duration::from_secs(10));
        steps.push(format!("{} pid>0={}", rt.status(&id), rt.pid(&id) > 0));
        // Starting twice fails.
        steps.push(format!("start again ok={}", rt.start(&id).success()));
        // Running: delete without --force fails and the container keeps running.
        let d = rt.delete(&id);
        steps.push(format!("delete running ok={}", d.success()));
        steps.push(rt.status(&id));
        // A signal by number: 0 just checks.
        steps.push(format!("kill 0 ok={}", rt.kill(&id, "0").success()));
        rt.kill(&id, "KILL").ok();
        rt.wait_stopped(&id);
        steps.push(rt.status(&id));
        // Killing a stopped container fails, saying "container not running" as runc does:
        // containerd's shim looks for those words to take the kill as done.
        let k = rt.kill(&id, "KILL");
        steps.push(format!(
            "kill stopped ok={} says 'container not running'={}",
            k.success(),
            k.stderr.contains("container not running")
        ));
        rt.delete(&id).ok();
        steps.push(format!(
            "state after delete ok={}",
            rt.try_state(&id).is_some()
        ));
        seen.push(steps);
    }
    let runc = seen.pop().unwrap();
    let berth = seen.pop().unwrap();
    same("lifecycle steps", berth, runc);
}

/// kill by name (TERM, SIGTERM), by number (15, 9): the init gets the signal.
#[test]
fn kill_signal_names_and_numbers() {
    require_root!();
    let mut bundle = Bundle::new();
    // sh as pid 1 ignores TERM unless it traps it: the trap prints the signal and exits 3.
    bundle.sh("trap 'echo got-TERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done");
    for rt in [Runtime::berth(), Runtime::runc()] {
        for sig in ["TERM", "SIGTERM", "15"] {
            let id = rt.new_id("kill");
            rt.create(&id, &bundle, &[]).ok();
            rt.start(&id).ok();
            berth_tests::wait::until("ready", Duration::from_secs(10), || {
                rt.output(&id).0.contains("ready")
            });
            rt.kill(&id, sig).ok();
            rt.wait_stopped(&id);
            assert!(
                rt.output(&id).0.contains("got-TERM"),
                "{} kill {sig}: {:?}",
                rt.name(),
                rt.output(&id)
            );
            rt.delete(&id).ok();
        }
        let id = rt.new_id("kill9");
        rt.create(&id, &bundle, &[]).ok();
        rt.start(&id).ok();
        rt.kill(&id, "9").ok();
        rt.wait_stopped(&id);
        assert!(!rt.output(&id).0.contains("got-TERM"));
        // Unknown signals are refused.
        assert!(!rt.kill(&id, "SIGNOPE").success(), "{}", rt.name());
    }
}

/// kill --all reaches every process of the container (a child that traps TERM too).
#[test]
fn kill_all() {
    require_root!();
    let mut bundle = Bundle::new();
    bundle.sh("sleep 300 & sleep 300 & echo started; wait");
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("killall");
        rt.create(&id, &bundle, &[]).ok();
        rt.start(&id).ok();
        berth_tests::wait::until("started", Duration::from_secs(10), || {
            rt.output(&id).0.contains("started")
        });
        let ps = rt.cmd(&["ps", "--format", "json", &id]).ok();
        let pids: Vec<i64> = serde_json::from_str(&ps.stdout).unwrap();
        assert_eq!(pids.len(), 3, "{}: ps {pids:?}", rt.name());
        rt.cmd(&["kill", "--all", &id, "KILL"]).ok();
        rt.wait_stopped(&id);
        for p in pids {
            berth_tests::wait::until(
                &format!("{}: pid {p} gone after kill --all", rt.name()),
                Duration::from_secs(10),
                || {
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| s.contains(") Z "))
                        .unwrap_or(true)
                },
            );
        }
    }
}

/// The OCI state of a running container: same fields under both runtimes.
#[test]
fn state_json_fields() {
    require_root!();
    let mut b1 = Bundle::new();
    let mut b2 = Bundle::new();
    let berth = Runtime::berth();
    let runc = Runtime::runc();
    let ib = berth.start_sleeper("state", &mut b1);
    let ir = runc.start_sleeper("state", &mut b2);
    let sb = berth.state(&ib);
    let sr = runc.state(&ir);
    same(
        "state (ociVersion, status, pid>0)",
        {
            let f = state_fields(&sb, &b1);
            (f.0, f.1, f.2)
        },
        {
            let f = state_fields(&sr, &b2);
            (f.0, f.1, f.2)
        },
    );
    assert!(
        sb["created"].is_string(),
        "berth state has no created: {sb}"
    );
    // list shows it.
    let l = berth.cmd(&["list", "--format", "json"]).ok();
    let list: Value = serde_json::from_str(&l.stdout).unwrap();
    assert!(
        list.as_array()
            .is_some_and(|a| a.iter().any(|c| c["id"] == json!(ib))),
        "list: {list}"
    );
    // state of an unknown container fails under both.
    same(
        "state of an unknown container fails",
        berth.cmd(&["state", "nope-unknown"]).success(),
        runc.cmd(&["state", "nope-unknown"]).success(),
    );
}

/// delete --force removes a running container (and its processes).
#[test]
fn delete_force_running() {
    require_root!();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        let id = rt.start_sleeper("delforce", &mut b);
        let pid = rt.pid(&id);
        assert!(
            !rt.delete(&id).success(),
            "{}: delete of running",
            rt.name()
        );
        rt.cmd(&["delete", "--force", &id]).ok();
        assert!(rt.try_state(&id).is_none(), "{}: still there", rt.name());
        berth_tests::wait::until("init gone", Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        });
    }
}

/// run in the foreground returns the container's exit code and output.
#[test]
fn run_foreground_exit_code() {
    require_root!();
    for code in [0, 1, 7, 255] {
        let mut b = Bundle::new();
        b.sh(&format!("echo out-{code}; echo err >&2; exit {code}"));
        let o = run_both_same("runfg", &b);
        assert_eq!(o.code, code, "{o:?}");
        assert_eq!(o.out(), format!("out-{code}"));
        assert!(o.stderr.contains("err"), "{o:?}");
    }
    // Killed by a signal: 128+n (outside a pid namespace, where sh is not a pid 1 that
    // ignores SIGKILL from inside).
    let mut b = Bundle::new();
    b.remove_namespace("pid");
    b.sh("kill -KILL $$");
    assert_eq!(run_both_same("runsig", &b).code, 137);
}

/// run --detach returns at once with the container running; the output arrives later.
#[test]
fn run_detach() {
    require_root!();
    let mut b = Bundle::new();
    b.sh("echo hello-detached; sleep 300");
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("detach");
        rt.run_detached(&id, &b, &[]).ok();
        assert_eq!(rt.status(&id), "running", "{}", rt.name());
        berth_tests::wait::until("output", Duration::from_secs(10), || {
            rt.output(&id).0.contains("hello-detached")
        });
        rt.kill(&id, "KILL").ok();
        rt.wait_stopped(&id);
        rt.delete(&id).ok();
    }
}

/// create sets everything up but the process has not run until start.
#[test]
fn create_start_split() {
    require_root!();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let b = {
            let mut b = Bundle::new();
            b.readonly(false);
            b.sh("echo ran > /ran; echo ran-stdout");
            b
        };
        let id = rt.new_id("split");
        rt.create(&id, &b, &[]).ok();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rt.status(&id), "created");
        assert!(
            !b.rootfs().join("ran").exists(),
            "{}: process ran before start",
            rt.name()
        );
        assert_eq!(rt.output(&id).0, "", "{}", rt.name());
        // The init exists and waits (its cmdline is the runtime's, not sh).
        let pid = rt.pid(&id);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        rt.start(&id).ok();
        rt.wait_stopped(&id);
        assert!(b.rootfs().join("ran").exists(), "{}", rt.name());
        assert_eq!(rt.output(&id).0.trim(), "ran-stdout");
        rt.delete(&id).ok();
    }
}

/// ps --format json lists the init and its children (host PIDs).
#[test]
fn ps_json() {
    require_root!();
    let mut counts = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.sh("sleep 300 & echo started; wait");
        let id = rt.new_id("ps");
        rt.create(&id, &b, &[]).ok();
        rt.start(&id).ok();
        berth_tests::wait::until("started", Duration::from_secs(10), || {
            rt.output(&id).0.contains("started")
        });
        let ps = rt.cmd(&["ps", "--format", "json", &id]).ok();
        let pids: Vec<i64> = serde_json::from_str(ps.stdout.trim())
            .unwrap_or_else(|e| panic!("{}: ps json {e}: {}", rt.name(), ps.stdout));
        assert!(pids.contains(&(rt.pid(&id) as i64)), "{pids:?}");
        counts.push(pids.len());
        // Table form has a header with PID.
        let t = rt.cmd(&["ps", &id]).ok();
        assert!(
            t.stdout.lines().next().unwrap_or("").contains("PID"),
            "{t:?}"
        );
    }
    same("ps process count", counts[0], counts[1]);
}

/// pause freezes (state "paused"), resume thaws; a frozen counter does not advance.
#[test]
fn pause_resume() {
    require_root!();
    let mut statuses = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.readonly(false);
        b.sh("i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.05; done");
        let id = rt.new_id("pause");
        rt.create(&id, &b, &[]).ok();
        rt.start(&id).ok();
        let count = || std::fs::read_to_string(b.rootfs().join("count")).unwrap_or_default();
        berth_tests::wait::until("counter", Duration::from_secs(10), || !count().is_empty());
        rt.cmd(&["pause", &id]).ok();
        let mut st = vec![rt.status(&id)];
        let c1 = count();
        std::thread::sleep(Duration::from_millis(400));
        let c2 = count();
        assert_eq!(c1, c2, "{}: counter moved while paused", rt.name());
        // exec into a paused container fails; kill works after resume.
        rt.cmd(&["resume", &id]).ok();
        st.push(rt.status(&id));
        berth_tests::wait::until("counter moves again", Duration::from_secs(10), || {
            count() != c2
        });
        // Resuming a running container fails.
        st.push(format!(
            "resume running ok={}",
            rt.cmd(&["resume", &id]).success()
        ));
        statuses.push(st);
        // The counter writes into the rootfs: stop it before the bundle goes.
        rt.cmd(&["delete", "--force", &id]).ok();
    }
    assert_eq!(statuses[0][0], "paused");
    assert_eq!(statuses[0][1], "running");
    same("pause/resume statuses", &statuses[0], &statuses[1]);
}

/// create --pid-file writes the init's host PID, the one `state` reports.
#[test]
fn create_pid_file() {
    require_root!();
    let mut same_pid = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let b = Bundle::new();
        let id = rt.new_id("pidfile");
        let pf = b.path().join("init.pid");
        rt.create(&id, &b, &["--pid-file", pf.to_str().unwrap()])
            .ok();
        let text = std::fs::read_to_string(&pf)
            .unwrap_or_else(|e| panic!("{}: no pid file: {e}", rt.name()));
        same_pid.push(text.trim().parse::<i32>().ok() == Some(rt.pid(&id)));
    }
    assert!(same_pid[0], "berth: pid file differs from state.pid");
    same("pid file matches state", same_pid[0], same_pid[1]);
}

/// `features` prints the OCI features document; `spec` refuses to overwrite config.json.
#[test]
fn features_and_spec() {
    require_root!();
    let rt = Runtime::berth();
    let f = rt.cmd(&["features"]).ok();
    let v: Value = serde_json::from_str(&f.stdout).expect("features is JSON");
    assert!(v["ociVersionMin"].is_string(), "{v}");
    assert!(v["ociVersionMax"].is_string(), "{v}");
    let b = Bundle::new();
    let again = rt.cmd(&["spec", "--bundle", b.path().to_str().unwrap()]);
    assert!(!again.success(), "spec overwrote config.json: {again:?}");

    // `features | head -1`: a reader that goes away ends berth-runtime quietly (SIGPIPE, as
    // runc and crun), not with println!'s panic.
    // The pipe's read end is closed before berth-runtime starts, so its write always fails.
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    drop(read_end);
    let out = std::process::Command::new(berth_tests::binaries::berth_runtime())
        .arg("features")
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run berth-runtime features");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}

/// ociVersion: configs of runtime spec 1.x run, 1.3.0 (runtime-tools' own) included, and the
/// state reports the config's version; a config of another major version or a version that is
/// not SemVer fails create naming ociVersion (runtime-tools' misc_props: a runtime MUST error
/// on invalid values; berth ran any), as do newer properties berth does not implement.
#[test]
fn oci_version_1x_accepted_others_refused() {
    require_root!();
    let rt = Runtime::berth();
    for v in ["1.0.0", "1.0.2-dev", "1.2.1", "1.3.0"] {
        let mut b = Bundle::new();
        b.set("/ociVersion", json!(v));
        b.args(&["sleep", "300"]);
        let id = rt.new_id("ociversion");
        rt.create(&id, &b, &[]).ok();
        assert_eq!(rt.state(&id)["ociVersion"], json!(v));
    }
    let refused = |pointer: &str, value: Value, want: &str| {
        let mut b = Bundle::new();
        b.set(pointer, value);
        let id = rt.new_id("ociversion-bad");
        let o = rt.create(&id, &b, &[]).failed();
        assert!(o.stderr.contains(want), "{pointer}: {o:?}");
        assert!(
            rt.try_state(&id).is_none(),
            "{pointer}: a container was left"
        );
    };
    refused("/ociVersion", json!("2.0.0"), "ociVersion");
    refused("/ociVersion", json!("invalid"), "ociVersion");
    refused(
        "/linux/netDevices",
        json!({"eth9": {"name": "eth9"}}),
        "linux.netDevices: not supported",
    );
}
