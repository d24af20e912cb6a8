//! The CRI list streams (KEP-5825) on a node holding 10,000 exited containers: their records
//! are written into berthd's container store (through the store's own API, before berthd
//! starts and loads them; an exited container needs no process), each about 2 KiB of labels
//! and annotations, so that the unary ListContainers reply (over 20 MiB) exceeds tonic's
//! default 4 MiB decode limit and the kubelet's 16 MiB, while StreamContainers delivers every
//! record, in order, in messages of at most 1 MiB, with ListContainers' filter semantics.
//! The other five streams answer on the same node (nothing to list: no pod, no image, no
//! running container) and end without error, as their unary Lists do.
//!
//! Then, on a node running two pods (one on its own network, one on the host's) with running
//! and exited containers and a pulled image, each of the six streams gives what its List
//! gives, filtered or not (stats and metrics compared by whom they describe: their values move).

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_cri::config::Config;
use berth_cri::service::list_stream::BATCH_BYTES;
use berth_cri::store::container::{ContainerMeta, ContainerStore, ExitReason, State, Status};
use chrono::{TimeDelta, Utc};
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use prost::Message;
use tonic::transport::Channel;

const CONTAINERS: usize = 10_000;
/// Sandbox IDs the containers are spread over (no sandbox record: ListContainers does not
/// look at sandboxes).
const PODS: usize = 10;
const MIB: usize = 1 << 20;

fn sandbox_id(pod: usize) -> String {
    format!("{pod:02}{}", "5".repeat(62))
}

/// An exited container of pod `i % PODS`, created `i` ms after `base`, with 1 KiB of labels
/// and 1 KiB of annotations.
fn exited(i: usize, base: chrono::DateTime<Utc>, dir: &Path) -> (ContainerMeta, Status) {
    let id = format!("{i:08x}{}", "c".repeat(56));
    let name = format!("job-{i}");
    let created = base + TimeDelta::milliseconds(i as i64);
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "registry.example/batch/job:v1".into(),
            ..Default::default()
        }),
        labels: HashMap::from([
            ("app".to_owned(), name.clone()),
            ("shard".to_owned(), (i % 7).to_string()),
            ("padding".to_owned(), "l".repeat(1024)),
        ]),
        annotations: HashMap::from([("padding".to_owned(), "a".repeat(1024))]),
        ..Default::default()
    };
    let meta = ContainerMeta {
        name: format!("{name}_pod-{}_default_uid_0", i % PODS),
        sandbox_id: sandbox_id(i % PODS),
        config,
        image_name: "registry.example/batch/job:v1".into(),
        image_id: format!("sha256:{}", "1".repeat(64)),
        image_ref: format!("registry.example/batch/job@sha256:{}", "2".repeat(64)),
        log_path: None,
        snapshot_key: id.clone(),
        rootfs: dir.join(&id).join("rootfs"),
        dir: dir.join(&id),
        bundle: dir.join(&id).join("bundle"),
        shim_dir: dir.join(&id).join("shim"),
        runtime_handler: "berth".into(),
        cgroups_path: format!("/berth/{}/{id}", sandbox_id(i % PODS)),
        stop_signal: None,
        created_at: created,
        image_volumes: Vec::new(),
        id,
    };
    let status = Status {
        state: State::Exited {
            started_at: Some(created),
            finished_at: created + TimeDelta::seconds(1),
            code: 0,
            reason: ExitReason::Completed,
            message: String::new(),
        },
        resources: None,
        removing: false,
    };
    (meta, status)
}

/// Every message of a StreamContainers call, each checked to fit in a batch.
async fn stream_containers(
    rt: &mut RuntimeServiceClient<Channel>,
    filter: Option<cri::ContainerFilter>,
) -> (Vec<cri::Container>, usize) {
    let mut stream = rt
        .stream_containers(cri::StreamContainersRequest { filter })
        .await
        .expect("StreamContainers")
        .into_inner();
    let (mut all, mut messages) = (Vec::new(), 0);
    while let Some(message) = stream.message().await.expect("a StreamContainers message") {
        let len = message.encoded_len();
        assert!(len <= BATCH_BYTES, "a message of {len} bytes");
        assert!(!message.containers.is_empty(), "an empty message");
        all.extend(message.containers);
        messages += 1;
    }
    (all, messages)
}

