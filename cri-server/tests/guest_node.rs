//! berthd on a real node: systemd 252 as PID 1 and pure cgroup v2, in the guest lane's Debian
//! 12 guest (scripts/guest/checks/berthd-pod-flow runs this binary there; docs/guest-lane.md).
//! Not run by `cargo test` (`test = false` in Cargo.toml): on a host without systemd as PID 1
//! on cgroup v2 every test here fails, saying it runs in the guest lane.
//!
//! - `pod_flow_cgroupfs`, `pod_flow_systemd`: pull from a registry on the loopback, a pod on a
//!   CNI bridge of the test's own, a container with memory and cpu limits (its cgroup, the
//!   pause's, the files; under systemd the scopes `berth-<id>.scope` in the kubelet's pod
//!   slice and their properties), ExecSync, the log, container and pod stats, a live update, an
//!   OOM kill reported as OOMKilled/137, stop and remove of everything, RuntimeConfig's driver;
//!   under systemd no `berth-` unit is left, and a pod without cgroup_parent gets (and loses)
//!   `berth-pod<id>.slice`.
//! - `restart_survival_systemd`: berthd as a systemd service made from
//!   examples/berthd.service (KillMode=process); a running container survives
//!   `systemctl restart` and a SIGKILL of berthd's main process, is re-adopted (running,
//!   ExecSync works), and is torn down without leaving a unit.
//!
//! Every wait is bounded; the guest is 12-40x slower than the host, so the bounds are generous.

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cri::config::CgroupDriver;
use calls::Rt;
use cri_api::v1 as cri;
use node::Leftovers;
use pods::Pods;

/// Panics unless this is the guest lane's node: root, systemd as PID 1, cgroup v2, the tools
/// and binaries the flow needs. Never skips: a test that cannot run here fails.
fn in_guest() {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let cgroup2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let root = nix::unistd::geteuid().is_root();
    assert!(
        systemd && cgroup2 && root,
        "guest_node runs in the guest lane (scripts/guest/lane, check berthd-pod-flow): it \
         needs root, systemd as PID 1 and a cgroup v2 /sys/fs/cgroup; here root: {root}, \
         systemd PID 1: {systemd}, cgroup2: {cgroup2}"
    );
    for t in support::TOOLS {
        assert!(Path::new(t).exists(), "{t} is missing in the guest image");
    }
    for b in [
        "berthd",
        "berth-shim",
        "berth-runtime",
        "berth-pause",
        "berth-cni-bridge",
        "berth-cni-host-local",
        "berth-cni-loopback",
    ] {
        let p = pods::bin_dir().join(b);
        assert!(
            p.is_file(),
            "{} is missing (cargo build --bins)",
            p.display()
        );
    }
}

/// Prints an `ok:` line with the seconds since `t0`.
fn ok(t0: Instant, what: &str) {
    println!("ok: {what} ({:.1}s)", t0.elapsed().as_secs_f64());
}

