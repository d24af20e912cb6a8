//! A container spec from `container_spec` runs under the real berth-runtime: busybox in a bundle,
//! as a user from the image's /etc/passwd, with the RuntimeDefault seccomp profile, the sandbox
//! files bound in, and output checked. Root only; skips (saying why) without root or without
//! the berth-runtime binary next to the test's deps dir (`cargo build -p runtime --bins` with
//! the same CARGO_TARGET_DIR).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cri_api::v1 as cri;

use super::container_spec;
use super::test_support::*;

fn berth_runtime() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()?
    } else {
        deps
    };
    Some(dir.join("berth-runtime")).filter(|p| p.is_file())
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn rootfs(dir: &Path, busybox: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "work"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for tool in ["sh", "echo", "id", "cat", "grep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwww:x:33:\nvideo:x:44:www\n",
    )
    .unwrap();
    for f in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(dir.join("etc").join(f), "").unwrap();
    }
}

#[test]
fn container_spec_runs_under_berth_runtime() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED container_spec_runs_under_berth_runtime: needs root");
        return;
    }
    let Some(runtime) = berth_runtime() else {
        eprintln!(
            "SKIPPED container_spec_runs_under_berth_runtime: no berth-runtime next to the test \
             binary (cargo build -p runtime --bins with the same CARGO_TARGET_DIR)"
        );
        return;
    };
    let Some(busybox) = busybox() else {
        eprintln!("SKIPPED container_spec_runs_under_berth_runtime: busybox is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let root = bundle.join("rootfs");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    rootfs(&root, &busybox);

    let id = format!("berth-spec-test-{}", std::process::id());
    let mut input = container_input(&files);
    std::fs::write(files.join("hostname"), "web-0\n").unwrap();
    input.rootfs = root.clone();
    input.passwd = std::fs::read_to_string(root.join("etc/passwd")).ok();
    input.group = std::fs::read_to_string(root.join("etc/group")).ok();
    // Join this test's own namespaces: it stands in for the pause.
    input.sandbox_pid = std::process::id() as i32;
    input.cgroups_path = format!("/{id}");
    input.image_config = image_config(
        &["/bin/sh"],
        &["-c", "exit 3"],
        &["PATH=/bin"],
        "www",
        "/work",
    );
    input.config.args = vec![
        "-c".into(),
        "echo hello-$MODE; id -u; id -G; cat /etc/hostname; pwd; \
         grep -q '^Seccomp:.*2' /proc/self/status && echo seccomp-filter"
            .into(),
    ];
    let linux = input.config.linux.get_or_insert_with(Default::default);
    linux.security_context = Some(cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        masked_paths: crate::spec::security::DEFAULT_MASKED_PATHS
            .map(String::from)
            .to_vec(),
        readonly_paths: crate::spec::security::DEFAULT_READONLY_PATHS
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let spec = container_spec(&input).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let state = dir.path().join("state");
    let mut child = Command::new(&runtime)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let _ = Command::new(&runtime)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "hello-test",
            "33",
            "33 44",
            "web-0",
            "/work",
            "seccomp-filter"
        ],
        "stderr: {stderr}"
    );
}
