//! Security: CVE-2019-5736 (the runtime binary cannot be overwritten from a container),
//! CVE-2024-21626 (no host fd leaks into the container, a /proc/self/fd/N cwd is refused or
//! stays in the rootfs), and --preserve-fds passing exactly the fds asked for.

use std::process::Command;

use berth_tests::command::{run_bounded, DEFAULT_TIMEOUT};
use berth_tests::compare::same;
use berth_tests::host::sha256_file;
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle};

/// Tries to open every non-rootfs executable of the container's processes for writing; one
/// line per attempt, "pid:exe-link:result".
const OVERWRITE_EXE: &str = r#"
for p in /proc/[0-9]*; do
  n=${p#/proc/}
  link=$(readlink $p/exe 2>/dev/null) || continue
  case "$link" in /bin/busybox) continue;; esac
  if (echo pwned >> $p/exe) 2>/dev/null; then r=WROTE; else r=refused; fi
  echo "$n:$link:$r"
done
"#;

/// Before start, the container's pid 1 is the runtime itself (waiting for start). A process
/// exec'd into the created container cannot open /proc/1/exe for writing, and the host
/// binary's sha256 is unchanged.
#[test]
fn cve_2019_5736_runtime_exe_not_writable() {
    require_root!();
    let mut results = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let bin = rt.bin().to_path_buf();
        let before = sha256_file(&bin);
        let b = Bundle::new();
        let id = rt.new_id("cve5736");
        rt.create(&id, &b, &[]).ok();
        let o = rt.exec(&id, &["sh", "-c", OVERWRITE_EXE]).ok();
        let out = o.out();
        assert!(
            out.lines().any(|l| l.starts_with("1:")),
            "{}: pid 1 (the waiting runtime) not seen: {out}",
            rt.name()
        );
        assert!(
            !out.contains("WROTE"),
            "{}: wrote a runtime exe: {out}",
            rt.name()
        );
        assert!(
            !out.contains(bin.to_str().unwrap()),
            "{}: /proc/1/exe shows the host binary itself: {out}",
            rt.name()
        );
        // A process exec'd while the container runs can't either (the exec'd runtime helper
        // is the same sealed copy).
        rt.start(&id).ok();
        assert_eq!(sha256_file(&bin), before, "{}: binary changed", rt.name());
        results.push(out.lines().all(|l| l.ends_with(":refused")));
    }
    same("every runtime exe refused", results[0], results[1]);
}

/// While an exec is in progress, its runtime helper is a process of the container too; a
/// container process that races for /proc/<pid>/exe of every new process cannot write.
#[test]
fn cve_2019_5736_exec_helper_not_writable() {
    require_root!();
    let rt = Runtime::berth();
    let before = sha256_file(rt.bin());
    let mut b = Bundle::new();
    b.sh(&format!(
        "i=0; while [ $i -lt 400 ]; do {OVERWRITE_EXE} i=$((i+1)); done > /dev/null 2>&1; sleep 300"
    ));
    let id = rt.new_id("cve5736-exec");
    rt.create(&id, &b, &[]).ok();
    rt.start(&id).ok();
    for _ in 0..20 {
        rt.exec(&id, &["true"]).ok();
    }
    assert_eq!(
        sha256_file(rt.bin()),
        before,
        "berth-runtime binary changed"
    );
}

/// `ls` output as one line of words.
fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// No host descriptor beyond 0, 1, 2 reaches the container's init or an exec'd process.
#[test]
fn cve_2024_21626_no_fd_leak() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        // No pipeline: while ash sets one up, its pipe fds are open in the shell.
        b.sh("ls /proc/$$/fd; echo END; sleep 300");
        let id = rt.new_id("fdleak");
        rt.create(&id, &b, &[]).ok();
        rt.start(&id).ok();
        berth_tests::wait::until("init output", std::time::Duration::from_secs(10), || {
            rt.output(&id).0.contains("END")
        });
        let init_fds = words(rt.output(&id).0.split("END").next().unwrap());
        let exec_fds = rt
            .exec(&id, &["sh", "-c", "ls /proc/$$/fd; true"])
            .ok()
            .out();
        let exec_links = rt
            .exec(&id, &["sh", "-c", "ls -l /proc/$$/fd; true"])
            .ok()
            .out();
        assert_eq!(init_fds, "0 1 2", "{}: init fds", rt.name());
        let exec_fds = exec_fds.split_whitespace().collect::<Vec<_>>().join(" ");
        seen.push((init_fds, exec_fds, exec_links));
    }
    assert_eq!(seen[0].1, "0 1 2", "berth: exec'd process fds");
    same(
        "fds in the container",
        (&seen[0].0, &seen[0].1),
        (&seen[1].0, &seen[1].1),
    );
}

