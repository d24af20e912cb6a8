//! The scenario's first phases, run the same way against each runtime: the pod, containers
//! that run to their end, a running container (exec, what it sees).

use crate::observe::*;
use crate::side::*;
use crate::*;

/// Pulls the image, runs the pod and records its status, list and network.
pub async fn run_pod(side: &mut Side<'_>) -> String {
    let t0 = side.t0;
    let mut rt = side.rt();
    // Pull.
    let image_ref = ImageServiceClient::new(side.channel.clone())
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: side.image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{}: PullImage: {e:?}", side.name))
        .into_inner()
        .image_ref;
    side.rec("image.pull_ref", &image_ref);

    // The pod.
    let config = pod_config(side);
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e:?}", side.name))
        .into_inner()
        .pod_sandbox_id;
    side.name_id(&pod, "pod");
    let ps = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("{}: PodSandboxStatus: {e:?}", side.name))
        .into_inner();
    if let Some(reg) = side.netns {
        // containerd names the pod's netns in its spec; register it for cleanup.
        if let Some(info) = ps.info.get("info") {
            let v: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
            for ns in v["runtimeSpec"]["linux"]["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if ns["type"] == "network" {
                    if let Some(p) = ns["path"].as_str() {
                        reg.lock().unwrap().push(PathBuf::from(p));
                    }
                }
            }
        }
    }
    let s = ps.status.expect("pod status");
    side.rec("pod.state", pod_state_name(s.state));
    side.rec("pod.metadata", format!("{:?}", s.metadata));
    side.rec("pod.labels", format!("{:?}", sorted(&s.labels)));
    side.rec("pod.annotations", format!("{:?}", sorted(&s.annotations)));
    side.rec(
        "pod.created_at in window",
        (s.created_at >= t0 && s.created_at <= chrono::Utc::now().timestamp_nanos_opt().unwrap())
            .to_string(),
    );
    let ip = s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    side.rec(
        "pod.ip",
        if ip.starts_with(&format!("{}.", side.subnet)) {
            "in the test's /24".to_owned()
        } else {
            format!("unexpected {ip:?}")
        },
    );
    side.rec(
        "pod.additional_ips",
        format!("{:?}", s.network.as_ref().map(|n| &n.additional_ips)),
    );
    side.rec(
        "pod.namespaces",
        format!(
            "{:?}",
            s.linux
                .as_ref()
                .and_then(|l| l.namespaces.as_ref())
                .and_then(|n| n.options.as_ref())
        ),
    );
    side.rec("pod.runtime_handler", &s.runtime_handler);
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: HashMap::from([("app".to_owned(), "cmp".to_owned())]),
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    side.rec(
        "pod.list ready app=cmp",
        pods.iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );

    pod
}

/// Containers that run to their end: output and exit 0, exit 3, OOM; their logs. Each runs
/// for a while: both runtimes stamp started_at when the start call returns but finished_at
/// from the exit, so a container that exits at once may look finished before it started.
pub async fn run_to_end(side: &mut Side<'_>, pod: &str) -> String {
    let t0 = side.t0;
    // Containers that run to their end: output and exit 0, exit 3, OOM.
    let out = create(
        side,
        pod,
        container_config(
            side,
            "out",
            "sleep 1; echo hi; echo err >&2; s=0123456789abcdef; for i in 1 2 3 4 5 6 7 8 9 10 11; do s=$s$s; done; echo ${s}12345; printf tail",
        ),
    )
    .await;
    let s = status(side, &out).await;
    record_status(side, "out.created", &s, t0);
    start(side, &out).await;
    let fail = create(
        side,
        pod,
        container_config(side, "fail", "sleep 1; echo bye; exit 3"),
    )
    .await;
    start(side, &fail).await;
    let mut oom_cfg = container_config(side, "oom", "exec tail /dev/zero");
    if let Some(r) = oom_cfg.linux.as_mut().unwrap().resources.as_mut() {
        r.memory_limit_in_bytes = 16 << 20;
    }
    let oom = create(side, pod, oom_cfg).await;
    start(side, &oom).await;
    for (name, id) in [("out", &out), ("fail", &fail), ("oom", &oom)] {
        let s = wait_exited(side, id).await;
        record_status(side, &format!("{name}.exited"), &s, t0);
    }
    // The order of records across stdout and stderr is a race; within a stream it is not.
    let (records, ts_ok) = log_records(&side.logs.join("out/0.log"));
    for stream in ["stdout", "stderr"] {
        let of_stream: Vec<&str> = records
            .iter()
            .filter(|r| r.starts_with(stream))
            .map(String::as_str)
            .collect();
        side.rec(&format!("out.log {stream}"), of_stream.join(" | "));
    }
    side.rec("out.log timestamps", ts_ok.to_string());
    let (records, _) = log_records(&side.logs.join("fail/0.log"));
    side.rec("fail.log", records.join(" | "));

    out
}

