//! Restart safety (root): berthd (the binary, as a subprocess) is killed with SIGKILL in the
//! middle of RunPodSandbox and of CreateContainer — at named points (`BERTHD_CRASH_AT`) after
//! the network is attached, after the pause started, after the rootfs is mounted, after the
//! shim created the container — and the next berthd sweeps what was half made: no pause,
//! container, shim, netns, veth, mount, snapshot, cgroup or state directory is left, and the
//! same pod or container can be made again.

#[path = "support/berthd_process.rs"]
mod berthd_process;
#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::path::Path;

use berth_cri::service::crash_point;
use berthd_process::Berthd;
use calls::{pull, remove_pod, run_container, run_pod, Busybox};
use cri_api::v1 as cri;
use node::Leftovers;
use pods::Pods;

fn can_run(test: &str) -> bool {
    support::can_run(test) && pods::can_run(test)
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_in(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills (SIGKILL) the shim of the container whose init is `init` (the init's parent) and
/// waits, bounded, until it is gone.
fn kill_shim_of(init: i64) {
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).expect("the init's stat");
    let shim: i32 = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .expect("the init's parent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    for _ in 0..100 {
        if !pods::alive(i64::from(shim)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("shim {shim} still alive after SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_in_run_pod_sandbox_is_swept_at_restart() {
    let test = "crash_in_run_pod_sandbox_is_swept_at_restart";
    if !can_run(test) {
        return;
    }
    let pods = Pods::configure(14, |_| {});
    let guard = Leftovers::new(pods.dir.path());
    let sandboxes = pods.state().join("sandboxes");
    let netns = pods.state().join("netns");
    let sockets = pods.dir.path().join("sockets");
    for (n, point) in [
        crash_point::SANDBOX_NETWORK_ATTACHED,
        crash_point::SANDBOX_PAUSE_STARTED,
    ]
    .into_iter()
    .enumerate()
    {
        let berthd = Berthd::start(&pods, Some(point));
        let mut rt = pods.client().await;
        let name = format!("crash{n}");
        let err = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pods::pod(&name)),
                runtime_handler: String::new(),
            })
            .await
            .expect_err("berthd crashed");
        berthd.wait_killed();
        drop(rt);

        // Half made: the pod's dir, its pinned netns and veth (and the pause, once started).
        let ids = entries(&sandboxes);
        assert_eq!(ids.len(), 1, "{point}: {err:?}");
        let id = ids[0].clone();
        guard.sandbox(&id);
        assert!(pods::is_mounted(&netns.join(&id)), "{point}");
        assert_eq!(pods.net.ports().len(), 1, "{point}: the pod's veth");
        let pause = pid_in(&sandboxes.join(&id).join("shim/init.pid"));
        if point == crash_point::SANDBOX_PAUSE_STARTED {
            assert!(pause.is_some_and(pods::alive), "{point}: the pause runs");
            // Its shim is killed too: the socket it leaves is the sweep's to remove.
            kill_shim_of(pause.unwrap());
            assert_eq!(
                entries(&sockets).len(),
                1,
                "{point}: the killed shim's socket"
            );
        }

        // The next berthd sweeps it all.
        let berthd = Berthd::start(&pods, None);
        let mut rt = pods.client().await;
        let listed = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(listed.is_empty(), "{point}: {listed:?}");
        assert!(entries(&sandboxes).is_empty(), "{point}");
        assert!(entries(&netns).is_empty(), "{point}");
        assert!(pods.net.ports().is_empty(), "{point}: veth left");
        assert!(!pause.is_some_and(pods::alive), "{point}: pause left");
        assert!(pods::cgroup_dirs(&id).is_empty(), "{point}: cgroup left");
        assert!(node::mounts_under(&pods.state()).is_empty(), "{point}");
        assert!(entries(&sockets).is_empty(), "{point}: a shim socket left");

        // The same pod can be made again (its name is free, its IP range too).
        let id = run_pod(&mut rt, &pods::pod(&name), "").await;
        guard.sandbox(&id);
        remove_pod(&mut rt, &id).await;
        drop(rt);
        berthd.stop();
    }
    drop(guard);
    drop(pods);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_in_create_container_is_swept_at_restart() {
    let test = "crash_in_create_container_is_swept_at_restart";
    if !can_run(test) {
        return;
    }
    let busybox = Busybox::push();
    let (host, image) = (busybox.host(), busybox.image.clone());
    let pods = Pods::configure(15, |c| c.registry.insecure = vec![host]);
    let berthd = Berthd::start(&pods, None);
    let guard = Leftovers::new(pods.dir.path());
    pull(&pods.channel().await, &image).await;
    let mut rt = pods.client().await;
    let pod_config = pods::pod("cc");
    let pod = run_pod(&mut rt, &pod_config, "").await;
    guard.sandbox(&pod);
    let snapshot_dir = pods.config.root.join("snapshots");
    let snapshots = || entries(&snapshot_dir).len();
    let before = snapshots();
    let containers = pods.state().join("containers");
    let config = |name: &str| cri::ContainerConfig {
        mounts: vec![cri::Mount {
            container_path: "/iv".into(),
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            readonly: true,
            ..Default::default()
        }],
        ..calls::shell_container(name, &image, "sleep 300")
    };
    drop(rt);
    berthd.stop();
    let sockets = pods.dir.path().join("sockets");
    let sockets_before = entries(&sockets);
    for point in [
        crash_point::CONTAINER_ROOTFS_MOUNTED,
        crash_point::CONTAINER_SHIM_CREATED,
    ] {
        let berthd = Berthd::start(&pods, Some(point));
        let mut rt = pods.client().await;
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config("app")),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect_err("berthd crashed");
        berthd.wait_killed();
        drop(rt);

        let ids = entries(&containers);
        assert_eq!(ids.len(), 1, "{point}");
        let dir = containers.join(&ids[0]);
        assert!(pods::is_mounted(&dir.join("rootfs")), "{point}");
        assert!(snapshots() > before, "{point}");
        let init = pid_in(&dir.join("shim/init.pid"));
        if point == crash_point::CONTAINER_SHIM_CREATED {
            assert!(
                init.is_some_and(pods::alive),
                "{point}: the container was created"
            );
            assert!(pods::is_mounted(&dir.join("image-volumes/0")), "{point}");
            // The shim dies too (the node's OOM killer, say): its socket stays behind, and
            // the sweep must remove it.
            kill_shim_of(init.unwrap());
            assert!(
                entries(&sockets).len() > sockets_before.len(),
                "{point}: the killed shim's socket"
            );
        }

        let berthd = Berthd::start(&pods, None);
        let mut rt = pods.client().await;
        let listed = rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(listed.is_empty(), "{point}: {listed:?}");
        assert!(entries(&containers).is_empty(), "{point}");
        assert!(node::mounts_under(&containers).is_empty(), "{point}");
        assert_eq!(snapshots(), before, "{point}: snapshots left");
        assert!(!init.is_some_and(pods::alive), "{point}: container left");
        assert_eq!(
            entries(&sockets),
            sockets_before,
            "{point}: a shim socket left"
        );
        // The pod was not touched.
        let st = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            st.status.unwrap().state,
            cri::PodSandboxState::SandboxReady as i32
        );
        drop(rt);
        berthd.stop();
    }
    // And the container can be made now.
    let berthd = Berthd::start(&pods, None);
    let mut rt = pods.client().await;
    run_container(&mut rt, &pod, &pod_config, config("app")).await;
    remove_pod(&mut rt, &pod).await;
    assert_eq!(snapshots(), before);
    drop(rt);
    berthd.stop();
    drop(guard);
    drop(pods);
}
