//! The scenario's end: stopping and removing containers, calls on unknown IDs, the pod's
//! stop and removal (each twice).

use crate::observe::*;
use crate::side::*;
use crate::*;

/// StopContainer after the grace period and before it; RemoveContainer of a running one.
pub async fn stops(side: &mut Side<'_>, pod: &str, main: &str) {
    let t0 = side.t0;
    let mut rt = side.rt();
    // Stop: sleep as PID 1 ignores SIGTERM → SIGKILL after the timeout → 137.
    let t = Instant::now();
    let r = rt
        .stop_container(cri::StopContainerRequest {
            container_id: main.to_owned(),
            timeout: 2,
        })
        .await;
    side.rec("main.stop", code(&r));
    side.rec(
        "main.stop waited the grace period",
        (t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(20))
            .to_string(),
    );
    let s = status(side, main).await;
    record_status(side, "main.stopped", &s, t0);
    let r = rt
        .stop_container(cri::StopContainerRequest {
            container_id: main.to_owned(),
            timeout: 2,
        })
        .await;
    side.rec("main.stop again", code(&r));
    let (records, _) = log_records(&side.logs.join("main/0.log"));
    side.rec("main.log", records.join(" | "));

    // A container that exits on SIGTERM: Completed, without waiting for the grace period.
    let polite = create(
        side,
        pod,
        container_config(
            side,
            "polite",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ),
    )
    .await;
    start(side, &polite).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let r = rt
        .stop_container(cri::StopContainerRequest {
            container_id: polite.clone(),
            timeout: 30,
        })
        .await;
    side.rec("polite.stop", code(&r));
    side.rec(
        "polite.stop before the grace period",
        (t.elapsed() < Duration::from_secs(10)).to_string(),
    );
    let s = status(side, &polite).await;
    record_status(side, "polite.stopped", &s, t0);

    // RemoveContainer of a running container removes it by force.
    let doomed = create(
        side,
        pod,
        container_config(side, "doomed", "exec sleep 300"),
    )
    .await;
    start(side, &doomed).await;
    let r = rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: doomed.clone(),
        })
        .await;
    side.rec("doomed.remove while running", code(&r));
    let r = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: doomed.clone(),
            verbose: false,
        })
        .await;
    side.rec("doomed.status after remove", code(&r));
}

/// Calls on unknown IDs.
pub async fn unknown_ids(side: &mut Side<'_>) {
    let unknown = UNKNOWN;
    let mut rt = side.rt();
    let config = pod_config(side);
    // Calls on unknown IDs.
    let r = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: unknown.to_owned(),
            verbose: false,
        })
        .await;
    side.rec("unknown.ContainerStatus", code(&r));
    let r = rt
        .start_container(cri::StartContainerRequest {
            container_id: unknown.to_owned(),
        })
        .await;
    side.rec("unknown.StartContainer", code(&r));
    let r = rt
        .stop_container(cri::StopContainerRequest {
            container_id: unknown.to_owned(),
            timeout: 1,
        })
        .await;
    side.rec("unknown.StopContainer", code(&r));
    let r = rt
        .remove_container(cri::RemoveContainerRequest {
            container_id: unknown.to_owned(),
        })
        .await;
    side.rec("unknown.RemoveContainer", code(&r));
    let r = rt
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: unknown.to_owned(),
        })
        .await;
    side.rec("unknown.ReopenContainerLog", code(&r));
    let r = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: unknown.to_owned(),
            verbose: false,
        })
        .await;
    side.rec("unknown.PodSandboxStatus", code(&r));
    let r = rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: unknown.to_owned(),
        })
        .await;
    side.rec("unknown.StopPodSandbox", code(&r));
    let r = rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: unknown.to_owned(),
        })
        .await;
    side.rec("unknown.RemovePodSandbox", code(&r));
    let mut cfg = container_config(side, "orphan", "true");
    cfg.metadata.as_mut().unwrap().attempt = 1;
    let r = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: unknown.to_owned(),
            config: Some(cfg),
            sandbox_config: Some(config.clone()),
        })
        .await;
    side.rec("unknown.CreateContainer in pod", code(&r));
}

/// Stop twice, then remove twice; the containers go with the pod.
pub async fn teardown(side: &mut Side<'_>, pod: &str, out: &str) {
    let mut rt = side.rt();
    // Teardown: stop twice, then remove twice; the containers go with the pod.
    let r = rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await;
    side.rec("pod.stop", code(&r));
    let r = rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await;
    side.rec("pod.stop again", code(&r));
    let s = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus after stop")
        .into_inner()
        .status
        .unwrap();
    side.rec("pod.stopped.state", pod_state_name(s.state));
    side.rec(
        "pod.stopped.ip",
        format!("{:?}", s.network.map(|n| n.ip.is_empty())),
    );
    list(
        side,
        "list.after pod stop",
        cri::ContainerFilter {
            pod_sandbox_id: pod.to_owned(),
            ..Default::default()
        },
    )
    .await;
    let r = rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await;
    side.rec("pod.remove", code(&r));
    let r = rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        })
        .await;
    side.rec("pod.remove again", code(&r));
    let r = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: false,
        })
        .await;
    side.rec("pod.status after remove", code(&r));
    let r = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: out.to_owned(),
            verbose: false,
        })
        .await;
    side.rec("out.status after pod remove", code(&r));
    list(
        side,
        "list.after pod remove",
        cri::ContainerFilter::default(),
    )
    .await;
    side.rec(
        "out.log kept after pod remove",
        side.logs.join("out/0.log").exists().to_string(),
    );
}
