//! Pods on their own network (CNI on a test bridge) with busybox containers (root):
//! cAdvisor-named metrics (ListPodSandboxMetrics), PodSandboxStatus with its containers'
//! statuses, and GetContainerEvents carrying the pod's and the containers' statuses.

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use calls::{run_container, run_pod, shell_container as container, Busybox};
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use node::Leftovers;

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOT_READY: i32 = cri::PodSandboxState::SandboxNotready as i32;

/// Held by the 50-pod burst, and by the test that measures how soon exits are seen: on a
/// 2-CPU machine the burst delays everything else by up to a second, which says nothing about
/// how exits are noticed. The other tests of this file run beside either.
static BURST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn can_run(test: &str) -> bool {
    support::can_run(test) && pods::can_run(test)
}

/// The labels of a metric as a map (checked against its descriptor).
fn labels(descriptors: &[cri::MetricDescriptor], m: &cri::Metric) -> HashMap<String, String> {
    let d = descriptors
        .iter()
        .find(|d| d.name == m.name)
        .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
    assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
    d.label_keys
        .iter()
        .cloned()
        .zip(m.label_values.iter().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_statuses_and_events_of_a_networked_pod() {
    let test = "metrics_statuses_and_events_of_a_networked_pod";
    if !can_run(test) {
        return;
    }
    let fx = Busybox::push();
    let (pods, guard, mut rt) = calls::pods_pulling(11, fx.host(), &[&fx.image]).await;
    let mut events = calls::events(&mut rt).await;

    let pod_config = pods::pod("metrics");
    let pod = run_pod(&mut rt, &pod_config, "").await;
    guard.sandbox(&pod);
    // Writes a copy of busybox into the writable layer, then waits.
    let app = run_container(
        &mut rt,
        &pod,
        &pod_config,
        container("app", &fx.image, "cat /bin/busybox > /big; sleep 300"),
    )
    .await;

    // Traffic into the pod: datagrams to its IP (nothing listens; they are received anyway).
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let ip = st
        .status
        .as_ref()
        .unwrap()
        .network
        .as_ref()
        .unwrap()
        .ip
        .clone();
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..20 {
        udp.send_to(&[7u8; 200], (ip.as_str(), 9)).unwrap();
    }

    // PodSandboxStatus: the containers' statuses with the pod's, and when they were taken.
    assert!(st.timestamp > st.status.as_ref().unwrap().created_at);
    assert_eq!(st.containers_statuses.len(), 1, "{st:?}");
    assert_eq!(st.containers_statuses[0].id, app);
    assert_eq!(st.containers_statuses[0].state, RUNNING);

    // Metrics: the pod's (its cgroup, its network) and the container's.
    let descriptors = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let busybox = std::fs::metadata("/bin/busybox").unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (pod_metrics, app_metrics) = loop {
        let all = rt
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
        let p = all
            .into_iter()
            .find(|p| p.pod_sandbox_id == pod)
            .expect("the pod's metrics");
        let c = p
            .container_metrics
            .iter()
            .find(|c| c.container_id == app)
            .map(|c| c.metrics.clone())
            .unwrap_or_default();
        let rx = calls::metric(
            &descriptors,
            &p.metrics,
            "container_network_receive_bytes_total",
            Some(("interface", "eth0")),
        );
        let fs = calls::metric(&descriptors, &c, "container_fs_usage_bytes", None);
        if rx.unwrap_or(0) >= 20 * 200 && fs.unwrap_or(0) >= busybox {
            break (p.metrics, c);
        }
        assert!(
            Instant::now() < deadline,
            "rx {rx:?}, fs {fs:?} (busybox {busybox})\n{p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for m in &pod_metrics {
        let l = labels(&descriptors, m);
        assert_eq!(
            (
                l["pod"].as_str(),
                l["namespace"].as_str(),
                l["container"].as_str(),
                l["id"].as_str()
            ),
            ("metrics", "test", "", pod.as_str()),
            "{m:?}"
        );
    }
    for m in &app_metrics {
        let l = labels(&descriptors, m);
        assert_eq!(
            (
                l["pod"].as_str(),
                l["container"].as_str(),
                l["id"].as_str(),
                l["image"].as_str()
            ),
            ("metrics", "app", app.as_str(), fx.image.as_str()),
            "{m:?}"
        );
        assert_eq!(m.timestamp, 0, "live values");
    }
    let get = |name: &str| calls::metric(&descriptors, &app_metrics, name, None);
    assert!(get("container_memory_working_set_bytes").unwrap() > 0);
    assert!(get("container_memory_usage_bytes").unwrap() > 0);
    assert!(get("container_memory_rss").is_some());
    assert!(get("container_memory_cache").is_some());
    assert!(get("container_cpu_usage_seconds_total").is_some());
    assert!(get("container_processes").unwrap() >= 1);
    assert_eq!(
        get("container_spec_memory_limit_bytes"),
        Some(0),
        "unlimited"
    );
    assert!(get("container_start_time_seconds").unwrap() > 1_600_000_000);
    assert!(calls::metric(
        &descriptors,
        &pod_metrics,
        "container_memory_working_set_bytes",
        None
    )
    .is_some());
    assert!(
        calls::metric(
            &descriptors,
            &pod_metrics,
            "container_network_transmit_bytes_total",
            Some(("interface", "eth0"))
        )
        .is_some(),
        "{pod_metrics:?}"
    );

    rt.stop_container(cri::StopContainerRequest {
        container_id: app.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    assert_eq!(st.containers_statuses[0].state, EXITED);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("RemovePodSandbox");

    // Events: the sandbox's own (its ID as container_id) and the container's, each with the
    // pod's status and the statuses of the pod's containers.
    use cri::ContainerEventType as E;
    let want = [
        (pod.as_str(), E::ContainerCreatedEvent),
        (pod.as_str(), E::ContainerStartedEvent),
        (app.as_str(), E::ContainerCreatedEvent),
        (app.as_str(), E::ContainerStartedEvent),
        (app.as_str(), E::ContainerStoppedEvent),
        (pod.as_str(), E::ContainerStoppedEvent),
        (app.as_str(), E::ContainerDeletedEvent),
        (pod.as_str(), E::ContainerDeletedEvent),
    ];
    let mut seen = Vec::new();
    while seen.len() < want.len() {
        let ours = |e: &cri::ContainerEventResponse| e.container_id == pod || e.container_id == app;
        match calls::next_event(&mut events, Duration::from_secs(10), ours).await {
            Some(e) => seen.push(e),
            None => break,
        }
    }
    drop(events);
    let kinds: Vec<(&str, i32)> = seen
        .iter()
        .map(|e| (e.container_id.as_str(), e.container_event_type))
        .collect();
    let want: Vec<(&str, i32)> = want.iter().map(|(id, k)| (*id, *k as i32)).collect();
    assert_eq!(kinds, want);
    let started = &seen[3];
    let sandbox = started.pod_sandbox_status.as_ref().expect("pod status");
    assert_eq!((sandbox.id.as_str(), sandbox.state), (pod.as_str(), READY));
    assert_eq!(started.containers_statuses.len(), 1);
    assert_eq!(started.containers_statuses[0].state, RUNNING);
    let stopped = &seen[4];
    assert!(stopped.pod_sandbox_status.is_some());
    assert_eq!(stopped.containers_statuses[0].state, EXITED);
    // Every event names its pod (the kubelet's evented PLEG drops one that does not); the
    // deletions as containerd sends them: a removed container is no longer among the pod's
    // containers, and the pod's own deletion carries its last status (the PLEG drops the pod
    // from its cache on it).
    for e in &seen {
        let p = e
            .pod_sandbox_status
            .as_ref()
            .expect("pod status in every event");
        assert_eq!(p.id, pod, "{e:?}");
    }
    assert!(seen[6].containers_statuses.is_empty(), "{:?}", seen[6]);
    assert_eq!(
        seen[7].pod_sandbox_status.as_ref().unwrap().state,
        NOT_READY
    );
    drop(guard);
    drop(pods);
}

/// An image holding berth-pause as `/pause` (its entrypoint) and a marker file, pushed as
/// `<host>/berth/pause:1`.
fn push_pause_image(registry: &support::Registry, work: &std::path::Path) -> String {
    let layout = work.join("pause-layout");
    let src = work.join("pause-rootfs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(pods::bin_dir().join("berth-pause"), src.join("pause")).unwrap();
    std::fs::write(src.join("from-the-sandbox-image"), b"yes\n").unwrap();
    std::fs::create_dir_all(src.join("home/pause")).unwrap();
    let img = format!("{}:1", layout.display());
    let umoci = |args: &[&str]| {
        support::run(std::process::Command::new("umoci").args(args));
    };
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &img]);
    umoci(&["insert", "--image", &img, src.to_str().unwrap(), "/"]);
    umoci(&[
        "config",
        "--image",
        &img,
        "--config.entrypoint",
        "/pause",
        "--config.env",
        "PAUSE_MODE=image",
        "--config.workingdir",
        "/home/pause",
    ]);
    let image = format!("{}/berth/pause:1", registry.host);
    support::push(&layout, "1", &image, &[]);
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_sandbox_image_is_pulled_pinned_and_run() {
    let test = "configured_sandbox_image_is_pulled_pinned_and_run";
    if !can_run(test) {
        return;
    }
    let registry = support::registry();
    let work = tempfile::tempdir().unwrap();
    let pause_image = push_pause_image(&registry, work.path());
    let (host, sandbox_image) = (registry.host.clone(), pause_image.clone());
    let pods = pods::Pods::start_with(12, |c| {
        c.registry.insecure = vec![host];
        c.sandbox.image = sandbox_image;
    })
    .await;
    let guard = Leftovers::new(pods.dir.path());
    let rt = pods.client().await;

    // Two pods at once: the image is pulled (once) and each pause runs from its own snapshot.
    let run = |name: &'static str| {
        let mut rt = rt.clone();
        async move { run_pod(&mut rt, &pods::pod(name), "").await }
    };
    let (a, b) = tokio::join!(run("img-a"), run("img-b"));
    guard.sandbox(&a);
    guard.sandbox(&b);
    let mut rt = rt;
    for id in [&a, &b] {
        let (st, info) = calls::pod_status(&mut rt, id).await;
        assert_eq!(st.state, READY);
        assert_eq!(info["image"], pause_image.as_str());
        let pid = info["pid"].as_i64().unwrap();
        assert!(pods::alive(pid));
        // The pause runs the image's /pause, in the image's rootfs.
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{pid}/root/from-the-sandbox-image")).unwrap(),
            "yes\n"
        );
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap(),
            "/pause\0"
        );
        // With the image's Env and WorkingDir, as containerd runs its sandbox image.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        assert!(environ.contains(&&b"PAUSE_MODE=image"[..]), "{environ:?}");
        assert!(environ.iter().any(|e| e.starts_with(b"PATH=")));
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
            std::path::Path::new("/home/pause")
        );
        assert!(pods::is_mounted(
            &pods.state().join("sandboxes").join(id).join("rootfs")
        ));
    }
    // Pulled and pinned.
    let status = ImageServiceClient::new(pods.channel().await)
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: pause_image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("the sandbox image is in the store");
    assert!(status.pinned, "{status:?}");

    for id in [&a, &b] {
        calls::remove_pod(&mut rt, id).await;
        let dir = pods.state().join("sandboxes").join(id);
        assert!(!pods::is_mounted(&dir.join("rootfs")));
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    // Only the image's one layer snapshot remains.
    let snapshots = std::fs::read_dir(pods.config.root.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 1);
    assert!(
        node::mounts_under(pods.dir.path()).is_empty(),
        "{:?}",
        node::mounts_under(pods.dir.path())
    );
    drop(guard);
    drop(pods);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_volume_is_a_read_only_view_released_on_remove() {
    let test = "image_volume_is_a_read_only_view_released_on_remove";
    if !can_run(test) {
        return;
    }
    let fx = Busybox::push();
    let (pods, guard, mut rt) = calls::pods_pulling(13, fx.host(), &[&fx.image]).await;
    let snapshots = || {
        std::fs::read_dir(pods.config.root.join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = snapshots();

    let pod_config = pods::pod("iv");
    let pod = run_pod(&mut rt, &pod_config, "").await;
    guard.sandbox(&pod);
    let volume = cri::Mount {
        container_path: "/iv".into(),
        image: Some(cri::ImageSpec {
            image: fx.image.clone(),
            ..Default::default()
        }),
        readonly: true,
        ..Default::default()
    };
    // Asked read-write, an image volume is refused (critest: the CRI says image volumes are
    // read-only), and nothing is left of the attempt.
    let mut rw = container("rw", &fx.image, "true");
    rw.mounts = vec![cri::Mount {
        readonly: false,
        ..volume.clone()
    }];
    let err = calls::create_container(&mut rt, &pod, &pod_config, rw)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("must be read-only"), "{err:?}");
    assert_eq!(snapshots(), before);
    // A sub path the image does not have is refused (critest), leaving nothing.
    let mut missing = container("missing", &fx.image, "true");
    missing.mounts = vec![cri::Mount {
        image_sub_path: "no/such/dir".into(),
        ..volume.clone()
    }];
    let err = calls::create_container(&mut rt, &pod, &pod_config, missing)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("does not exist in the image"),
        "{err:?}"
    );
    assert_eq!(snapshots(), before);
    // Only a path of the image (KEP-4639's subPath): its etc at /iv-etc.
    let etc = cri::Mount {
        container_path: "/iv-etc".into(),
        image_sub_path: "etc".into(),
        ..volume.clone()
    };
    let mut config = container("reader", &fx.image, "sleep 300");
    config.mounts = vec![volume.clone(), etc.clone()];
    let c = run_container(&mut rt, &pod, &pod_config, config).await;
    let exec = |cmd: &'static str| {
        let mut rt = rt.clone();
        let c = c.clone();
        async move {
            rt.exec_sync(cri::ExecSyncRequest {
                container_id: c,
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: 10,
            })
            .await
            .expect("ExecSync")
            .into_inner()
        }
    };
    // The image's files, read-only.
    let r = exec("cat /iv/etc/passwd").await;
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (0, "root:x:0:0:root:/root:/bin/sh\n")
    );
    let r = exec("echo x > /iv/new").await;
    assert_ne!(r.exit_code, 0, "the image volume is writable");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{r:?}"
    );
    let r = exec("cat /iv-etc/passwd; ls /iv-etc/passwd /iv-etc/etc 2>&1").await;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(out.starts_with("root:x:0:0:root:/root:/bin/sh\n"), "{r:?}");
    assert!(
        out.contains("/iv-etc/etc: No such file"),
        "the sub path is etc itself: {r:?}"
    );
    // The container's own rootfs stays writable.
    assert_eq!(exec("echo x > /new").await.exit_code, 0);
    assert_eq!(snapshots(), before + 3, "the rootfs and two views");
    // The status reports the mounts as asked, each with the image's ID (KEP-5365: the
    // image_ref PullImage answered).
    let image_ref = calls::pull(&pods.channel().await, &fx.image).await;
    let with_ref = |m: &cri::Mount| {
        let mut m = m.clone();
        m.image.as_mut().unwrap().image_ref = image_ref.clone();
        m
    };
    let st = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.mounts, vec![with_ref(&volume), with_ref(&etc)]);

    // A missing image is NotFound, and nothing is left of the attempt.
    let mut bad = container("bad", &fx.image, "true");
    bad.mounts = vec![cri::Mount {
        container_path: "/iv".into(),
        image: Some(cri::ImageSpec {
            image: format!("{}/berth/absent:1", fx.registry.host),
            ..Default::default()
        }),
        readonly: true,
        ..Default::default()
    }];
    let err = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(snapshots(), before + 3);

    rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .expect("RemoveContainer");
    assert_eq!(snapshots(), before, "the views went with the container");
    let dir = pods.state().join("containers").join(&c);
    assert!(!dir.exists());
    calls::remove_pod(&mut rt, &pod).await;
    assert!(node::mounts_under(pods.dir.path()).is_empty());
    drop(guard);
    drop(pods);
}

