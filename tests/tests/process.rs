//! The process of the spec: capabilities (all five sets), no_new_privileges, rlimits,
//! oom_score_adj, umask, user and additional gids, env, cwd, seccomp — what the container sees
//! in /proc/self, compared with runc.

use berth_tests::compare::run_both_same;
use berth_tests::{json, require_root, Bundle, Runtime};

const STATUS: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status";

/// The default process (root, runc's default capability list) sees the same Cap* lines.
#[test]
fn default_capabilities_and_status() {
    require_root!();
    let mut b = Bundle::new();
    b.sh(STATUS);
    let o = run_both_same("caps-default", &b);
    // runc's default: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE.
    assert!(o.out().contains("CapBnd:\t0000000020000420"), "{o:?}");
}

/// Each of the five sets given its own list, as root.
#[test]
fn capabilities_five_sets_root() {
    require_root!();
    let mut b = Bundle::new();
    b.set(
        "/process/capabilities",
        json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SYS_ADMIN"],
            "effective": ["CAP_CHOWN", "CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        }),
    );
    b.sh(STATUS);
    let o = run_both_same("caps5", &b);
    assert!(o.out().contains("CapAmb:\t0000000000000400"), "{o:?}");
}

/// A non-root user with an ambient capability keeps it across exec.
#[test]
fn capabilities_ambient_non_root() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    b.set(
        "/process/capabilities",
        json!({
            "bounding": ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
            "effective": ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
            "permitted": ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        }),
    );
    b.sh(&format!("id; {STATUS}"));
    let o = run_both_same("caps-amb", &b);
    assert!(o.out().contains("CapEff:\t0000000000000400"), "{o:?}");
}

/// SIGPIPE is not ignored in the container because the runtime (a Rust program, which ignores
/// it) did: berth-runtime's processes ignored SIGPIPE, runc's do not (`yes | head`). Only that
/// bit is compared: other ignored signals come from whoever started the test, and runc's Go
/// runtime does not pass all of them on.
#[test]
fn sigpipe_is_not_ignored() {
    require_root!();
    let mut b = Bundle::new();
    b.sh("grep SigIgn /proc/self/status");
    let (berth, runc) = berth_tests::compare::run_both("sigign", &b);
    let sigpipe_ignored = |o: &berth_tests::Outcome| {
        let mask = o
            .out()
            .trim()
            .strip_prefix("SigIgn:\t")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or_else(|| panic!("no SigIgn line: {o:?}"));
        mask & (1 << (libc::SIGPIPE - 1)) != 0
    };
    assert!(!sigpipe_ignored(&runc), "{runc:?}");
    assert!(
        !sigpipe_ignored(&berth),
        "SIGPIPE ignored in the container: {berth:?}"
    );
}

#[test]
fn no_new_privileges() {
    require_root!();
    for nnp in [true, false] {
        let mut b = Bundle::new();
        b.set("/process/noNewPrivileges", json!(nnp));
        b.sh("grep NoNewPrivs /proc/self/status");
        let o = run_both_same("nnp", &b);
        assert_eq!(o.out(), format!("NoNewPrivs:\t{}", u8::from(nnp)));
    }
}

/// rlimits: only lowering (no CAP_SYS_RESOURCE here; the hard nofile limit is 20000).
#[test]
fn rlimits_lowered() {
    require_root!();
    let mut b = Bundle::new();
    b.set(
        "/process/rlimits",
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 4096},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ]),
    );
    b.sh("ulimit -n; ulimit -Hn; ulimit -u; ulimit -Hu; ulimit -c");
    let o = run_both_same("rlimit", &b);
    assert_eq!(o.out(), "512\n4096\n300\n400\n0");
}

/// oom_score_adj: only raising (>= the current value; lowering needs CAP_SYS_RESOURCE).
#[test]
fn oom_score_adj_raised() {
    require_root!();
    let current: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = (current + 100).min(1000);
    let mut b = Bundle::new();
    b.set("/process/oomScoreAdj", json!(want));
    b.args(&["cat", "/proc/self/oom_score_adj"]);
    let o = run_both_same("oom-adj", &b);
    assert_eq!(o.out(), want.to_string());
}

/// umask, cwd, env, user with additional gids.
#[test]
fn umask_cwd_env_user() {
    require_root!();
    let mut b = Bundle::new();
    b.set(
        "/process/user",
        json!({"uid": 1000, "gid": 1001, "umask": 63, "additionalGids": [10, 20]}),
    );
    b.set("/process/cwd", json!("/tmp"));
    b.env("GREETING=hello from env");
    b.tmpfs_tmp();
    b.sh("umask; pwd; id; echo \"$GREETING\"; touch f; ls -ln f | cut -c1-10,16-");
    let o = run_both_same("umask", &b);
    let out = o.out();
    assert!(
        out.starts_with("0077\n/tmp\nuid=1000 gid=1001 groups=10,20"),
        "{out}"
    );
    assert!(out.contains("-rw-------"), "{out}");
}

/// A cwd that does not exist is created (runc does so) .
#[test]
fn cwd_created_when_missing() {
    require_root!();
    let mut b = Bundle::new();
    b.readonly(false);
    b.set("/process/cwd", json!("/work/deep/dir"));
    b.args(&["pwd"]);
    let o = run_both_same("cwd-missing", &b);
    assert_eq!(o.out(), "/work/deep/dir");
}