/// A running container: exec, and what it sees of itself.
pub async fn run_main(side: &mut Side<'_>, pod: &str, out: &str) -> String {
    let t0 = side.t0;
    let unknown = UNKNOWN;
    // A running container: exec, what it sees, stats, lists.
    let main = create(
        side,
        pod,
        container_config(side, "main", "echo ready; exec sleep 300"),
    )
    .await;
    start(side, &main).await;
    let s = status(side, &main).await;
    record_status(side, "main.running", &s, t0);
    exec(side, "exec.echo", &main, &["echo", "x"], 10).await;
    exec(
        side,
        "exec.exit3",
        &main,
        &["sh", "-c", "echo e >&2; exit 3"],
        10,
    )
    .await;
    let t = Instant::now();
    exec(side, "exec.timeout", &main, &["sleep", "30"], 1).await;
    side.rec(
        "exec.timeout bounded",
        (t.elapsed() < Duration::from_secs(10)).to_string(),
    );
    exec(side, "exec.missing binary", &main, &["/nonexistent"], 10).await;
    exec(side, "exec.unknown container", unknown, &["true"], 10).await;
    exec(side, "exec.exited container", out, &["true"], 10).await;
    exec(side, "see.hostname", &main, &["cat", "/etc/hostname"], 10).await;
    exec(
        side,
        "see.resolv.conf",
        &main,
        &["cat", "/etc/resolv.conf"],
        10,
    )
    .await;
    exec(side, "see.id", &main, &["id"], 10).await;
    exec(side, "see.pwd", &main, &["sh", "-c", "pwd"], 10).await;
    exec(
        side,
        "see.ulimit",
        &main,
        &["sh", "-c", "ulimit -n; ulimit -Hn"],
        10,
    )
    .await;
    exec(
        side,
        "see.oom_score_adj",
        &main,
        &["cat", "/proc/self/oom_score_adj"],
        10,
    )
    .await;
    let st = exec(side, "raw.status", &main, &["cat", "/proc/self/status"], 10).await;
    side.obs.remove("raw.status");
    side.rec("see.security", proc_status_security(&st));
    let m = exec(side, "raw.mounts", &main, &["cat", "/proc/self/mounts"], 10).await;
    side.obs.remove("raw.mounts");
    for (point, view) in mounts_view(&m) {
        side.rec(&format!("see.mount {point}"), view);
    }
    let d = exec(side, "raw.dev", &main, &["ls", "-a", "/dev"], 10).await;
    side.obs.remove("raw.dev");
    let mut devs: Vec<&str> = d.split_whitespace().collect();
    devs.sort();
    side.rec("see.dev", devs.join(" "));
    let e = exec(side, "raw.env", &main, &["cat", "/proc/self/environ"], 10).await;
    side.obs.remove("raw.env");
    let mut env: Vec<&str> = e.split('\0').filter(|s| !s.is_empty()).collect();
    env.sort();
    side.rec("see.env", env.join(" "));

    // Its cgroup as it sees it (v1 here: its own cgroup dirs are bound at the controllers'
    // mount points), before and after UpdateContainerResources; ReopenContainerLog.
    let cgroup_files = [
        "/sys/fs/cgroup/cpu/cpu.shares",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ];
    exec(
        side,
        "see.cgroup",
        &main,
        &[&["cat"][..], &cgroup_files].concat(),
        10,
    )
    .await;
    let r = side
        .rt()
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: main.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 512,
                memory_limit_in_bytes: 64 << 20,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    side.rec("main.update resources", code(&r));
    exec(
        side,
        "see.cgroup after update",
        &main,
        &[&["cat"][..], &cgroup_files].concat(),
        10,
    )
    .await;
    let r = side
        .rt()
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: main.clone(),
        })
        .await;
    side.rec("main.reopen log", code(&r));
    let r = side
        .rt()
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: out.to_owned(),
        })
        .await;
    side.rec("out.reopen log of an exited container", code(&r));

    main
}
