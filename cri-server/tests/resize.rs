//! In-place resize through berthd's CRI (root; KEP-1287): a running container's CPU and
//! memory go up and down with UpdateContainerResources without a restart, each change seen in
//! the cgroup files and in ContainerStatus.resources (read back from the cgroup, so a change
//! made behind berthd's back shows too); UpdatePodSandboxResources answers OK, records the
//! pod's resources (verbose PodSandboxStatus) and, for the pod cgroup berth made (a pod
//! without cgroup_parent), applies them plus the overhead, up and down. Written for the
//! cgroupfs driver on a cgroup v1 host (berth's own pod cgroup, `/berth/<pod>`); elsewhere the
//! file checks are skipped.

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::path::{Path, PathBuf};

use calls::{pod_config, remove_pod, Rt};
use cri_api::v1 as cri;

fn can_run(test: &str) -> bool {
    support::can_run(test) && node::binaries_ready(test)
}

/// The cgroup v1 directory of `rel` under `controller`, if this host has that hierarchy.
fn v1_dir(controller: &str, rel: &str) -> Option<PathBuf> {
    let mount = Path::new("/sys/fs/cgroup").join(controller);
    mount
        .join("tasks")
        .exists()
        .then(|| mount.join(rel.trim_start_matches('/')))
}

fn read(dir: &Option<PathBuf>, file: &str) -> Option<String> {
    let dir = dir.as_ref()?;
    Some(
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
            .trim()
            .to_owned(),
    )
}

async fn status(rt: &mut Rt, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
    let r = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).expect("verbose info is JSON");
    (r.status.expect("a status"), info)
}

