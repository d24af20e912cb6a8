//! podman (Debian's) runs a container with `--runtime` pointing at berth-runtime. The image is
//! a busybox rootfs imported offline (`podman import`) into storage of this test alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_tests::binaries;
use berth_tests::command::{run_bounded, Outcome};
use berth_tests::require_root;

/// podman with storage, runroot and tmpdir inside `dir`, cgroupfs, file events.
fn podman(dir: &Path, args: &[&str]) -> Outcome {
    let mut c = Command::new(binaries::required_tool("podman"));
    c.arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .args(args)
        .stdin(std::process::Stdio::null());
    run_bounded(&mut c, Duration::from_secs(120))
}

/// `podman run` with the given runtime; the image is `berth-test-busybox`.
fn podman_run(dir: &Path, runtime: &Path, args: &[&str]) -> Outcome {
    let rt = runtime.to_str().unwrap().to_string();
    let mut all = vec![
        "--runtime",
        rt.as_str(),
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
    ];
    all.extend_from_slice(args);
    podman(dir, &all)
}

/// Removes the test's podman storage (images, containers) before the dir goes, and the
/// cgroups podman made for conmon and leaves behind: `libpod_parent/conmon` in every
/// hierarchy that had none before the test (empty ones only), and the plain directories conmon
/// makes on /sys/fs/cgroup's tmpfs for controllers no hierarchy is mounted for (hugetlb, when
/// it sits on cgroup2).
struct PodmanStorage(tempfile::TempDir, CgroupsBefore);

/// What /sys/fs/cgroup held before the test.
struct CgroupsBefore {
    entries: Vec<std::path::PathBuf>,
    libpod_parents: Vec<std::path::PathBuf>,
}

impl CgroupsBefore {
    fn now() -> Self {
        let entries: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        let libpod_parents = entries
            .iter()
            .map(|e| e.join("libpod_parent"))
            .filter(|p| !p.exists())
            .collect();
        Self {
            entries,
            libpod_parents,
        }
    }

    fn remove_what_podman_left(&self) {
        // Empty cgroups only: rmdir fails on one that still has processes or children.
        for parent in &self.libpod_parents {
            let _ = std::fs::remove_dir(parent.join("conmon"));
            let _ = std::fs::remove_dir(parent);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounted =
            |p: &std::path::Path| mountinfo.lines().any(|l| l.split(' ').nth(4) == p.to_str());
        let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for entry in dir.filter_map(|e| e.ok()).map(|e| e.path()) {
            if !self.entries.contains(&entry) && entry.is_dir() && !mounted(&entry) {
                eprintln!("removing {} (left by podman)", entry.display());
                let _ = std::fs::remove_dir_all(&entry);
            }
        }
    }
}

impl Drop for PodmanStorage {
    fn drop(&mut self) {
        let _ = podman(self.0.path(), &["rm", "--all", "--force"]);
        let _ = podman(self.0.path(), &["rmi", "--all", "--force"]);
        let _ = podman(self.0.path(), &["system", "reset", "--force"]);
        self.1.remove_what_podman_left();
    }
}

#[test]
fn podman_runs_with_berth_runtime() {
    require_root!();
    let storage = PodmanStorage(
        tempfile::Builder::new()
            .prefix("berth-podman-")
            .tempdir()
            .unwrap(),
        CgroupsBefore::now(),
    );
    let dir = storage.0.path();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let rootfs = dir.join("rootfs");
    berth_tests::bundle::make_rootfs(&rootfs);
    let tar = dir.join("busybox.tar");
    run_bounded(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        Duration::from_secs(60),
    )
    .ok();
    let imported = podman(
        dir,
        &[
            "import",
            "--change",
            "CMD=/bin/sh",
            tar.to_str().unwrap(),
            "berth-test-busybox",
        ],
    );
    assert!(
        imported.success(),
        "podman cannot import an image on this machine (not berth's doing): {imported:?}"
    );

    let script =
        "echo hello-from-podman; id; hostname | grep -c .; ulimit -n; cat /proc/self/uid_map";
    let control = podman_run(
        dir,
        &binaries::runc(),
        &["berth-test-busybox", "sh", "-c", script],
    );
    assert!(
        control.success(),
        "podman cannot run a container on this machine even with runc, so the berth-runtime \
         case cannot be judged: {control:?}"
    );

    let berth = binaries::berth_runtime();
    let o = podman_run(dir, &berth, &["berth-test-busybox", "sh", "-c", script]);
    assert!(o.success(), "podman --runtime {}: {o:?}", berth.display());
    assert_eq!(
        o.out(),
        control.out(),
        "podman output differs: berth-runtime vs runc"
    );
    assert!(
        o.out().starts_with("hello-from-podman\nuid=0(root)"),
        "{o:?}"
    );

    // Exit codes pass through podman.
    let o = podman_run(dir, &berth, &["berth-test-busybox", "sh", "-c", "exit 7"]);
    assert_eq!(o.code, 7, "{o:?}");

    // A detached container, exec, stop, rm — podman's use of state/kill/delete/exec.
    let d = podman(
        dir,
        &[
            "--runtime",
            berth.to_str().unwrap(),
            "run",
            "-d",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--name",
            "berth-podman-detached",
            "berth-test-busybox",
            "sleep",
            "300",
        ],
    );
    assert!(d.success(), "podman run -d: {d:?}");
    let rt = ["--runtime", berth.to_str().unwrap()];
    let e = podman(
        dir,
        &[
            &rt[..],
            &["exec", "berth-podman-detached", "echo", "exec-ok"],
        ]
        .concat(),
    );
    assert_eq!(e.out(), "exec-ok", "podman exec: {e:?}");
    let s = podman(
        dir,
        &[&rt[..], &["stop", "-t", "2", "berth-podman-detached"]].concat(),
    );
    assert!(s.success(), "podman stop: {s:?}");
    let r = podman(dir, &[&rt[..], &["rm", "berth-podman-detached"]].concat());
    assert!(r.success(), "podman rm: {r:?}");
}