/// A container's exit is seen when the shim records it (an inotify watch on its directory),
/// not at the next poll: the stopped event follows the recorded exit time closely, though the
/// backstop poll runs only every 2 s (with it alone, most exits would be seen 0.5–2 s late).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exits_are_seen_when_the_shim_records_them() {
    let test = "exits_are_seen_when_the_shim_records_them";
    if !can_run(test) {
        return;
    }
    let _alone = BURST.lock().await;
    let fx = Busybox::push();
    let (pods, guard, mut rt) = calls::pods_pulling(16, fx.host(), &[&fx.image]).await;
    let pod_config = pods::pod("exits");
    let pod = run_pod(&mut rt, &pod_config, "").await;
    guard.sandbox(&pod);
    let mut events = calls::events(&mut rt).await;
    let mut late = Vec::new();
    for i in 0..3 {
        let script = format!("sleep 0.{}; exit 3", 3 + i * 2);
        let c = run_container(
            &mut rt,
            &pod,
            &pod_config,
            container(&format!("quick{i}"), &fx.image, &script),
        )
        .await;
        let stopped = calls::next_event(&mut events, Duration::from_secs(10), |e| {
            e.container_id == c
                && e.container_event_type == cri::ContainerEventType::ContainerStoppedEvent as i32
        })
        .await
        .unwrap_or_else(|| panic!("no stopped event for {c}"));
        let status = stopped
            .containers_statuses
            .iter()
            .find(|s| s.id == c)
            .expect("its status");
        assert_eq!((status.state, status.exit_code), (EXITED, 3));
        late.push(Duration::from_nanos(
            (stopped.created_at - status.finished_at).max(0) as u64,
        ));
    }
    drop(events);
    assert!(
        late.iter().all(|d| *d < Duration::from_millis(500)),
        "exits seen late: {late:?}"
    );
    calls::remove_pod(&mut rt, &pod).await;
    drop(guard);
    drop(pods);
}