fn seccomp_profile() -> berth_tests::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            // Argument conditions: chmod(path, 0777) and fchmodat(dirfd, path, 0777) fail
            // with EACCES; other modes pass.
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]},
        ]
    })
}

/// seccomp: an errno rule (mkdir → EPERM) and rules with an argument condition.
#[test]
fn seccomp_errno_and_arg_conditions() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/linux/seccomp", seccomp_profile());
    b.tmpfs_tmp();
    b.sh(
        "mkdir /tmp/d 2>&1; echo mkdir=$?; touch /tmp/f; chmod 777 /tmp/f 2>&1; echo chmod777=$?; \
         chmod 755 /tmp/f; echo chmod755=$?; grep -E '^Seccomp:' /proc/self/status",
    );
    let o = run_both_same("seccomp", &b);
    let out = o.out();
    assert!(out.contains("Operation not permitted\nmkdir=1"), "{out}");
    assert!(out.contains("Permission denied\nchmod777=1"), "{out}");
    assert!(out.contains("chmod755=0"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

/// seccomp: an ENOSYS rule on chdir (applied after the runtime's own chdir to the cwd, as
/// seccomp comes last before exec).
#[test]
fn seccomp_enosys_rule_applied_last() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/process/cwd", json!("/etc"));
    b.set(
        "/linux/seccomp",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["chdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
        }),
    );
    b.sh("pwd; cd /tmp 2>&1; echo rc=$?");
    let o = run_both_same("seccomp-enosys", &b);
    assert!(o.out().starts_with("/etc\n"), "{o:?}");
    assert!(o.out().contains("Function not implemented"), "{o:?}");
}

/// process.apparmorProfile is applied (from the process's execve on) where AppArmor is
/// enabled, never silently dropped: on a host without AppArmor, as this machine, create fails
/// naming the field, as runc's does (berth ran the process unconfined). Where AppArmor is
/// enabled, the process runs confined by the profile ("unconfined" is always loaded).
#[test]
fn apparmor_profile_applied_or_refused() {
    require_root!();
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    let mut b = Bundle::new();
    b.set("/process/apparmorProfile", json!("unconfined"));
    b.sh("cat /proc/self/attr/current");
    let (ob, or) = berth_tests::compare::run_both("apparmor", &b);
    if enabled {
        assert_eq!(ob.ok().out(), "unconfined");
        return;
    }
    assert!(
        !ob.success() && !or.success(),
        "berth: {ob:?}\nrunc: {or:?}"
    );
    assert!(
        ob.stderr.contains("process.apparmorProfile") && ob.stderr.contains("not enabled"),
        "{ob:?}"
    );
}

/// SELinux labels on a host without SELinux (this machine): create fails naming the field, as
/// runc's does (berth ran the container unlabelled). Skipped where SELinux is enabled.
#[test]
fn selinux_labels_refused_without_selinux() {
    require_root!();
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        eprintln!("skipped: SELinux is enabled on this host");
        return;
    }
    for (pointer, field, label) in [
        (
            "/process/selinuxLabel",
            "process.selinuxLabel",
            "system_u:system_r:svirt_lxc_net_t:s0:c1,c2",
        ),
        (
            "/linux/mountLabel",
            "linux.mountLabel",
            "system_u:object_r:svirt_sandbox_file_t:s0:c1,c2",
        ),
    ] {
        let mut b = Bundle::new();
        b.set(pointer, json!(label));
        let (ob, or) = berth_tests::compare::run_both("selinux", &b);
        assert!(
            !ob.success() && !or.success(),
            "{field}: berth: {ob:?}\nrunc: {or:?}"
        );
        assert!(ob.stderr.contains(field), "{ob:?}");
    }
}

/// berth's `run.berth.env-bytes` annotation: berth-runtime execs the init with a listed env
/// value's exact bytes (not UTF-8, so not in config.json's strings); runc ignores it and the
/// process sees process.env's lossy value. A malformed annotation fails create naming it.
#[test]
fn env_bytes_annotation() {
    require_root!();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut b = Bundle::new();
    b.env("SECRET=\u{fffd}\u{fffd}ok\u{fffd}");
    // b"\xff\xfeok\x80"
    b.set(
        "/annotations",
        json!({"run.berth.env-bytes": r#"{"SECRET":"//5va4A="}"#}),
    );
    b.args(&["od", "-An", "-tx1", "/proc/self/environ"]);
    for (rt, want) in [
        (Runtime::berth(), hex(b"\0SECRET=\xff\xfeok\x80\0")),
        (
            Runtime::runc(),
            hex("\0SECRET=\u{fffd}\u{fffd}ok\u{fffd}\0".as_bytes()),
        ),
    ] {
        let o = rt.run_new("env-bytes", &b).ok();
        let got: String = o.stdout.split_whitespace().collect();
        assert!(got.contains(&want), "{}: {want} not in {got}", rt.name());
    }

    let berth = Runtime::berth();
    for bad in [
        "not json",
        r#"{"SECRET":"***"}"#,
        r#"{"OTHER":"YQ=="}"#,
        r#"{"SECRET":"YQBi"}"#,
    ] {
        b.set("/annotations", json!({"run.berth.env-bytes": bad}));
        let id = berth.new_id("env-bytes-bad");
        let o = berth.create(&id, &b, &[]).failed();
        assert!(o.stderr.contains("run.berth.env-bytes"), "{bad}: {o:?}");
        assert!(
            berth.try_state(&id).is_none(),
            "{bad}: a container was left"
        );
    }
}