async fn list_containers(
    rt: &mut RuntimeServiceClient<Channel>,
    filter: Option<cri::ContainerFilter>,
) -> Result<Vec<cri::Container>, tonic::Status> {
    rt.list_containers(cri::ListContainersRequest { filter })
        .await
        .map(|r| r.into_inner().containers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_exited_containers_stream_where_the_unary_list_is_too_big() {
    let test = "ten_thousand_exited_containers_stream_where_the_unary_list_is_too_big";
    if !support::is_root() {
        eprintln!("SKIP {test}: needs root (berthd's cgroup and state setup)");
        return;
    }
    let t0 = Instant::now();
    // tmpfs when there is one: the store writes each record durably (fsync).
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("berth-list-streaming")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let (store, errors) = ContainerStore::open(root.join("cri").join("containers"));
    assert!(errors.is_empty(), "{errors:?}");
    let base = Utc::now() - TimeDelta::hours(1);
    for i in 0..CONTAINERS {
        let (meta, status) = exited(i, base, &state.join("containers"));
        store.add(meta, status).expect("add a container record");
    }
    drop(store);
    eprintln!("{CONTAINERS} records written in {:?}", t0.elapsed());

    let config = Config {
        root,
        state,
        listen: dir.path().join("berth.sock"),
        shim_socket_dir: dir.path().join("sockets"),
        ..Config::default()
    }
    .with_detected_runtimes(Some(Path::new(env!("CARGO_MANIFEST_DIR"))))
    .expect("config");
    let server = support::Server::start(config);
    let channel = support::connect(&dir.path().join("berth.sock")).await;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    // berthd loads the records before it serves; the first call waits for it.
    let (streamed, messages) = stream_containers(&mut rt, None).await;
    eprintln!(
        "streamed {} containers in {messages} messages at {:?}",
        streamed.len(),
        t0.elapsed()
    );
    assert_eq!(streamed.len(), CONTAINERS);
    let ids: Vec<String> = (0..CONTAINERS)
        .map(|i| format!("{i:08x}{}", "c".repeat(56)))
        .collect();
    let streamed_ids: Vec<&str> = streamed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(streamed_ids, ids, "every record, oldest first");
    assert!(streamed
        .iter()
        .all(|c| c.state == cri::ContainerState::ContainerExited as i32));
    let total: usize = streamed.iter().map(|c| c.encoded_len()).sum();
    assert!(total > 20 * MIB, "only {total} bytes of records");
    assert!(messages >= total / BATCH_BYTES, "{messages} messages");

    // The unary reply is too big for tonic's default 4 MiB, and for the kubelet's 16 MiB.
    let e = list_containers(&mut rt, None)
        .await
        .expect_err("ListContainers over 4 MiB with tonic's default limit");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    let mut kubelet =
        RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 * MIB);
    let e = list_containers(&mut kubelet, None)
        .await
        .expect_err("ListContainers over 16 MiB");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    // With room enough, it is the same list.
    let mut big = RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 * MIB);
    let unary = list_containers(&mut big, None)
        .await
        .expect("ListContainers");
    assert!(
        unary == streamed,
        "StreamContainers differs from ListContainers"
    );

    // Filters mean what they mean to ListContainers.
    let filters = [
        cri::ContainerFilter {
            pod_sandbox_id: sandbox_id(3),
            ..Default::default()
        },
        cri::ContainerFilter {
            pod_sandbox_id: sandbox_id(3)[..4].to_owned(),
            label_selector: HashMap::from([("shard".to_owned(), "5".to_owned())]),
            ..Default::default()
        },
        cri::ContainerFilter {
            id: ids[4242][..8].to_owned(),
            ..Default::default()
        },
        cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerExited as i32,
            }),
            label_selector: HashMap::from([("app".to_owned(), "job-77".to_owned())]),
            ..Default::default()
        },
    ];
    for filter in filters {
        let (streamed, _) = stream_containers(&mut rt, Some(filter.clone())).await;
        let unary = list_containers(&mut big, Some(filter.clone()))
            .await
            .expect("filtered ListContainers");
        assert!(!streamed.is_empty(), "{filter:?}: nothing");
        assert!(unary == streamed, "{filter:?}: the stream differs");
    }
    let running = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let (none, messages) = stream_containers(&mut rt, Some(running)).await;
    assert!(none.is_empty() && messages == 0, "running: {none:?}");

    // A client that stops reading and goes away does not wedge berthd.
    let mut stream = rt
        .stream_containers(cri::StreamContainersRequest { filter: None })
        .await
        .expect("StreamContainers")
        .into_inner();
    stream.message().await.expect("a first message");
    drop(stream);
    let (again, _) = stream_containers(&mut rt, None).await;
    assert_eq!(again.len(), CONTAINERS);

    // The other streams are served on the same node and end cleanly with nothing to send,
    // as their Lists have nothing: exited containers have no stats, there is no pod and no
    // image.
    let mut stats = rt
        .stream_container_stats(cri::StreamContainerStatsRequest { filter: None })
        .await
        .expect("StreamContainerStats")
        .into_inner();
    assert_eq!(stats.message().await.expect("StreamContainerStats"), None);
    let unary = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .expect("ListContainerStats")
        .into_inner();
    assert!(unary.stats.is_empty());
    let mut pods = rt
        .stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: None })
        .await
        .expect("StreamPodSandboxes")
        .into_inner();
    assert_eq!(pods.message().await.expect("StreamPodSandboxes"), None);
    let mut pod_stats = rt
        .stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: None })
        .await
        .expect("StreamPodSandboxStats")
        .into_inner();
    assert_eq!(
        pod_stats.message().await.expect("StreamPodSandboxStats"),
        None
    );
    let mut metrics = rt
        .stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
        .await
        .expect("StreamPodSandboxMetrics")
        .into_inner();
    assert_eq!(
        metrics.message().await.expect("StreamPodSandboxMetrics"),
        None
    );
    let mut images = ImageServiceClient::new(channel.clone())
        .stream_images(cri::StreamImagesRequest { filter: None })
        .await
        .expect("StreamImages")
        .into_inner();
    assert_eq!(images.message().await.expect("StreamImages"), None);

    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("berthd stops");
    eprintln!("done in {:?}", t0.elapsed());
}