/// A command's stdout; panics naming it when it fails.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// berth's units systemd knows (loaded, active or not): containers' scopes `berth-<id>.scope`,
/// shims' `berth-shim-<id>.scope`, pod slices `berth-pod<id>.slice` (the guest lane's own
/// `berth-*.mount` and `berth-guest-runner.service` are not berth's; `berth.slice`, the parent
/// systemd makes for the pod slices, stays active and empty, as system.slice does).
fn berth_units() -> Vec<String> {
    sh("systemctl list-units --all --plain --no-legend")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.starts_with("berth-") && (u.ends_with(".scope") || u.ends_with(".slice")))
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) until no unit of [`berth_units`] matches `left`; panics naming them.
async fn wait_units_gone(what: &str, left: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let units: Vec<String> = berth_units().into_iter().filter(|u| left(u)).collect();
        if units.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: units left after 60 s: {units:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A busybox image with the applets the flow runs, in a registry of the test's own.
struct Image {
    registry: support::Registry,
    _work: tempfile::TempDir,
    name: String,
}

impl Image {
    fn push() -> Image {
        let registry = support::registry();
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        let src = work.path().join("rootfs");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "echo", "sleep", "cat", "true", "yes", "head", "tail", "ls",
        ] {
            std::os::unix::fs::symlink("busybox", src.join("bin").join(applet)).unwrap();
        }
        fs::write(src.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(src.join("etc/group"), "root:x:0:\n").unwrap();
        let img = format!("{}:v1", layout.display());
        support::run(
            Command::new("umoci")
                .args(["init", "--layout"])
                .arg(&layout),
        );
        support::run(Command::new("umoci").args(["new", "--image", &img]));
        support::run(
            Command::new("umoci")
                .args(["insert", "--image", &img])
                .arg(&src)
                .arg("/"),
        );
        support::run(Command::new("umoci").args([
            "config",
            "--image",
            &img,
            "--config.env",
            "PATH=/bin",
            "--config.cmd",
            "sh",
        ]));
        let name = format!("{}/berth/guest:v1", registry.host);
        support::push(&layout, "v1", &name, &[]);
        Image {
            registry,
            _work: work,
            name,
        }
    }
}

/// Stops, on drop, what a failed systemd test may leave: berthd's unit, the kubelet-style
/// slices and berth's own (every unit in them with it).
struct Units(Vec<String>);

impl Drop for Units {
    fn drop(&mut self) {
        for u in &self.0 {
            let _ = Command::new("systemctl").args(["stop", u]).status();
            let _ = Command::new("systemctl")
                .args(["reset-failed", u])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

const UID: &str = "6a2b0c1d-7e3f-4a55-9b66-0c7d8e9fa0b1";

/// The kubelet's cgroup_parent for a BestEffort pod with uid `uid` under the systemd driver:
/// the full slice path, the uid's dashes as underscores.
fn kubelet_slice_path(uid: &str) -> (String, String) {
    let slice = format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
    (
        format!("/kubepods.slice/kubepods-besteffort.slice/{slice}"),
        slice,
    )
}

/// A pod on the test's CNI network, logging under the test's dir, with `cgroup_parent`.
fn pod_config(pods: &Pods, name: &str, uid: &str, cgroup_parent: &str) -> cri::PodSandboxConfig {
    let mut c = pods::pod(name);
    c.metadata.as_mut().unwrap().uid = uid.into();
    let logs = pods.dir.path().join("logs").join(name);
    fs::create_dir_all(&logs).unwrap();
    c.log_directory = logs.display().to_string();
    c.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: cgroup_parent.into(),
        ..Default::default()
    });
    c
}

/// A container running `sh -c script` with a memory limit and cpu shares/quota, logging to
/// `<name>.log`.
fn container_config(name: &str, image: &str, script: &str, memory: i64) -> cri::ContainerConfig {
    cri::ContainerConfig {
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: memory,
                cpu_shares: 512,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..calls::shell_container(name, image, script)
    }
}

async fn status(rt: &mut Rt, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
    let r = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e:?}"))
        .into_inner();
    let info = r
        .info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    (r.status.expect("a status"), info)
}

async fn wait_exited(rt: &mut Rt, id: &str, timeout: Duration) -> cri::ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let (s, _) = status(rt, id).await;
        if s.state == cri::ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not exited after {timeout:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 60,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e:?}"))
    .into_inner()
}

/// The cgroup v2 path (`0::<path>`) of `pid`.
fn cgroup_of(pid: i64) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in /proc/{pid}/cgroup: {s}"))
        .to_owned()
}

fn cgroup_file(cgroup: &str, file: &str) -> String {
    let p = format!("/sys/fs/cgroup{cgroup}/{file}");
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_owned()
}

fn unit_prop(unit: &str, prop: &str) -> String {
    sh(&format!("systemctl show -P {prop} {unit}"))
}

