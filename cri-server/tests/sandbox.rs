//! Pod sandboxes through berthd's CRI (root): RunPodSandbox with a real netns, CNI (berth's
//! bridge on a test-owned bridge and /24) and a pause under berth-shim; status, list, stop,
//! remove (nothing left behind), errors, and re-adoption after a berthd restart.

#[path = "support/pods.rs"]
mod pods;
mod support;

use std::path::{Path, PathBuf};

use cri_api::v1 as cri;
use pods::{alive, can_run, cgroup_dirs, host_network_pod, is_mounted, pod, Pods};
use tonic::Code;

type Client = cri_api::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

async fn run(
    rt: &mut Client,
    config: cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: handler.into(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(rt: &mut Client, id: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
    let r = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).unwrap();
    (r.status.unwrap(), info)
}

async fn list(rt: &mut Client, filter: cri::PodSandboxFilter) -> Vec<cri::PodSandbox> {
    rt.list_pod_sandbox(cri::ListPodSandboxRequest {
        filter: Some(filter),
    })
    .await
    .unwrap()
    .into_inner()
    .items
}

async fn stop(rt: &mut Client, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

async fn remove(rt: &mut Client, id: &str) {
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOT_READY: i32 = cri::PodSandboxState::SandboxNotready as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_stop_remove() {
    if !can_run("run_status_stop_remove") {
        return;
    }
    let pods = Pods::start(1).await;
    let mut rt = pods.client().await;

    // The test network's plugins are found: NetworkReady.
    let conds = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions;
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(net.status, "{net:?}");

    // Ready, with an IP of the test subnet, a live pause and a pinned netns.
    let a = run(&mut rt, pod("a"), "").await.unwrap();
    assert_eq!(a.len(), 64);
    let (st, info) = status(&mut rt, &a).await;
    assert_eq!(st.state, READY);
    assert!(st.created_at > 0);
    assert_eq!(st.runtime_handler, "berth");
    assert_eq!(st.labels["app"], "a");
    assert_eq!(st.annotations["note"], "pod a");
    assert_eq!(st.metadata.as_ref().unwrap().name, "a");
    let ip_a = st.network.unwrap().ip;
    assert!(ip_a.starts_with(&format!("{}.", pods.net.prefix)), "{ip_a}");
    let pid = info["pid"].as_i64().unwrap();
    assert!(alive(pid), "pause {pid} runs");
    let netns = PathBuf::from(info["netNamespacePath"].as_str().unwrap());
    assert!(netns.starts_with(pods.state()) && is_mounted(&netns));
    assert!(info["runtimeSpec"]["process"]["args"].is_array(), "{info}");
    // The pause is in that netns, and the pod files are as asked.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        std::fs::read_link(format!("/proc/{pid}/task/{pid}/ns/net")).unwrap()
    );
    let dir = pods.state().join("sandboxes").join(&a);
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("ndots:5"),
        "{resolv}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        "a\n"
    );
    assert!(is_mounted(&dir.join("shm")));
    assert_eq!(pods.net.ports().len(), 1, "one veth on the bridge");
    let shim_pid: i64 = std::fs::read_to_string(dir.join("shim/shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A second pod gets another IP; the same name again is AlreadyExists; a bad handler is
    // InvalidArgument; a host-network pod has no netns and no pod IP.
    let b = run(&mut rt, pod("b"), "berth").await.unwrap();
    let ip_b = status(&mut rt, &b).await.0.network.unwrap().ip;
    assert!(
        ip_b.starts_with(&format!("{}.", pods.net.prefix)) && ip_b != ip_a,
        "{ip_b}"
    );
    let err = run(&mut rt, pod("a"), "").await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("test/a"), "{}", err.message());
    let err = run(&mut rt, pod("c"), "no-such-handler").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("no-such-handler"),
        "{}",
        err.message()
    );
    let err = run(&mut rt, cri::PodSandboxConfig::default(), "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let h = run(&mut rt, host_network_pod("h"), "").await.unwrap();
    let (st, info) = status(&mut rt, &h).await;
    assert_eq!(st.state, READY);
    assert!(
        st.network.is_none() && info["netNamespacePath"].is_null(),
        "{info}"
    );
    let hpid = info["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{hpid}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(pods.net.ports().len(), 2);

    // List and its filters: ID prefix, state, labels.
    assert_eq!(list(&mut rt, Default::default()).await.len(), 3);
    let by_prefix = list(
        &mut rt,
        cri::PodSandboxFilter {
            id: a[..12].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_prefix.len(), 1);
    assert_eq!(by_prefix[0].id, a);
    let by_label = list(
        &mut rt,
        cri::PodSandboxFilter {
            label_selector: [("app".to_owned(), "b".to_owned())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, b);

    // Stats from the pod cgroup and the netns.
    let s = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: a.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = s.linux.unwrap();
    // Pressure stall information: cgroup v2's (with PSI in the kernel); absent on v1.
    let psi = Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && Path::new("/proc/pressure/cpu").exists();
    let memory = linux.memory.unwrap();
    let cpu = linux.cpu.unwrap();
    assert!(memory.working_set_bytes.is_some());
    assert!(cpu.usage_core_nano_seconds.is_some());
    assert_eq!(
        (cpu.psi.is_some(), memory.psi.is_some(), linux.io.is_some()),
        (psi, psi, psi)
    );
    assert_eq!(
        linux.network.unwrap().default_interface.unwrap().name,
        "eth0"
    );

    // Stop: NotReady, still listed, idempotent; the pause is gone, and so are the netns and
    // the veth.
    stop(&mut rt, &a).await;
    stop(&mut rt, &a).await;
    let (st, _) = status(&mut rt, &a).await;
    assert_eq!(st.state, NOT_READY);
    // Its IP went back to IPAM: none is reported (as containerd).
    assert_eq!(st.network.unwrap().ip, "");
    assert!(!alive(pid));
    assert!(!netns.exists());
    assert!(!is_mounted(&dir.join("shm")));
    assert_eq!(pods.net.ports().len(), 1, "a's veth is gone");
    let not_ready = list(
        &mut rt,
        cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: NOT_READY }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(not_ready.iter().map(|p| &p.id).collect::<Vec<_>>(), [&a]);

    // Remove: nothing of it is left; again, and an unknown ID, are fine.
    remove(&mut rt, &a).await;
    remove(&mut rt, &a).await;
    remove(&mut rt, &"0".repeat(64)).await;
    stop(&mut rt, &"0".repeat(64)).await;
    let err = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: a.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!dir.exists(), "state dir removed");
    assert!(!pods
        .config
        .root
        .join("cri/sandboxes")
        .join(format!("{a}.json"))
        .exists());
    assert!(
        cgroup_dirs(&a).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&a)
    );
    assert!(!alive(shim_pid), "shim gone");
    // The name is free again.
    let a2 = run(&mut rt, pod("a"), "").await.unwrap();

    // Remove of a Ready pod stops it first.
    for id in [&a2, &b, &h] {
        remove(&mut rt, id).await;
        assert!(cgroup_dirs(id).is_empty());
    }
    assert!(list(&mut rt, Default::default()).await.is_empty());
    assert!(pods.net.ports().is_empty());
    let left: Vec<_> = std::fs::read_dir(pods.state().join("netns"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_readopts_sandboxes() {
    if !can_run("restart_readopts_sandboxes") {
        return;
    }
    let mut pods = Pods::start(2).await;
    let mut rt = pods.client().await;
    let a = run(&mut rt, pod("r1"), "").await.unwrap();
    let b = run(&mut rt, pod("r2"), "").await.unwrap();
    let (_, info) = status(&mut rt, &b).await;
    let pid_b = info["pid"].as_i64().unwrap();
    let ip_a = status(&mut rt, &a).await.0.network.unwrap().ip;
    drop(rt);

    // While berthd is down, b's pause dies.
    pods.stop_server().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_b as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exit = pods
        .state()
        .join("sandboxes")
        .join(&b)
        .join("shim/exit.json");
    for _ in 0..250 {
        if exit.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(exit.exists(), "the shim recorded the exit");
    pods.start_server().await;
    let mut rt = pods.client().await;
    let all = list(&mut rt, Default::default()).await;
    assert_eq!(all.len(), 2);
    let (st, _) = status(&mut rt, &a).await;
    assert_eq!(st.state, READY);
    assert_eq!(st.network.unwrap().ip, ip_a);
    assert_eq!(status(&mut rt, &b).await.0.state, NOT_READY);
    // The name is still taken after the restart.
    let err = run(&mut rt, pod("r1"), "").await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    for id in [&a, &b] {
        remove(&mut rt, id).await;
        assert!(cgroup_dirs(id).is_empty());
    }
    assert!(list(&mut rt, Default::default()).await.is_empty());
    assert!(pods.net.ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_is_undone_and_pods_start_in_parallel() {
    if !can_run("failed_start_is_undone_and_pods_start_in_parallel") {
        return;
    }
    let pods = Pods::start(3).await;
    let mut rt = pods.client().await;

    // The runtime fails to create the pause: netns, CNI attachment, shm, files and the name
    // are all released.
    let err = run(&mut rt, pod("f"), "broken").await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("test/f"), "{}", err.message());
    let sandboxes = pods.state().join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let netns: Vec<_> = std::fs::read_dir(pods.state().join("netns"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "{netns:?}");
    assert!(pods.net.ports().is_empty());
    assert!(list(&mut rt, Default::default()).await.is_empty());
    let ok = run(&mut rt, pod("f"), "").await.unwrap();
    remove(&mut rt, &ok).await;

    // Eight pods at once: all Ready with distinct IPs; then removed at once.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            run(&mut rt, pod(&format!("p{i}")), "").await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("parallel RunPodSandbox"));
    }
    let mut ips = std::collections::HashSet::new();
    for id in &ids {
        let (st, _) = status(&mut rt, id).await;
        assert_eq!(st.state, READY);
        assert!(ips.insert(st.network.unwrap().ip));
    }
    assert_eq!(pods.net.ports().len(), 8);
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let mut rt = rt.clone();
        tasks.push(tokio::spawn(async move { remove(&mut rt, &id).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(list(&mut rt, Default::default()).await.is_empty());
    assert!(pods.net.ports().is_empty());
    for id in &ids {
        assert!(cgroup_dirs(id).is_empty());
    }
}
