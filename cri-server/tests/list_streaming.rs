//! The CRI list streams (KEP-5825) on a node holding 10,000 exited containers: their records
//! are written into berthd's container store (through the store's own API, before berthd
//! starts and loads them; an exited container needs no process), each about 2 KiB of labels
//! and annotations, so that the unary ListContainers reply (over 20 MiB) exceeds tonic's
//! default 4 MiB decode limit and the kubelet's 16 MiB, while StreamContainers delivers every
//! record, in order, in messages of at most 1 MiB, with ListContainers' filter semantics.
//! The other five streams answer on the same node (nothing to list: no pod, no image, no
//! running container) and end without error, as their unary Lists do.

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
