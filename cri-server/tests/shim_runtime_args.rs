//! berth-shim runs the OCI runtime's create with the flags berthd gives it: `--systemd-cgroup`
//! for a container under the systemd cgroup driver, none under cgroupfs. A fake runtime records
//! its command line and leaves a `sleep` as the container's init. Needs no root; skips when
//! berth-shim is not built.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_cri::config::CgroupDriver;
use berth_cri::shim_client::{Shim, ShimArgs};

/// The cargo target profile dir (`target/debug`) this test binary was built in.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_owned()
}

/// A runtime that writes its arguments, one a line, to `args`, and starts a `sleep` as the
/// container's init (its pid in `--pid-file`).
fn fake_runtime(dir: &Path, args: &Path) -> PathBuf {
    let script = dir.join("fake-runtime");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\npidfile=\nwhile [ $# -gt 0 ]; do\n  \
             [ \"$1\" = --pid-file ] && pidfile=$2\n  shift\ndone\n\
             sleep 60 </dev/null >/dev/null 2>&1 &\necho $! > \"$pidfile\"\n",
            args.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The runtime's command line when the shim creates a container under `driver`.
fn runtime_args(driver: CgroupDriver) -> Option<Vec<String>> {
    let shim_binary = target_dir().join("berth-shim");
    if !shim_binary.exists() {
        eprintln!(
            "SKIP: {} is missing (cargo build -p runtime --bins)",
            shim_binary.display()
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    let shim = Shim::create(&ShimArgs {
        shim_binary,
        id: "c1".into(),
        bundle,
        runtime: fake_runtime(dir.path(), &args_file),
        runtime_root: dir.path().join("root"),
        sealed_runtime: None,
        state_dir: dir.path().join("shim"),
        socket: dir.path().join("s"),
        log_path: None,
        stdin: false,
        stdin_once: false,
        start: false,
        cgroup_driver: driver,
    })
    .expect("the shim creates the container");
    let args = std::fs::read_to_string(&args_file).unwrap();
    // The fake init goes; the shim records its exit and ends.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim.init_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while shim.exit_record().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the shim recorded no exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(args.lines().map(str::to_owned).collect())
}

#[test]
fn the_shim_passes_systemd_cgroup_to_the_runtime_under_systemd() {
    let Some(args) = runtime_args(CgroupDriver::Systemd) else {
        return;
    };
    let flag = args.iter().position(|a| a == "--systemd-cgroup");
    let create = args.iter().position(|a| a == "create");
    assert!(
        matches!((flag, create), (Some(f), Some(c)) if f < c),
        "a global flag before the command: {args:?}"
    );
    let args = runtime_args(CgroupDriver::Cgroupfs).unwrap();
    assert!(args.iter().any(|a| a == "create"), "{args:?}");
    assert!(!args.iter().any(|a| a == "--systemd-cgroup"), "{args:?}");
}