fn limits(shares: i64, quota: i64, memory: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_shares: shares,
        cpu_quota: quota,
        cpu_period: 100_000,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

async fn update(rt: &mut Rt, id: &str, r: &cri::LinuxContainerResources) {
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.into(),
        linux: Some(r.clone()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources {r:?}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_containers_resize_in_place_and_pod_resources_are_recorded() {
    if !can_run("running_containers_resize_in_place_and_pod_resources_are_recorded") {
        return;
    }
    let (fx, dir, guard, _node, mut rt, _) = calls::busybox_node().await;
    let pod_cfg = pod_config("resize", &dir.path().join("logs"));
    let pod = calls::run_pod(&mut rt, &pod_cfg, "").await;
    guard.sandbox(&pod);

    let mut config = calls::container_config("main", &fx.image, "exec sleep 3600", false, false);
    let first = limits(512, 50_000, 64 << 20);
    config.linux.as_mut().unwrap().resources = Some(first.clone());
    let main = calls::run_container(&mut rt, &pod, &pod_cfg, config).await;

    let (before, info) = status(&mut rt, &main).await;
    assert_eq!(before.state, cri::ContainerState::ContainerRunning as i32);
    let pid = info["pid"].as_i64().expect("a pid");
    let cgroup = format!("/berth/{pod}/{main}");
    let cpu = v1_dir("cpu", &cgroup);
    let memory = v1_dir("memory", &cgroup);

    // Up, down, down again, and the last one repeated (idempotent): each in the files and in
    // the status, the same process running all along.
    for want in [
        limits(2048, 200_000, 128 << 20),
        limits(256, 20_000, 32 << 20),
        limits(128, 10_000, 24 << 20),
        limits(128, 10_000, 24 << 20),
    ] {
        update(&mut rt, &main, &want).await;
        if cpu.is_some() {
            assert_eq!(
                read(&cpu, "cpu.shares").unwrap(),
                want.cpu_shares.to_string()
            );
            assert_eq!(
                read(&cpu, "cpu.cfs_quota_us").unwrap(),
                want.cpu_quota.to_string()
            );
            assert_eq!(read(&cpu, "cpu.cfs_period_us").unwrap(), "100000");
        }
        if memory.is_some() {
            assert_eq!(
                read(&memory, "memory.limit_in_bytes").unwrap(),
                want.memory_limit_in_bytes.to_string()
            );
        }
        let (s, info) = status(&mut rt, &main).await;
        assert_eq!(
            s.state,
            cri::ContainerState::ContainerRunning as i32,
            "{s:?}"
        );
        assert_eq!(info["pid"].as_i64(), Some(pid), "the container restarted");
        assert_eq!(s.started_at, before.started_at, "the container restarted");
        assert_eq!(
            s.metadata, before.metadata,
            "restart count (attempt) changed"
        );
        let got = s.resources.and_then(|r| r.linux).expect("resources");
        assert_eq!(
            (
                got.cpu_shares,
                got.cpu_quota,
                got.cpu_period,
                got.memory_limit_in_bytes
            ),
            (
                want.cpu_shares,
                want.cpu_quota,
                want.cpu_period,
                want.memory_limit_in_bytes
            ),
            "{got:?}"
        );
        // The pod's cpuset, read from the cgroup (berth asked for none).
        if let Some(cpus) = read(&v1_dir("cpuset", &cgroup), "cpuset.cpus") {
            assert_eq!(got.cpuset_cpus, cpus);
        }
    }
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // The status reads the cgroup, not berthd's record: a limit changed behind berthd's back
    // shows (lowered: memory+swap is limited to the 24 MiB asked last).
    if let Some(dir) = &memory {
        std::fs::write(dir.join("memory.limit_in_bytes"), (20u64 << 20).to_string()).unwrap();
        let (s, _) = status(&mut rt, &main).await;
        assert_eq!(
            s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
            20 << 20
        );
    }

    // UpdatePodSandboxResources: OK, twice. This pod has no cgroup_parent, so its cgroup is
    // berth's own (`/berth/<pod>`, which no kubelet sizes): it gets the resources plus the
    // overhead; then smaller. (A kubelet's pod cgroup is left to the kubelet, as containerd
    // does.) The resources are recorded.
    let pod_cgroup = v1_dir("memory", &format!("/berth/{pod}"));
    let pod_cpu = v1_dir("cpu", &format!("/berth/{pod}"));
    let pod_files = || {
        (
            read(&pod_cgroup, "memory.limit_in_bytes"),
            read(&pod_cpu, "cpu.cfs_quota_us"),
            read(&pod_cpu, "cpu.shares"),
        )
    };
    let (_, info) = calls::pod_status(&mut rt, &pod).await;
    assert!(info["resources"].is_null(), "{}", info["resources"]);
    let overhead = limits(64, 5_000, 16 << 20);
    for (resources, want) in [
        (limits(1024, 300_000, 256 << 20), (272 << 20, 305_000, 1088)),
        (limits(512, 200_000, 128 << 20), (144 << 20, 205_000, 576)),
    ] {
        for _ in 0..2 {
            rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.clone(),
                overhead: Some(overhead.clone()),
                resources: Some(resources.clone()),
            })
            .await
            .expect("UpdatePodSandboxResources");
        }
        if pod_cgroup.is_some() {
            let (memory, quota, shares) = want;
            assert_eq!(
                pod_files(),
                (
                    Some(memory.to_string()),
                    Some(quota.to_string()),
                    Some(shares.to_string())
                ),
                "the pod cgroup after {resources:?}"
            );
        }
    }
    let resources = limits(512, 200_000, 128 << 20);
    let (_, info) = calls::pod_status(&mut rt, &pod).await;
    let recorded: cri::LinuxContainerResources =
        serde_json::from_value(info["resources"].clone()).expect("resources recorded");
    assert_eq!(recorded, resources);
    let recorded: cri::LinuxContainerResources =
        serde_json::from_value(info["overhead"].clone()).expect("overhead recorded");
    assert_eq!(recorded, overhead);
    let err = rt
        .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "nosuchpod".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("nosuchpod"), "{err}");
    // The container went on running.
    let (s, info) = status(&mut rt, &main).await;
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(info["pid"].as_i64(), Some(pid));

    // Exited: its cgroup is gone, the limits last applied are reported.
    rt.stop_container(cri::StopContainerRequest {
        container_id: main.clone(),
        timeout: 1,
    })
    .await
    .expect("StopContainer");
    let (s, _) = status(&mut rt, &main).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    let got = s.resources.and_then(|r| r.linux).expect("resources");
    assert_eq!(
        (got.cpu_shares, got.cpu_quota, got.memory_limit_in_bytes),
        (128, 10_000, 24 << 20)
    );
    // Updating an exited container is recorded (nothing to write) and answers OK.
    update(&mut rt, &main, &limits(128, 10_000, 16 << 20)).await;
    let (s, _) = status(&mut rt, &main).await;
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        16 << 20
    );

    remove_pod(&mut rt, &pod).await;
}
