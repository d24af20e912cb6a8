//! berthd's CRI server over a real unix socket, driven by a cri-api client.

use std::path::Path;
use std::sync::Arc;

use berth_cri::cgroup_driver::{self, CgroupDriver, HostFacts};
use berth_cri::config::Config;
use berth_cri::server;
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

async fn connect(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect to the CRI socket")
}

/// Starts a server on a socket in a temp dir; returns the channel and a shutdown sender.
async fn start(
    dir: &Path,
) -> (
    Channel,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    start_with(dir, None).await
}

/// [`start`] with `[cgroup] driver` set (or not).
async fn start_with(
    dir: &Path,
    cgroup_driver: Option<CgroupDriver>,
) -> (
    Channel,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut config = Config {
        root: dir.join("root"),
        state: dir.join("state"),
        listen: dir.join("berth.sock"),
        ..Config::default()
    };
    config.cgroup.driver = cgroup_driver;
    let config = config
        .with_detected_runtimes(Some(Path::new(env!("CARGO_MANIFEST_DIR"))))
        .unwrap();
    let listener = server::bind(&config.listen).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::serve(Arc::new(config), listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (connect(&dir.join("berth.sock")).await, tx, task)
}

#[tokio::test]
async fn version_status_and_runtime_config() {
    let dir = tempfile::tempdir().unwrap();
    let (channel, stop, task) = start(dir.path()).await;
    let mut rt = RuntimeServiceClient::new(channel.clone());

    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));

    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let net = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    assert!(!net.status && !net.reason.is_empty(), "{net:?}");
    assert!(conds.iter().any(|c| c.r#type == "RuntimeReady"));
    assert!(s.runtime_handlers.iter().any(|h| h.name == "berth"));
    assert!(s.info["config"].contains("listen"));
    let features = s.features.unwrap();
    assert!(features.supplemental_groups_policy);
    // KEP-5855's bind options are honoured (tests/container.rs); KEP-5607's host-network user
    // namespaces where the default handler (listed as "") joins user namespaces and mounts rro.
    assert!(features.mount_options);
    let default = s
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .unwrap();
    let f = default.features.unwrap();
    assert_eq!(
        features.user_namespaces_host_network,
        f.user_namespaces && f.recursive_read_only_mounts,
        "{:?}",
        s.runtime_handlers
    );

    // No [cgroup] driver: this host's default (systemd only under systemd on cgroup v2).
    let c = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let (default, _) = cgroup_driver::resolve(None, HostFacts::probe);
    assert_eq!(c.linux.unwrap().cgroup_driver, cri_driver(default));

    rt.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: "10.244.1.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();
    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.info["podCIDR"], "10.244.1.0/24");

    stop.send(()).unwrap();
    task.await.unwrap();
}

fn cri_driver(driver: CgroupDriver) -> i32 {
    match driver {
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd as i32,
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs as i32,
    }
}

#[tokio::test]
async fn runtime_config_reports_the_configured_cgroup_driver() {
    for driver in [CgroupDriver::Systemd, CgroupDriver::Cgroupfs] {
        let dir = tempfile::tempdir().unwrap();
        let (channel, stop, task) = start_with(dir.path(), Some(driver)).await;
        let c = RuntimeServiceClient::new(channel)
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(c.linux.unwrap().cgroup_driver, cri_driver(driver));
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn metric_descriptors_and_unserved_rpcs() {
    let dir = tempfile::tempdir().unwrap();
    let (channel, stop, task) = start(dir.path()).await;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    // Metrics are served: cAdvisor's names, every descriptor with cAdvisor's base labels
    // (sorted); no pod yet, no pod metrics.
    let descriptors = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_memory_usage_bytes",
        "container_memory_cache",
        "container_spec_memory_limit_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_usage_bytes",
    ] {
        let d = descriptors
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no descriptor {name}"));
        assert!(!d.help.is_empty());
        for key in ["container", "id", "image", "name", "namespace", "pod"] {
            assert!(d.label_keys.iter().any(|k| k == key), "{name}: {key}");
        }
        assert!(d.label_keys.windows(2).all(|w| w[0] < w[1]), "{name}");
    }
    let pods = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert!(pods.is_empty());
    let err = rt
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("CRIU"));
    // The RPCs of the newer CRI berth does not serve yet answer UNIMPLEMENTED, naming the RPC.
    let refused = [
        (
            "CheckpointPod",
            rt.checkpoint_pod(cri::CheckpointPodRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "RestorePod",
            rt.restore_pod(cri::RestorePodRequest::default())
                .await
                .map(|_| ()),
        ),
    ];
    for (rpc, answer) in refused {
        let err = answer.expect_err(rpc);
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{rpc}: {err}");
        assert!(
            err.message().starts_with(&format!("berth: {rpc} ")),
            "{rpc}: {err}"
        );
    }
    // UpdatePodSandboxResources is served (tests/resize.rs): an unknown pod is NOT_FOUND,
    // named.
    let err = rt
        .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "nosuchpod".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("nosuchpod"), "{err}");
    // The list streams are served (tests/list_streaming.rs): on an empty node each ends at
    // once, without error and without a message.
    async fn empty<T>(
        rpc: &str,
        answer: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    ) {
        let mut stream = answer.unwrap_or_else(|e| panic!("{rpc}: {e}")).into_inner();
        let first = stream
            .message()
            .await
            .unwrap_or_else(|e| panic!("{rpc}: {e}"));
        assert!(first.is_none(), "{rpc}: a message on an empty node");
    }
    empty(
        "StreamPodSandboxes",
        rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest::default())
            .await,
    )
    .await;
    empty(
        "StreamContainers",
        rt.stream_containers(cri::StreamContainersRequest::default())
            .await,
    )
    .await;
    empty(
        "StreamContainerStats",
        rt.stream_container_stats(cri::StreamContainerStatsRequest::default())
            .await,
    )
    .await;
    empty(
        "StreamPodSandboxStats",
        rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest::default())
            .await,
    )
    .await;
    empty(
        "StreamPodSandboxMetrics",
        rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest::default())
            .await,
    )
    .await;
    empty(
        "StreamImages",
        ImageServiceClient::new(channel.clone())
            .stream_images(cri::StreamImagesRequest::default())
            .await,
    )
    .await;
    // ImageService is served (tests/image_service.rs): an empty store lists no image.
    let mut img = ImageServiceClient::new(channel);
    let list = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.images.is_empty());
    stop.send(()).unwrap();
    task.await.unwrap();
}
