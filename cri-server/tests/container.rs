//! Containers through berthd's CRI (root): create/start/stop/remove, the CRI log, ExecSync,
//! exit codes and reasons (Completed, Error, OOMKilled), list filters, stats, resource
//! updates, events, a berthd restart that re-adopts running containers, and the runtime run
//! from berthd's sealed copy of its binary.

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calls::{pod_config, remove_pod, Rt};
use cri_api::v1 as cri;
use node::{Leftovers, Node};

fn can_run(test: &str) -> bool {
    support::can_run(test) && node::binaries_ready(test)
}

/// RunPodSandbox, with the pod left to the guard if the test fails.
async fn run_pod(rt: &mut Rt, config: &cri::PodSandboxConfig, guard: &Leftovers) -> String {
    let id = calls::run_pod(rt, config, "").await;
    guard.sandbox(&id);
    id
}

/// A container of the test's hostNetwork pod, without stdin or TTY.
fn container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    calls::container_config(name, image, script, false, false)
}

async fn create(
    rt: &mut Rt,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    calls::create_container(rt, pod, pod_config, config)
        .await
        .expect("CreateContainer")
}

async fn start(rt: &mut Rt, id: &str) {
    calls::start_container(rt, id)
        .await
        .expect("StartContainer");
}

async fn status(rt: &mut Rt, id: &str) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
}

async fn wait_exited(rt: &mut Rt, id: &str, timeout: Duration) -> cri::ContainerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(rt, id).await;
        if s.state == cri::ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} still {:?}", s.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exec(
    rt: &mut Rt,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

async fn stop(rt: &mut Rt, id: &str, timeout: i64) {
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout,
    })
    .await
    .expect("StopContainer");
}

async fn list(rt: &mut Rt, filter: cri::ContainerFilter) -> Vec<String> {
    rt.list_containers(cri::ListContainersRequest {
        filter: Some(filter),
    })
    .await
    .expect("ListContainers")
    .into_inner()
    .containers
    .into_iter()
    .map(|c| c.id)
    .collect()
}

/// The CRI log's `(stream, tag, line)` records.
fn log_records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next()?;
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                "bad timestamp in {l:?}"
            );
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