/// Collects every message of a server stream.
async fn all<T>(stream: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>) -> Vec<T> {
    let mut stream = stream.expect("the stream starts").into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.expect("a message") {
        out.push(m);
    }
    out
}

fn container_ids(stats: &[cri::ContainerStats]) -> Vec<String> {
    stats
        .iter()
        .map(|s| s.attributes.clone().unwrap_or_default().id)
        .collect()
}

/// Each pod's ID with its attributes and the IDs of its containers' stats.
fn pod_ids(stats: &[cri::PodSandboxStats]) -> Vec<(cri::PodSandboxAttributes, Vec<String>)> {
    stats
        .iter()
        .map(|s| {
            let containers = s.linux.as_ref().map(|l| container_ids(&l.containers));
            (
                s.attributes.clone().unwrap_or_default(),
                containers.unwrap_or_default(),
            )
        })
        .collect()
}

/// Each pod's ID, its metric names and its containers' IDs and metric names.
fn metric_names(metrics: &[cri::PodSandboxMetrics]) -> Vec<(String, Vec<String>, Vec<String>)> {
    let names = |m: &[cri::Metric]| {
        let mut n: Vec<String> = m.iter().map(|m| m.name.clone()).collect();
        n.sort();
        n.dedup();
        n
    };
    metrics
        .iter()
        .map(|p| {
            let containers = p
                .container_metrics
                .iter()
                .flat_map(|c| {
                    let mut v = vec![c.container_id.clone()];
                    v.extend(names(&c.metrics));
                    v
                })
                .collect();
            (p.pod_sandbox_id.clone(), names(&p.metrics), containers)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stream_gives_what_its_list_gives_on_running_pods() {
    let test = "each_stream_gives_what_its_list_gives_on_running_pods";
    if !(support::can_run(test) && pods::can_run(test)) {
        return;
    }
    let t0 = Instant::now();
    let fx = calls::Busybox::push();
    let (pods, guard, mut rt) = calls::pods_pulling(43, fx.host(), &[&fx.image]).await;
    let channel = pods.channel().await;
    let mut images = ImageServiceClient::new(channel.clone());

    let mut ids = Vec::new();
    for config in [pods::pod("stream-a"), pods::host_network_pod("stream-b")] {
        let pod = calls::run_pod(&mut rt, &config, "").await;
        guard.sandbox(&pod);
        let name = config.metadata.as_ref().unwrap().name.clone();
        let sleeper = calls::shell_container(&format!("{name}-sleep"), &fx.image, "sleep 300");
        calls::run_container(&mut rt, &pod, &config, sleeper).await;
        let done = calls::shell_container(&format!("{name}-done"), &fx.image, "true");
        calls::run_container(&mut rt, &pod, &config, done).await;
        ids.push(pod);
    }
    let exited = || cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerExited as i32,
        }),
        ..Default::default()
    };
    let both_exited = node::wait_until(Duration::from_secs(20), || {
        let mut rt = rt.clone();
        async move {
            list_containers(&mut rt, Some(exited()))
                .await
                .is_ok_and(|c| c.len() == 2)
        }
    })
    .await;
    assert!(both_exited, "the two `true` containers did not exit");

    // Pods: all, by label, by ID prefix, by state.
    let pod_filters = [
        None,
        Some(cri::PodSandboxFilter {
            label_selector: HashMap::from([("app".to_owned(), "stream-b".to_owned())]),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            id: ids[0][..12].to_owned(),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }),
    ];
    for filter in pod_filters {
        let listed = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: filter.clone(),
            })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        let streamed: Vec<_> = all(rt
            .stream_pod_sandboxes(cri::StreamPodSandboxesRequest {
                filter: filter.clone(),
            })
            .await)
        .await
        .into_iter()
        .flat_map(|m| m.pod_sandboxes)
        .collect();
        assert!(!listed.is_empty(), "{filter:?}: no pod");
        assert_eq!(streamed, listed, "{filter:?}");
    }

    // Containers: all, running, exited, one pod's.
    let container_filters = [
        None,
        Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }),
        Some(exited()),
        Some(cri::ContainerFilter {
            pod_sandbox_id: ids[1].clone(),
            ..Default::default()
        }),
    ];
    for filter in container_filters {
        let listed = list_containers(&mut rt, filter.clone())
            .await
            .expect("ListContainers");
        let (streamed, _) = stream_containers(&mut rt, filter.clone()).await;
        assert!(!listed.is_empty(), "{filter:?}: no container");
        assert_eq!(streamed, listed, "{filter:?}");
    }

    // Container stats: the running containers, all or one pod's.
    for filter in [
        None,
        Some(cri::ContainerStatsFilter {
            pod_sandbox_id: ids[0].clone(),
            ..Default::default()
        }),
    ] {
        let listed = rt
            .list_container_stats(cri::ListContainerStatsRequest {
                filter: filter.clone(),
            })
            .await
            .expect("ListContainerStats")
            .into_inner()
            .stats;
        let streamed: Vec<_> = all(rt
            .stream_container_stats(cri::StreamContainerStatsRequest {
                filter: filter.clone(),
            })
            .await)
        .await
        .into_iter()
        .flat_map(|m| m.container_stats)
        .collect();
        assert!(!listed.is_empty(), "{filter:?}: no stats");
        assert_eq!(
            container_ids(&streamed),
            container_ids(&listed),
            "{filter:?}"
        );
        assert!(streamed
            .iter()
            .all(|s| s.cpu.is_some() && s.memory.is_some()));
    }

    // Pod stats: all, or one pod by ID prefix.
    for filter in [
        None,
        Some(cri::PodSandboxStatsFilter {
            id: ids[1][..12].to_owned(),
            ..Default::default()
        }),
    ] {
        let listed = rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                filter: filter.clone(),
            })
            .await
            .expect("ListPodSandboxStats")
            .into_inner()
            .stats;
        let streamed: Vec<_> = all(rt
            .stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest {
                filter: filter.clone(),
            })
            .await)
        .await
        .into_iter()
        .flat_map(|m| m.pod_sandbox_stats)
        .collect();
        assert!(!listed.is_empty(), "{filter:?}: no pod stats");
        assert_eq!(pod_ids(&streamed), pod_ids(&listed), "{filter:?}");
    }

    // Pod metrics.
    let listed = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let streamed: Vec<_> = all(rt
        .stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
        .await)
    .await
    .into_iter()
    .flat_map(|m| m.pod_sandbox_metrics)
    .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(metric_names(&streamed), metric_names(&listed));

    // Images: all, and one by name.
    for filter in [
        None,
        Some(cri::ImageFilter {
            image: Some(cri::ImageSpec {
                image: fx.image.clone(),
                ..Default::default()
            }),
        }),
    ] {
        let listed = images
            .list_images(cri::ListImagesRequest {
                filter: filter.clone(),
            })
            .await
            .expect("ListImages")
            .into_inner()
            .images;
        let streamed: Vec<_> = all(images
            .stream_images(cri::StreamImagesRequest {
                filter: filter.clone(),
            })
            .await)
        .await
        .into_iter()
        .flat_map(|m| m.images)
        .collect();
        assert!(!listed.is_empty(), "{filter:?}: no image");
        assert_eq!(streamed, listed, "{filter:?}");
    }

    for pod in &ids {
        calls::remove_pod(&mut rt, pod).await;
    }
    drop(pods);
    eprintln!("done in {:?}", t0.elapsed());
}