/// A cwd of /proc/self/fd/N (a runtime fd that would point to the host, as in
/// CVE-2024-21626) is refused or lands inside the rootfs; never outside it.
#[test]
fn cve_2024_21626_proc_self_fd_cwd() {
    require_root!();
    let rt = Runtime::berth();
    for n in 3..=9 {
        let mut b = Bundle::new();
        b.set("/process/cwd", json!(format!("/proc/self/fd/{n}")));
        b.sh(
            "pwd; ls /sys/fs/cgroup 2>/dev/null | head -3; ls ../../../../ 2>/dev/null | head -20",
        );
        let o = rt.run_new("cve21626", &b);
        if o.success() {
            let out = o.out();
            let first = out.lines().next().unwrap_or("");
            assert!(
                first.starts_with('/') && !first.contains("unreachable"),
                "cwd /proc/self/fd/{n}: outside the root: {out}"
            );
            assert!(
                !out.contains("berth-bundle-"),
                "cwd /proc/self/fd/{n}: sees the host: {out}"
            );
        }
    }
    // exec --cwd the same way, in a running container.
    let mut b = Bundle::new();
    let id = rt.start_sleeper("cve21626-exec", &mut b);
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        let o = rt.exec_with(&["--cwd", &cwd], &id, &["pwd"]);
        if o.success() {
            let out = o.out();
            assert!(
                out.starts_with('/') && !out.contains("unreachable"),
                "exec --cwd {cwd}: outside the root: {out}"
            );
        }
    }
}

/// --preserve-fds 2: fds 3 and 4 of the caller reach the process, nothing else.
#[test]
fn preserve_fds() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.sh("ls /proc/$$/fd; echo END; cat <&3; cat <&4");
        b.write();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("three"), "from-fd-3\n").unwrap();
        std::fs::write(dir.path().join("four"), "from-fd-4\n").unwrap();
        let id = rt.new_id("preserve");
        // A host shell opens fds 3, 4 (and 5, not preserved) and execs the runtime.
        let script = format!(
            "exec 3<{d}/three 4<{d}/four 5<{d}/four; exec {bin} --root {root} run --preserve-fds 2 --bundle {bundle} {id}",
            d = dir.path().display(),
            bin = rt.bin().display(),
            root = rt.root().display(),
            bundle = b.path().display(),
        );
        let o = run_bounded(Command::new("sh").arg("-c").arg(&script), DEFAULT_TIMEOUT).ok();
        let out = o.out();
        let (fds, rest) = out.split_once("END").unwrap();
        seen.push(format!("{}{rest}", words(fds)));
    }
    assert_eq!(seen[0], "0 1 2 3 4\nfrom-fd-3\nfrom-fd-4");
    same("--preserve-fds 2", &seen[0], &seen[1]);
}