fn snapshot_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether ContainerStats should carry pressure stall information here: on a cgroup v2 host
/// whose kernel has PSI. On cgroup v1 (hybrid hosts too, although the unified side has
/// pressure files) it is absent, not zero.
fn psi_expected() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && Path::new("/proc/pressure/cpu").exists()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn read_pid(path: PathBuf) -> i32 {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_lifecycle_logs_exec_stop_oom_remove() {
    if !can_run("container_lifecycle_logs_exec_stop_oom_remove") {
        return;
    }
    let (fx, dir, guard, node, mut rt, image_id) = calls::busybox_node().await;
    let logs = dir.path().join("logs");
    let pod_cfg = pod_config("lifecycle", &logs);
    let pod = run_pod(&mut rt, &pod_cfg, &guard).await;
    let root = dir.path().join("root");

    // Events from here on.
    let mut events = calls::events(&mut rt).await;

    // Errors first: unknown image, unknown sandbox.
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("nope", "127.0.0.1:1/none:v1", "true")),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("127.0.0.1:1/none:v1"),
        "{}",
        err.message()
    );
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "f".repeat(64),
            config: Some(container_config("nope", &fx.image, "true")),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    let snapshots_before = snapshot_count(&root);
    let main = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", &fx.image, "echo hi; echo err >&2; exec sleep 300"),
    )
    .await;
    assert_eq!(main.len(), 64);
    // The name is reserved.
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("main", &fx.image, "true")),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");

    let s = status(&mut rt, &main).await;
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert!(s.created_at > 0 && s.started_at == 0);
    assert_eq!(s.image_id, image_id);
    start(&mut rt, &main).await;
    let s = status(&mut rt, &main).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "{s:?}"
    );
    assert!(s.started_at >= s.created_at);
    let log = logs.join("main/0.log");
    assert_eq!(PathBuf::from(&s.log_path), log);
    assert_eq!(s.labels["app"], "main");

    // The CRI log.
    let ok = node::wait_until(Duration::from_secs(10), || {
        let log = log.clone();
        async move { log_records(&log).len() >= 2 }
    })
    .await;
    let records = log_records(&log);
    assert!(ok, "log {records:?}");
    assert!(
        records.contains(&("stdout".into(), "F".into(), "hi".into())),
        "{records:?}"
    );
    assert!(
        records.contains(&("stderr".into(), "F".into(), "err".into())),
        "{records:?}"
    );

    // ExecSync: output, exit codes, timeout.
    let r = exec(&mut rt, &main, &["echo", "x"], 10)
        .await
        .expect("exec echo");
    assert_eq!(
        (r.stdout.as_slice(), r.exit_code),
        (&b"x\n"[..], 0),
        "{r:?}"
    );
    let r = exec(&mut rt, &main, &["sh", "-c", "echo e >&2; exit 3"], 10)
        .await
        .expect("exec exit 3");
    assert_eq!(
        (r.stderr.as_slice(), r.exit_code),
        (&b"e\n"[..], 3),
        "{r:?}"
    );
    let t0 = Instant::now();
    let err = exec(&mut rt, &main, &["sleep", "30"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("timeout"), "{}", err.message());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // Verbose status names the pid; list filters.
    let verbose = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: main[..12].into(),
            verbose: true,
        })
        .await
        .expect("status by prefix")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let pid = info["pid"].as_i64().unwrap() as i32;
    assert!(pid > 0 && alive(pid), "{info}");
    assert!(info["runtimeSpec"]["process"].is_object());
    let running = Some(cri::ContainerStateValue {
        state: cri::ContainerState::ContainerRunning as i32,
    });
    assert_eq!(
        list(
            &mut rt,
            cri::ContainerFilter {
                id: main[..8].into(),
                ..Default::default()
            }
        )
        .await,
        vec![main.clone()]
    );
    assert_eq!(
        list(
            &mut rt,
            cri::ContainerFilter {
                state: running,
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }
        )
        .await,
        vec![main.clone()]
    );
    let by_label = cri::ContainerFilter {
        label_selector: HashMap::from([("app".to_owned(), "other".to_owned())]),
        ..Default::default()
    };
    assert!(list(&mut rt, by_label).await.is_empty());

    // Stats and resources.
    let stats = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: main.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    let cpu = stats.cpu.unwrap();
    let memory = stats.memory.unwrap();
    assert!(cpu.usage_core_nano_seconds.unwrap().value > 0);
    assert!(memory.usage_bytes.unwrap().value > 0);
    assert!(stats.writable_layer.is_some());
    for (what, present) in [
        ("cpu.psi", cpu.psi.is_some()),
        ("memory.psi", memory.psi.is_some()),
        ("io", stats.io.is_some()),
    ] {
        assert_eq!(present, psi_expected(), "{what}: {stats:?}");
    }
    if let Some(io) = &stats.io {
        assert!(io.psi.as_ref().unwrap().some.is_some(), "{io:?}");
    }
    // The first sample has no CPU rate; the next (ListContainerStats, later) has one. Swap is
    // reported (zero used here: these hosts have no swap).
    assert!(cpu.usage_nano_cores.is_none(), "{cpu:?}");
    let swap = stats.swap.expect("swap usage");
    assert!(swap.swap_usage_bytes.is_some(), "{swap:?}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let all = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    assert!(
        all[0].cpu.as_ref().unwrap().usage_nano_cores.is_some(),
        "a rate from the second sample: {:?}",
        all[0].cpu
    );
    assert_eq!(all[0].cpu.as_ref().unwrap().psi.is_some(), psi_expected());
    assert_eq!(all[0].io.is_some(), psi_expected());
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: main.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    let limit = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/berth/{pod}/{main}/memory.limit_in_bytes"
    ));
    if let Ok(limit) = limit {
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
    }
    let s = status(&mut rt, &main).await;
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        64 << 20
    );
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: main.clone(),
    })
    .await
    .expect("ReopenContainerLog");

    // Stop: sh as PID 1 ignores SIGTERM → SIGKILL after the timeout, 137, Error.
    let t0 = Instant::now();
    stop(&mut rt, &main, 2).await;
    let stopped_after = t0.elapsed();
    let s = status(&mut rt, &main).await;
    assert!(
        stopped_after >= Duration::from_secs(2),
        "{stopped_after:?} {s:?}"
    );
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
    assert!(s.finished_at >= s.started_at);
    stop(&mut rt, &main, 2).await; // idempotent
    let err = rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: main.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = exec(&mut rt, &main, &["true"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // A process that exits on SIGTERM: 0, Completed.
    let polite = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config(
            "polite",
            &fx.image,
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ),
    )
    .await;
    start(&mut rt, &polite).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    stop(&mut rt, &polite, 20).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let s = status(&mut rt, &polite).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");

    // OOM: 16 MiB and tail /dev/zero.
    let mut oom_cfg = container_config("oom", &fx.image, "exec tail /dev/zero");
    oom_cfg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let oom = create(&mut rt, &pod, &pod_cfg, oom_cfg).await;
    start(&mut rt, &oom).await;
    let s = wait_exited(&mut rt, &oom, Duration::from_secs(60)).await;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "OOMKilled"),
        "{s:?}"
    );

    // Remove: nothing of it is left.
    let c_dir = dir
        .path()
        .join(pods::STATE_DIR)
        .join("containers")
        .join(&main);
    let shim_pid = read_pid(c_dir.join("shim/shim.pid"));
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: main.clone(),
    })
    .await
    .expect("RemoveContainer");
    assert!(!c_dir.exists(), "{} left", c_dir.display());
    assert!(!root.join(format!("cri/containers/{main}.json")).exists());
    assert!(node::mounts_under(&c_dir).is_empty());
    assert!(!alive(shim_pid), "shim {shim_pid} still runs");
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/berth/{pod}/{main}")).exists());
    let err = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: main.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: main.clone(),
    })
    .await
    .expect("RemoveContainer of an unknown ID succeeds");
    assert!(log.exists(), "the log stays for the kubelet");

    // Events of `main`, in order.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let Some(e) = calls::next_event(&mut events, Duration::from_secs(5), |e| {
            e.container_id == main
        })
        .await
        else {
            break;
        };
        seen.push(e.container_event_type);
    }
    use cri::ContainerEventType as E;
    assert_eq!(
        seen,
        [
            E::ContainerCreatedEvent,
            E::ContainerStartedEvent,
            E::ContainerStoppedEvent,
            E::ContainerDeletedEvent
        ]
        .map(|e| e as i32)
    );

    // An open event stream would hold berthd's graceful shutdown.
    drop(events);

    // The pod's stop and removal take the other containers with them.
    remove_pod(&mut rt, &pod).await;
    assert!(list(&mut rt, cri::ContainerFilter::default())
        .await
        .is_empty());
    assert_eq!(snapshot_count(&root), snapshots_before);
    assert!(
        node::mounts_under(dir.path()).is_empty(),
        "{:?}",
        node::mounts_under(dir.path())
    );
    node.stop().await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn berthd_restart_readopts_containers() {
    if !can_run("berthd_restart_readopts_containers") {
        return;
    }
    let (fx, dir, guard, node, mut rt, _) = calls::busybox_node().await;
    let logs = dir.path().join("logs");
    let pod_cfg = pod_config("restart", &logs);
    let pod = run_pod(&mut rt, &pod_cfg, &guard).await;

    let long = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("long", &fx.image, "sleep 5; exit 7"),
    )
    .await;
    let short = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("short", &fx.image, "sleep 1; exit 5"),
    )
    .await;
    start(&mut rt, &long).await;
    start(&mut rt, &short).await;
    let long_pid = read_pid(
        dir.path()
            .join(pods::STATE_DIR)
            .join(format!("containers/{long}/shim/init.pid")),
    );
    node.stop().await;
    drop(rt);

    // `short` exits while berthd is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(long_pid), "containers outlive berthd");
    let node = Node::start(dir.path(), &[fx.host()]).await;
    let mut rt = Rt::new(node.channel.clone());
    let s = status(&mut rt, &short).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    assert_eq!((s.exit_code, s.reason.as_str()), (5, "Error"));
    let s = status(&mut rt, &long).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "{s:?}"
    );
    let r = exec(&mut rt, &long, &["echo", "still"], 10)
        .await
        .expect("exec after restart");
    assert_eq!(r.stdout, b"still\n");
    let s = wait_exited(&mut rt, &long, Duration::from_secs(20)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"), "{s:?}");

    remove_pod(&mut rt, &pod).await;
    assert!(list(&mut rt, cri::ContainerFilter::default())
        .await
        .is_empty());
    assert!(node::mounts_under(dir.path()).is_empty());
    node.stop().await;
    drop(guard);
}

