//! The same CRI scenario against berthd and against containerd (Debian's package, its CRI
//! plugin configured by the test, runc through io.containerd.runc.v2), with one cri-api
//! client, comparing what a kubelet observes: pod and container statuses, exit codes and
//! reasons (Completed, Error, OOMKilled), timestamps, image references, the CRI log lines,
//! ExecSync output and exit codes, what a container sees (capabilities, seccomp, user and
//! groups, mounts and their flags, masked and read-only paths, devices, environment,
//! resolv.conf, its cgroup limits before and after UpdateContainerResources), stats fields,
//! list filters, idempotent teardown and the gRPC codes of calls on unknown IDs.
//!
//! Every observation is a `key → value` string, normalised (IDs, digests, the registry and the
//! log directory replaced by names) so that the two runtimes' maps compare directly. Where
//! berth differs from containerd, `differences::DIFFERENCES` holds each side's expected value
//! and why; everything else must be equal.

#[path = "support/containerd.rs"]
mod containerd;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

#[path = "containerd_compare/differences.rs"]
mod differences;
#[path = "containerd_compare/observe.rs"]
mod observe;
#[path = "containerd_compare/queries.rs"]
mod queries;
#[path = "containerd_compare/scenario.rs"]
mod scenario;
#[path = "containerd_compare/security.rs"]
mod security;
#[path = "containerd_compare/side.rs"]
mod side;
#[path = "containerd_compare/teardown.rs"]
mod teardown;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd::Daemon;
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use differences::compare;
use side::Side;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;
type Obs = BTreeMap<String, String>;

/// An unknown (well-formed) ID.
pub const UNKNOWN: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

/// The scenario: one pod, six containers, exec, stats, lists, teardown, unknown IDs.
async fn scenario(side: &mut Side<'_>) {
    let pod = scenario::run_pod(side).await;
    let out = scenario::run_to_end(side, &pod).await;
    let main = scenario::run_main(side, &pod, &out).await;
    queries::stats(side, &pod, &main).await;
    queries::filters(side, &pod, &main).await;
    teardown::stops(side, &pod, &main).await;
    security::security(side, &pod).await;
    teardown::unknown_ids(side).await;
    teardown::teardown(side, &pod, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_scenario_on_berth_and_containerd() {
    let test = "same_scenario_on_berth_and_containerd";
    if !support::can_run(test) || !pods::can_run(test) || !containerd::installed(test) {
        return;
    }
    let registry = support::registry();
    let work = tempfile::tempdir().unwrap();
    let busybox = node::build_busybox(work.path());
    let image = format!("{}/cmp/busybox:v1", registry.host);
    support::push(&busybox, "v1", &image, &[]);
    let pause = containerd::build_pause(work.path(), &pods::bin_dir().join("berth-pause"));
    let pause_image = format!("{}/cmp/pause:v1", registry.host);
    support::push(&pause, "v1", &pause_image, &[]);
    let manifest = support::registry_digest(&image, &["--tls-verify=false"]);
    let config_digest = support::config_digest(&busybox, "v1");
    let names = vec![
        (manifest.clone(), "{manifest}".to_owned()),
        (config_digest.clone(), "{config}".to_owned()),
        (registry.host.clone(), "{registry}".to_owned()),
    ];

    // berthd (the binary) with berth's CNI plugins, then containerd + runc with Debian's;
    // the same registry through the same kind of certs.d.
    let dir = tempfile::Builder::new()
        .prefix("bc")
        .tempdir_in("/tmp")
        .unwrap();
    let berthd = Daemon::berthd(
        dir.path(),
        Path::new(env!("CARGO_BIN_EXE_berthd")),
        &registry.host,
        1,
    )
    .await;
    let mut b = Side::new("berth", &berthd, &image, &names).await;
    scenario(&mut b).await;
    let b = b.obs;
    drop(berthd);

    let dir = tempfile::Builder::new()
        .prefix("cc")
        .tempdir_in("/tmp")
        .unwrap();
    let ctrd = Daemon::containerd(dir.path(), &registry.host, &pause_image, 1).await;
    let mut c = Side::new("containerd", &ctrd, &image, &names).await;
    scenario(&mut c).await;
    let c = c.obs;
    drop(ctrd);
    compare(&b, &c);
}