async fn runtime_driver(rt: &mut Rt) -> i32 {
    rt.runtime_config(cri::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner()
        .linux
        .expect("linux runtime config")
        .cgroup_driver
}

fn cri_driver(driver: CgroupDriver) -> i32 {
    match driver {
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd as i32,
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs as i32,
    }
}

const MIB: i64 = 1 << 20;

/// The whole flow under `driver`, on test network `n`.
async fn pod_flow(driver: CgroupDriver, n: u32) {
    in_guest();
    let t0 = Instant::now();
    let systemd = driver.is_systemd();
    let d = driver.name();
    let image = Image::push();
    ok(t0, &format!("{d}: registry and image pushed"));
    let (parent, slice) = kubelet_slice_path(UID);
    let _units = Units(if systemd {
        vec!["kubepods.slice".into(), "berth.slice".into()]
    } else {
        Vec::new()
    });
    let host = image.registry.host.clone();
    let pods = Pods::start_with(n, |c| {
        c.registry.insecure = vec![host];
        c.cgroup.driver = Some(driver);
    })
    .await;
    let guard = Leftovers::new(pods.dir.path());
    let mut rt = pods.client().await;
    assert_eq!(runtime_driver(&mut rt).await, cri_driver(driver));
    ok(t0, &format!("{d}: RuntimeConfig reports the {d} driver"));
    calls::pull(&pods.channel().await, &image.name).await;
    ok(t0, &format!("{d}: PullImage"));

    // The pod: under systemd in the kubelet's slice, under cgroupfs in berth's /berth/<id>.
    let pod_cfg = pod_config(&pods, "flow", UID, if systemd { &parent } else { "" });
    let pod = calls::run_pod(&mut rt, &pod_cfg, "").await;
    guard.sandbox(&pod);
    let (pst, pinfo) = calls::pod_status(&mut rt, &pod).await;
    assert_eq!(pst.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = pst.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.starts_with(&pods.net.prefix),
        "pod IP {ip:?} not in {}",
        pods.net.subnet
    );
    let pause_pid = pinfo["pid"].as_i64().expect("the pause's pid");
    let pause_cg = cgroup_of(pause_pid);
    let (pod_cg, want_pause) = if systemd {
        (parent.clone(), format!("{parent}/berth-{pod}.scope"))
    } else {
        (format!("/berth/{pod}"), format!("/berth/{pod}/{pod}"))
    };
    assert_eq!(pause_cg, want_pause, "the pause's cgroup");
    if systemd {
        let scope = format!("berth-{pod}.scope");
        assert_eq!(unit_prop(&scope, "ActiveState"), "active");
        assert_eq!(unit_prop(&scope, "Slice"), slice);
    }
    ok(
        t0,
        &format!("{d}: RunPodSandbox (IP {ip}), the pause in {pause_cg}"),
    );

    // A container with limits.
    let main_cfg = container_config(
        "main",
        &image.name,
        "echo hello from $(cat /proc/self/cgroup); trap 'exit 0' TERM; while true; do sleep 1; done",
        128 * MIB,
    );
    let main = calls::create_container(&mut rt, &pod, &pod_cfg, main_cfg)
        .await
        .expect("CreateContainer main");
    calls::start_container(&mut rt, &main)
        .await
        .expect("StartContainer main");
    let (s, info) = status(&mut rt, &main).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "{s:?}"
    );
    let pid = info["pid"].as_i64().expect("the container's pid");
    let cg = cgroup_of(pid);
    assert_eq!(
        cg,
        format!(
            "{pod_cg}/{}",
            if systemd {
                format!("berth-{main}.scope")
            } else {
                main.clone()
            }
        )
    );
    assert_eq!(cgroup_file(&cg, "memory.max"), (128 * MIB).to_string());
    assert_eq!(cgroup_file(&cg, "cpu.max"), "50000 100000");
    let unit = format!("berth-{main}.scope");
    if systemd {
        assert_eq!(unit_prop(&unit, "ActiveState"), "active");
        assert_eq!(unit_prop(&unit, "Slice"), slice);
        assert_eq!(unit_prop(&unit, "MemoryMax"), (128 * MIB).to_string());
        assert_eq!(unit_prop(&unit, "Delegate"), "yes");
    }
    ok(
        t0,
        &format!("{d}: Create/StartContainer, pid {pid} in {cg}, memory.max 128 MiB, cpu.max 50000 100000"),
    );

    let r = exec(
        &mut rt,
        &main,
        &["sh", "-c", "echo $((6*7)); echo err >&2; exit 3"],
    )
    .await;
    assert_eq!(
        (
            String::from_utf8_lossy(&r.stdout).trim(),
            String::from_utf8_lossy(&r.stderr).trim(),
            r.exit_code
        ),
        ("42", "err", 3),
        "{r:?}"
    );
    ok(t0, &format!("{d}: ExecSync (stdout, stderr, exit code)"));

    let log = Path::new(&pod_cfg.log_directory).join("main.log");
    assert!(
        node::wait_until(Duration::from_secs(60), || async {
            fs::read_to_string(&log).is_ok_and(|l| l.contains(" stdout F hello from "))
        })
        .await,
        "no hello in {}: {:?}",
        log.display(),
        fs::read_to_string(&log)
    );
    ok(t0, &format!("{d}: the container's log"));

    let stats = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: main.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("container stats");
    // Pressure stall information (KEP-4205): the guest is cgroup v2 with PSI in its kernel, so
    // cpu, memory and io pressure are there (on cgroup v1 they are absent).
    let psi = [
        ("cpu.psi", stats.cpu.and_then(|c| c.psi)),
        ("memory.psi", stats.memory.and_then(|m| m.psi)),
        ("io.psi", stats.io.and_then(|io| io.psi)),
    ];
    for (what, p) in &psi {
        assert!(
            p.is_some_and(|p| p.some.is_some()),
            "ContainerStats {what} absent on cgroup v2 (/proc/pressure/cpu exists: {}): {stats:?}",
            Path::new("/proc/pressure/cpu").exists()
        );
    }
    let mem = stats.memory.expect("memory stats");
    let usage = mem.usage_bytes.map(|v| v.value).unwrap_or_default();
    assert!(usage > 0, "container memory usage {mem:?}");
    assert!(stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .is_some_and(|v| v.value > 0));
    let pstats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("pod stats")
        .linux
        .expect("linux pod stats");
    let pmem = pstats.memory.expect("pod memory stats");
    let pusage = pmem.usage_bytes.map(|v| v.value).unwrap_or_default();
    assert!(pusage > 0, "pod memory usage {pmem:?}");
    ok(
        t0,
        &format!("{d}: ContainerStats memory {usage} B, PodSandboxStats memory {pusage} B"),
    );

    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: main.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 * MIB,
            cpu_shares: 512,
            cpu_quota: 25_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    assert_eq!(cgroup_file(&cg, "memory.max"), (96 * MIB).to_string());
    assert_eq!(cgroup_file(&cg, "cpu.max"), "25000 100000");
    if systemd {
        assert_eq!(unit_prop(&unit, "MemoryMax"), (96 * MIB).to_string());
    }
    ok(
        t0,
        &format!(
            "{d}: UpdateContainerResources: memory.max 96 MiB, cpu.max 25000 100000{}",
            if systemd { ", MemoryMax" } else { "" }
        ),
    );

    // OOM: the shell holds what the pipe gives it, 200 MB against 32 MiB.
    let oom_cfg = container_config(
        "oom",
        &image.name,
        "x=$(yes | head -c 200000000); echo survived ${#x}",
        32 * MIB,
    );
    let oom = calls::create_container(&mut rt, &pod, &pod_cfg, oom_cfg)
        .await
        .expect("CreateContainer oom");
    calls::start_container(&mut rt, &oom)
        .await
        .expect("StartContainer oom");
    let s = wait_exited(&mut rt, &oom, Duration::from_secs(180)).await;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "OOMKilled"),
        "{s:?}"
    );
    ok(t0, &format!("{d}: OOM container: exit 137, OOMKilled"));

    rt.stop_container(cri::StopContainerRequest {
        container_id: main.clone(),
        timeout: 30,
    })
    .await
    .expect("StopContainer");
    let s = wait_exited(&mut rt, &main, Duration::from_secs(30)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    for c in [&main, &oom] {
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await
        .expect("RemoveContainer");
    }
    assert!(
        !Path::new(&format!("/sys/fs/cgroup{cg}")).exists(),
        "{cg} left after RemoveContainer"
    );
    if systemd {
        // The containers' scopes and their shims' (berth-shim-<id>.scope).
        wait_units_gone("RemoveContainer", |u| u.contains(&main) || u.contains(&oom)).await;
    }
    ok(
        t0,
        &format!("{d}: StopContainer (0, Completed), RemoveContainer: cgroups gone"),
    );

    calls::remove_pod(&mut rt, &pod).await;
    assert!(
        !Path::new(&format!("/sys/fs/cgroup{pause_cg}")).exists(),
        "{pause_cg} left after RemovePodSandbox"
    );
    if systemd {
        // The kubelet's slice is the kubelet's: it is still there, and goes when it stops it.
        assert!(Path::new(&format!("/sys/fs/cgroup{parent}")).is_dir());
        sh("systemctl stop kubepods.slice");
    } else {
        assert!(
            !Path::new(&format!("/sys/fs/cgroup{pod_cg}")).exists(),
            "{pod_cg} left"
        );
    }
    ok(t0, &format!("{d}: StopPodSandbox, RemovePodSandbox"));

    if systemd {
        // A pod without cgroup_parent: berth's own slice, removed with it.
        let own_cfg = pod_config(&pods, "own", "own-uid", "");
        let own = calls::run_pod(&mut rt, &own_cfg, "").await;
        guard.sandbox(&own);
        let (_, info) = calls::pod_status(&mut rt, &own).await;
        let cg = cgroup_of(info["pid"].as_i64().expect("the pause's pid"));
        assert_eq!(
            cg,
            format!("/berth.slice/berth-pod{own}.slice/berth-{own}.scope")
        );
        // Its slice is berth's, so UpdatePodSandboxResources sizes it (resources plus
        // overhead), through systemd's properties of the slice.
        let mib = |n: i64| cri::LinuxContainerResources {
            memory_limit_in_bytes: n << 20,
            ..Default::default()
        };
        rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: own.clone(),
            overhead: Some(mib(16)),
            resources: Some(mib(64)),
        })
        .await
        .expect("UpdatePodSandboxResources of a pod in berth's own slice");
        let max = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/berth.slice/berth-pod{own}.slice/memory.max"
        ))
        .expect("the pod slice's memory.max");
        assert_eq!(
            max.trim(),
            (80u64 << 20).to_string(),
            "the pod slice's memory.max"
        );
        calls::remove_pod(&mut rt, &own).await;
        assert!(!Path::new("/sys/fs/cgroup/berth.slice")
            .join(format!("berth-pod{own}.slice"))
            .exists());
        wait_units_gone("RemovePodSandbox", |_| true).await;
        ok(t0, "systemd: a pod without cgroup_parent in berth-pod<id>.slice, sized by UpdatePodSandboxResources, removed with it; no berth- unit left");
    }
    drop(pods);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_flow_cgroupfs() {
    pod_flow(CgroupDriver::Cgroupfs, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_flow_systemd() {
    pod_flow(CgroupDriver::Systemd, 2).await;
}

const SERVICE: &str = "berthd-guest-test.service";

fn main_pid() -> u32 {
    unit_prop(SERVICE, "MainPID").parse().unwrap_or(0)
}

/// A channel to the CRI socket at `path`, or None while it cannot be connected to (a
/// restarting berthd removes the old socket and binds a new one: no retry here, the caller
/// polls).
async fn try_connect(path: &Path) -> Option<tonic::transport::Channel> {
    let path = path.to_owned();
    tonic::transport::Endpoint::try_from("http://[::]:50051")
        .ok()?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .ok()
}

/// Waits until berthd's unit runs a main process other than `old` and answers on its socket;
/// returns the new main PID and a client.
async fn wait_berthd(pods: &Pods, old: u32, timeout: Duration) -> (u32, Rt) {
    let deadline = Instant::now() + timeout;
    loop {
        let pid = main_pid();
        if pid != 0 && pid != old && pods.config.listen.exists() {
            let answered = tokio::time::timeout(Duration::from_secs(10), async {
                let mut rt = Rt::new(try_connect(&pods.config.listen).await?);
                rt.version(cri::VersionRequest::default()).await.ok()?;
                Some(rt)
            })
            .await;
            if let Ok(Some(rt)) = answered {
                return (pid, rt);
            }
        }
        assert!(
            Instant::now() < deadline,
            "berthd ({SERVICE}) not serving within {timeout:?} (main pid {pid}, old {old}): {}",
            sh(&format!(
                "systemctl status --no-pager -n 30 {SERVICE} || true"
            ))
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The container runs and answers ExecSync.
async fn assert_adopted(rt: &mut Rt, id: &str, pid: i64, when: &str) {
    let (s, info) = status(rt, id).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "{when}: {s:?}"
    );
    assert_eq!(info["pid"].as_i64(), Some(pid), "{when}: {info}");
    let r = exec(rt, id, &["echo", "still-here"]).await;
    assert_eq!(
        (String::from_utf8_lossy(&r.stdout).trim(), r.exit_code),
        ("still-here", 0),
        "{when}: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_survival_systemd() {
    in_guest();
    let t0 = Instant::now();
    let image = Image::push();
    let host = image.registry.host.clone();
    let pods = Pods::configure(3, |c| {
        c.registry.insecure = vec![host];
        c.cgroup.driver = Some(CgroupDriver::Systemd);
    });
    let guard = Leftovers::new(pods.dir.path());
    let _units = Units(vec!["kubepods.slice".into(), "berth.slice".into()]);

    // The example unit, berthd's binary and config given by a drop-in.
    let config = pods.dir.path().join("berthd.toml");
    fs::write(&config, pods.config.to_toml()).unwrap();
    let unit_dir = PathBuf::from("/run/systemd/system");
    let dropin = unit_dir.join(format!("{SERVICE}.d"));
    fs::create_dir_all(&dropin).unwrap();
    let example = include_str!("../../examples/berthd.service");
    assert!(example.contains("KillMode=process"), "{example}");
    fs::write(unit_dir.join(SERVICE), example).unwrap();
    fs::write(
        dropin.join("guest.conf"),
        format!(
            "[Service]\nExecStart=\nExecStart={} --config {}\nRestartSec=1\nEnvironment=BERTH_LOG=info\n",
            pods::bin_dir().join("berthd").display(),
            config.display()
        ),
    )
    .unwrap();
    struct UnitFiles(PathBuf, PathBuf);
    impl Drop for UnitFiles {
        fn drop(&mut self) {
            let _ = Command::new("systemctl").args(["stop", SERVICE]).status();
            let _ = fs::remove_dir_all(&self.1);
            let _ = fs::remove_file(&self.0);
            let _ = Command::new("systemctl").arg("daemon-reload").status();
        }
    }
    let _files = UnitFiles(unit_dir.join(SERVICE), dropin.clone());
    sh("systemctl daemon-reload");
    sh(&format!("systemctl start {SERVICE}"));
    let (pid1, mut rt) = wait_berthd(&pods, 0, Duration::from_secs(120)).await;
    assert_eq!(unit_prop(SERVICE, "KillMode"), "process");
    ok(
        t0,
        &format!("berthd as {SERVICE} (KillMode=process), main pid {pid1}"),
    );

    calls::pull(&pods.channel().await, &image.name).await;
    let (parent, slice) = kubelet_slice_path(UID);
    let pod_cfg = pod_config(&pods, "survivor", UID, &parent);
    let pod = calls::run_pod(&mut rt, &pod_cfg, "").await;
    guard.sandbox(&pod);
    let cfg = container_config(
        "survivor",
        &image.name,
        "trap 'exit 0' TERM; while true; do sleep 1; done",
        64 * MIB,
    );
    let c = calls::create_container(&mut rt, &pod, &pod_cfg, cfg)
        .await
        .expect("CreateContainer");
    calls::start_container(&mut rt, &c)
        .await
        .expect("StartContainer");
    let (_, info) = status(&mut rt, &c).await;
    let pid = info["pid"].as_i64().expect("the container's pid");
    let cg = cgroup_of(pid);
    assert_eq!(cg, format!("{parent}/berth-{c}.scope"));
    // Each shim has a scope of its own in system.slice, out of berthd's unit (which
    // `systemctl kill` empties whatever KillMode says); the container and the pause are in
    // their scopes in the pod's slice.
    let shim_pid: i64 = fs::read_to_string(
        pods.state()
            .join("containers")
            .join(&c)
            .join("shim/shim.pid"),
    )
    .expect("the container's shim.pid")
    .trim()
    .parse()
    .unwrap();
    let shim_cg = cgroup_of(shim_pid);
    assert_eq!(
        shim_cg,
        format!("/system.slice/berth-shim-{c}.scope"),
        "the shim's cgroup"
    );
    ok(
        t0,
        &format!(
            "pod and container running: the container in {cg}, its shim in {shim_cg} ({slice})"
        ),
    );

    sh(&format!("systemctl restart {SERVICE}"));
    let (pid2, mut rt) = wait_berthd(&pods, pid1, Duration::from_secs(120)).await;
    assert_adopted(&mut rt, &c, pid, "after systemctl restart").await;
    assert!(pods::alive(shim_pid), "the shim died with the restart");
    ok(t0, &format!("systemctl restart: berthd {pid1} -> {pid2}, the container re-adopted (running, ExecSync)"));

    // berthd killed (kill -9 of its main process, as a crash): Restart=always starts it again.
    sh(&format!("kill -KILL {pid2}"));
    let (pid3, mut rt) = wait_berthd(&pods, pid2, Duration::from_secs(120)).await;
    assert_adopted(&mut rt, &c, pid, "after SIGKILL of berthd").await;
    assert!(pods::alive(shim_pid), "the shim died with berthd");
    ok(t0, &format!("SIGKILL of berthd's main process: restarted {pid2} -> {pid3}, the container re-adopted"));

    // `systemctl kill -s KILL`: every process of berthd's unit (--kill-who=all, the default);
    // the shims are not in it.
    sh(&format!("systemctl kill -s KILL {SERVICE}"));
    let (pid4, mut rt) = wait_berthd(&pods, pid3, Duration::from_secs(120)).await;
    assert!(pods::alive(shim_pid), "the shim died with berthd's unit");
    let (pst, _) = calls::pod_status(&mut rt, &pod).await;
    assert_eq!(
        pst.state,
        cri::PodSandboxState::SandboxReady as i32,
        "the pod after systemctl kill"
    );
    assert_adopted(&mut rt, &c, pid, "after systemctl kill -s KILL").await;
    ok(
        t0,
        &format!("systemctl kill -s KILL {SERVICE}: restarted {pid3} -> {pid4}, the container re-adopted"),
    );

    rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 30,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .expect("RemoveContainer");
    calls::remove_pod(&mut rt, &pod).await;
    sh("systemctl stop kubepods.slice");
    wait_units_gone("teardown after the restarts", |_| true).await;
    assert!(!pods::alive(shim_pid), "the shim outlived RemoveContainer");
    sh(&format!("systemctl stop {SERVICE}"));
    ok(
        t0,
        "teardown after the restarts: no berth- unit left, the shim gone",
    );
}