/// The descriptors `ls -l /proc/PID/fd` printed (`… N -> target` lines), in order.
fn fd_numbers(lines: &[String]) -> Vec<u32> {
    let mut fds: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.split_once(" -> ")?.0.rsplit(' ').next()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// berthd hands the shim its sealed memfd copy of berth-runtime (`--runtime-copy`), and the
/// runtime's `create` runs from it: the container's init, a fork of that runtime process,
/// runs from the copy (sealed exactly as runc checks) until it execs the container's process.
/// Neither the container nor its shim keeps the descriptor, and ExecSync (berthd running the
/// runtime from the copy itself) works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_runs_the_runtime_from_berthds_sealed_copy() {
    if !can_run("create_runs_the_runtime_from_berthds_sealed_copy") {
        return;
    }
    let (fx, dir, guard, node, mut rt, _) = calls::busybox_node().await;
    let logs = dir.path().join("logs");
    let pod_cfg = pod_config("sealed", &logs);
    let pod = run_pod(&mut rt, &pod_cfg, &guard).await;
    let id = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("fds", &fx.image, "ls -l /proc/$$/fd; exec sleep 300"),
    )
    .await;
    let shim_dir = dir
        .path()
        .join(pods::STATE_DIR)
        .join(format!("containers/{id}/shim"));

    // Created, not started: the init is still the runtime's code, waiting for `start`.
    let init_pid = read_pid(shim_dir.join("init.pid"));
    let exe = std::fs::read_link(format!("/proc/{init_pid}/exe")).expect("init's exe");
    assert!(
        exe.to_string_lossy()
            .starts_with("/memfd:berthd:berth-runtime"),
        "the runtime ran from {exe:?}, not berthd's copy"
    );
    let exe = std::fs::File::open(format!("/proc/{init_pid}/exe")).unwrap();
    let seals = nix::fcntl::fcntl(&exe, nix::fcntl::FcntlArg::F_GET_SEALS).expect("a memfd");
    assert_eq!(
        nix::fcntl::SealFlag::from_bits_truncate(seals),
        berth_runtime::process::sealed_exe::REQUIRED_SEALS
    );
    drop(exe);
    // The shim closed its copy once `create` returned.
    let shim_pid = read_pid(shim_dir.join("shim.pid"));
    let shim_fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{shim_pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    assert!(
        !shim_fds
            .iter()
            .any(|l| l.to_string_lossy().starts_with("/memfd:")),
        "the shim still holds the copy: {shim_fds:?}"
    );

    // The container's process has stdio and nothing else.
    start(&mut rt, &id).await;
    let log = logs.join("fds/0.log");
    let ok = node::wait_until(Duration::from_secs(10), || {
        let log = log.clone();
        async move { log_records(&log).len() >= 4 }
    })
    .await;
    let records = log_records(&log);
    assert!(ok, "log {records:?}");
    let lines: Vec<String> = records.into_iter().map(|(_, _, l)| l).collect();
    assert_eq!(fd_numbers(&lines), [0, 1, 2], "{lines:?}");

    // ExecSync runs the runtime from berthd's copy; the exec'd process has only its stdio.
    // (`; true`: a lone command would be exec'd by sh, listing the ls's own directory fd.)
    let r = exec(&mut rt, &id, &["sh", "-c", "ls -l /proc/$$/fd; true"], 10)
        .await
        .expect("exec ls");
    assert_eq!(r.exit_code, 0, "{r:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(fd_numbers(&lines), [0, 1, 2], "{lines:?}");

    remove_pod(&mut rt, &pod).await;
    assert!(node::mounts_under(dir.path()).is_empty());
    node.stop().await;
    drop(guard);
}