/// A pause that dies by itself (killed by PID here) makes its pod NotReady at once, with one
/// Stopped event for the sandbox carrying the NotReady status (not only when someone asks for
/// the pod's status); StopPodSandbox afterwards sends no second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_that_dies_makes_its_pod_not_ready_with_an_event() {
    let test = "a_pause_that_dies_makes_its_pod_not_ready_with_an_event";
    if !can_run(test) {
        return;
    }
    let pods = pods::Pods::start(18).await;
    let guard = Leftovers::new(pods.dir.path());
    let mut rt = pods.client().await;
    let pod = run_pod(&mut rt, &pods::pod("dies"), "").await;
    guard.sandbox(&pod);
    let (_, info) = calls::pod_status(&mut rt, &pod).await;
    let pid = info["pid"].as_i64().expect("the pause's pid") as i32;
    let mut events = calls::events(&mut rt).await;
    // The pause berthd started for this test's pod.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pause");

    let event = calls::next_event(&mut events, Duration::from_secs(10), |e| {
        e.container_id == pod
    })
    .await
    .expect("a Stopped event for the sandbox");
    assert_eq!(
        event.container_event_type,
        cri::ContainerEventType::ContainerStoppedEvent as i32
    );
    let status = event.pod_sandbox_status.as_ref().expect("its pod status");
    assert_eq!(
        (status.id.as_str(), status.state),
        (pod.as_str(), NOT_READY)
    );

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    // Events are sent as things happen: anything StopPodSandbox sent is queued by now.
    let more = calls::next_event(&mut events, Duration::from_millis(500), |e| {
        e.container_id == pod
    })
    .await;
    assert!(
        more.is_none(),
        "a second event after StopPodSandbox: {more:?}"
    );
    drop(events);
    calls::remove_pod(&mut rt, &pod).await;
    drop(guard);
    drop(pods);
}

