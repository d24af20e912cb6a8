//! exec into a running container: args, exit code, env, cwd, user, --process, --detach with
//! --pid-file, --cap, --no-new-privs — compared with runc.

use std::time::Duration;

use berth_tests::compare::same;
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle};

/// Runs `f` against a sleeping container under each runtime: (berth, runc) results.
fn with_sleepers<T>(tag: &str, f: impl Fn(&Runtime, &str, &Bundle) -> T) -> (T, T) {
    let mut out = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.set("/process/cwd", json!("/"));
        let id = rt.start_sleeper(tag, &mut b);
        out.push(f(&rt, &id, &b));
    }
    let r = out.pop().unwrap();
    (out.pop().unwrap(), r)
}

#[test]
fn exec_args_and_exit_code() {
    require_root!();
    let (b, r) = with_sleepers("exec-args", |rt, id, _| {
        let a = rt.exec(id, &["echo", "hello", "world"]).ok();
        let e = rt.exec(id, &["sh", "-c", "echo partial; exit 42"]);
        let missing = rt.exec(id, &["/no/such/binary"]);
        (a.out(), e.code, e.out(), missing.success())
    });
    assert_eq!(b.0, "hello world");
    assert_eq!(b.1, 42);
    assert!(!b.3, "exec of a missing binary must fail");
    same("exec args/exit code", b, r);
}

#[test]
fn exec_env_cwd_user() {
    require_root!();
    let (b, r) = with_sleepers("exec-env", |rt, id, _| {
        let env = rt
            .exec_with(
                &["--env", "FOO=bar baz"],
                id,
                &["sh", "-c", "echo \"$FOO\""],
            )
            .ok()
            .out();
        let cwd = rt.exec_with(&["--cwd", "/tmp"], id, &["pwd"]).ok().out();
        let user = rt
            .exec_with(&["--user", "65534:65534"], id, &["id"])
            .ok()
            .out();
        let path = rt.exec(id, &["sh", "-c", "echo $PATH"]).ok().out();
        (env, cwd, user, path)
    });
    same("exec env/cwd/user", &b, &r);
    assert_eq!(b.0, "bar baz");
    assert_eq!(b.1, "/tmp");
    assert_eq!(b.2, "uid=65534(nobody) gid=65534(nogroup)");
}

/// --process: a process.json with its own args, env, cwd, user and additional gids.
#[test]
fn exec_process_file() {
    require_root!();
    let (b, r) = with_sleepers("exec-proc", |rt, id, bundle| {
        let p = json!({
            "terminal": false,
            "user": {"uid": 65534, "gid": 65534, "additionalGids": [0]},
            "args": ["sh", "-c", "id; pwd; echo $X"],
            "env": ["PATH=/bin", "X=from-process-json"],
            "cwd": "/etc",
        });
        let path = bundle.path().join("process.json");
        std::fs::write(&path, p.to_string()).unwrap();
        rt.exec_with(&["--process", path.to_str().unwrap()], id, &[])
            .ok()
            .out()
    });
    same("exec --process", &b, &r);
    assert_eq!(
        b,
        "uid=65534(nobody) gid=65534(nogroup) groups=0(root)\n/etc\nfrom-process-json"
    );
}

/// exec --detach --pid-file: returns at once, the process runs in the container.
#[test]
fn exec_detach_pid_file() {
    require_root!();
    let (b, r) = with_sleepers("exec-detach", |rt, id, bundle| {
        let pid_file = bundle.path().join("exec.pid");
        let o = rt
            .exec_with(
                &["--detach", "--pid-file", pid_file.to_str().unwrap()],
                id,
                &["sleep", "123"],
            )
            .ok();
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: pid file: {e}", rt.name()))
            .trim()
            .parse()
            .unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ps = rt.cmd(&["ps", "--format", "json", id]).ok();
        let pids: Vec<i64> = serde_json::from_str(ps.stdout.trim()).unwrap();
        // It shares the init's namespaces.
        let init = rt.pid(id);
        let same_ns = ["pid", "mnt", "net", "uts", "ipc"].iter().all(|k| {
            berth_tests::host::ns_link(&pid.to_string(), k)
                == berth_tests::host::ns_link(&init.to_string(), k)
        });
        (
            o.stdout.is_empty(),
            cmdline.replace('\0', " ").trim().to_string(),
            pids.contains(&(pid as i64)),
            same_ns,
        )
    });
    assert_eq!(b, (true, "sleep 123".to_string(), true, true));
    same("exec --detach --pid-file", b, r);
}

/// exec --cap adds a capability; --no-new-privs sets NoNewPrivs.
#[test]
fn exec_cap_and_no_new_privs() {
    require_root!();
    let (b, r) = with_sleepers("exec-cap", |rt, id, _| {
        let status = |flags: &[&str]| {
            rt.exec_with(
                flags,
                id,
                &["grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/self/status"],
            )
            .ok()
            .out()
        };
        (
            status(&[]),
            status(&["--cap", "CAP_SYS_ADMIN"]),
            status(&["--no-new-privs"]),
        )
    });
    assert_ne!(b.0, b.1, "--cap CAP_SYS_ADMIN changed nothing");
    same("exec --cap/--no-new-privs", b, r);
}

/// exec into a stopped container fails under both.
#[test]
fn exec_into_stopped_fails() {
    require_root!();
    let mut res = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let b = Bundle::new();
        let id = rt.new_id("exec-stopped");
        rt.create(&id, &b, &[]).ok();
        rt.start(&id).ok();
        rt.wait_status(&id, "stopped", Duration::from_secs(10));
        res.push(rt.exec(&id, &["true"]).success());
    }
    assert!(!res[0]);
    same("exec into stopped", res[0], res[1]);
}