/// A seccomp profile that denies close_range (runtime-tools' default profile, Docker-era
/// profiles, user Localhost profiles do not list it) neither fails the container (it failed
/// with `init: close_range: EPERM`) nor lets a host descriptor through: the caller's fd 5,
/// open without close-on-exec, reaches neither init nor an exec'd process. Without
/// no_new_privileges the filter is loaded before the user switch, as runc does.
#[test]
fn cve_2024_21626_no_fd_leak_when_seccomp_denies_close_range() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.set("/process/noNewPrivileges", json!(false));
        b.set(
            "/linux/seccomp",
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": ["close_range"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            }),
        );
        b.sh("ls /proc/$$/fd; echo END; sleep 300");
        b.write();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("host"), "host file\n").unwrap();
        let id = rt.new_id("fdleak-seccomp");
        let script = format!(
            "exec 5<{d}/host; exec {bin} --root {root} run --detach --bundle {bundle} {id} >{d}/out 2>&1",
            d = dir.path().display(),
            bin = rt.bin().display(),
            root = rt.root().display(),
            bundle = b.path().display(),
        );
        run_bounded(Command::new("sh").arg("-c").arg(&script), DEFAULT_TIMEOUT).ok();
        let out = dir.path().join("out");
        berth_tests::wait::until("init output", std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&out).is_ok_and(|s| s.contains("END"))
        });
        let text = std::fs::read_to_string(&out).unwrap();
        let init_fds = words(text.split("END").next().unwrap());
        let script = format!(
            "exec 5<{d}/host; exec {bin} --root {root} exec {id} sh -c 'ls /proc/$$/fd; true'",
            d = dir.path().display(),
            bin = rt.bin().display(),
            root = rt.root().display(),
        );
        let exec_fds = run_bounded(Command::new("sh").arg("-c").arg(&script), DEFAULT_TIMEOUT)
            .ok()
            .out();
        seen.push((init_fds, words(&exec_fds)));
    }
    assert_eq!(seen[0], ("0 1 2".to_string(), "0 1 2".to_string()), "berth");
    same("fds in the container", &seen[0], &seen[1]);
}

/// A seccomp filter that denies getcwd (runtime-tools' linux_seccomp), loaded before the user
/// switch (no noNewPrivileges): the working directory check no longer fails every container
/// ('process.cwd: / is outside the container's root'), and a /proc/self/fd/N cwd is still
/// refused or lands inside the rootfs, never outside.
#[test]
fn cwd_check_when_seccomp_denies_getcwd() {
    require_root!();
    let rt = Runtime::berth();
    let deny_getcwd = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let mut b = Bundle::new();
    b.set("/process/noNewPrivileges", json!(false));
    b.set("/linux/seccomp", deny_getcwd.clone());
    b.set("/process/cwd", json!("/etc"));
    b.sh("ls passwd");
    let o = rt.run_new("getcwd-denied", &b).ok();
    assert_eq!(o.out(), "passwd");
    for n in 3..=9 {
        let mut b = Bundle::new();
        b.set("/process/noNewPrivileges", json!(false));
        b.set("/linux/seccomp", deny_getcwd.clone());
        b.set("/process/cwd", json!(format!("/proc/self/fd/{n}")));
        b.sh("ls ../../../../ 2>/dev/null | head -20");
        let o = rt.run_new("getcwd-denied-fd", &b);
        if o.success() {
            assert!(
                !o.out().contains("berth-bundle-"),
                "cwd /proc/self/fd/{n}: sees the host: {o:?}"
            );
        }
    }
}

/// The sealed copy a container's init runs from (CVE-2019-5736) holds only what an exec needs
/// of berth-runtime's binary, not its symbols and debug info: the init is its last holder and
/// the kernel frees it in the container's process when that execs the user process, so with
/// the whole 68 MB debug binary the user process started 10-70 ms after `start` returned
/// (runtime-tools' killsig signalled a shell before its trap was set).
#[test]
fn init_runs_from_an_exec_image_copy() {
    require_root!();
    let rt = Runtime::berth();
    let binary = std::fs::read(rt.bin()).unwrap();
    let has_debug_info = binary.windows(11).any(|w| w == b".debug_info");
    let b = Bundle::new();
    let id = rt.new_id("exec-image");
    rt.create(&id, &b, &[]).ok();
    let exe = format!("/proc/{}/exe", rt.pid(&id));
    let link = std::fs::read_link(&exe).unwrap();
    assert!(
        link.to_string_lossy().starts_with("/memfd:berth-runtime"),
        "the init does not run from a sealed copy: {link:?}"
    );
    let copy_len = std::fs::metadata(&exe).unwrap().len();
    assert!(copy_len <= binary.len() as u64);
    if has_debug_info {
        assert!(
            copy_len < binary.len() as u64 / 2,
            "the init's copy is {copy_len} bytes of a {} byte binary",
            binary.len()
        );
    }
}