/// 50 pods at once, each with a container: every RunPodSandbox, CreateContainer and
/// StartContainer succeeds (no global lock across slow work makes one time out), each pod
/// gets its own IP; then all are torn down, leaving nothing mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_pods_at_once() {
    let test = "fifty_pods_at_once";
    if !can_run(test) {
        return;
    }
    let _burst = BURST.lock().await;
    const PODS: usize = 50;
    let fx = Busybox::push();
    let (pods, guard, rt) = calls::pods_pulling(17, fx.host(), &[&fx.image]).await;
    let guard = std::sync::Arc::new(guard);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..PODS {
        let (mut rt, image, guard) = (rt.clone(), fx.image.clone(), guard.clone());
        tasks.spawn(async move {
            let config = pods::pod(&format!("many{i}"));
            let pod = rt
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .map_err(|e| format!("RunPodSandbox {i}: {e}"))?
                .into_inner()
                .pod_sandbox_id;
            guard.sandbox(&pod);
            let c = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(container("app", &image, "sleep 300")),
                    sandbox_config: Some(config),
                })
                .await
                .map_err(|e| format!("CreateContainer {i}: {e}"))?
                .into_inner()
                .container_id;
            rt.start_container(cri::StartContainerRequest { container_id: c })
                .await
                .map_err(|e| format!("StartContainer {i}: {e}"))?;
            Ok::<_, String>(pod)
        });
    }
    let mut made = Vec::new();
    let mut failed = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(r) = tasks.join_next().await {
            match r.expect("task") {
                Ok(pod) => made.push(pod),
                Err(e) => failed.push(e),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "not done within 300 s");
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(made.len(), PODS);

    let mut rt = rt;
    let running = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue { state: RUNNING }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(running.len(), PODS);
    let mut ips = std::collections::HashSet::new();
    for pod in &made {
        let st = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state, READY);
        assert!(ips.insert(st.network.unwrap().ip));
    }

    let mut tasks = tokio::task::JoinSet::new();
    for pod in made {
        let mut rt = rt.clone();
        tasks.spawn(async move {
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("teardown");
    }
    assert!(pods.net.ports().is_empty());
    assert!(node::mounts_under(&pods.state()).is_empty());
    drop(guard);
    drop(pods);
}
