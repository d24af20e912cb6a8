//! Pods in their own user namespace (Kubernetes `hostUsers: false`, CRI `userns_options` mode
//! POD) on a test-owned CNI network (root), under berth-runtime, crun and runc: the pod's
//! network namespace belongs to its user namespace (berthd pins both), so the pod has a sysfs
//! of its own that shows only its interfaces; the container's root is uid 0 mapped to the
//! pod's host range; the image's files keep their owners (berthd mounts the rootfs on idmapped
//! layers) and the container's root writes its rootfs, stored with the pod's host ids; a
//! host-path volume with the kubelet's mappings (idmapped by the runtime where it can, by berthd
//! for runc 1.1) and an image volume show their owners, the volume's new file is owned by host
//! uid 0 and a read-only volume stays read-only; after RemovePodSandbox nothing stays mounted
//! or pinned and the volume's files are all there. Invalid mappings are refused naming the
//! field. berthd killed during RunPodSandbox or CreateContainer of such a pod (also with the
//! volumes it bound idmapped for runc) leaves nothing once restarted.

#[path = "support/berthd_process.rs"]
mod berthd_process;
#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use berth_cri::service::crash_point;

use berthd_process::Berthd;
use calls::{create_container, pull, remove_pod, start_container, try_run_pod, Rt};
use cri_api::v1 as cri;
use node::Leftovers;

/// Host ids of the test's pods: one 65536-wide range each from here, far above real users.
const HOST_BASE: u32 = 300_000;
const RANGE: u32 = 65_536;

fn can_run(test: &str) -> bool {
    support::can_run(test) && pods::can_run(test)
}

/// A registry with the busybox fixture (`<host>/berth/busybox:v1`, one layer) and the same with
/// a second layer holding `/data/owned`, owned by 1000:1000 (`:v2`), kept alive by the test.
struct Fixture {
    registry: support::Registry,
    _work: tempfile::TempDir,
    image: String,
    layered: String,
}

fn fixture() -> Fixture {
    let registry = support::registry();
    let work = tempfile::tempdir().unwrap();
    let layout = node::build_busybox(work.path());
    let image = format!("{}/berth/busybox:v1", registry.host);
    support::push(&layout, "v1", &image, &[]);
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("owned"), b"x").unwrap();
    std::os::unix::fs::chown(data.join("owned"), Some(1000), Some(1000)).unwrap();
    let v1 = format!("{}:v1", layout.display());
    support::run(Command::new("umoci").args(["tag", "--image", &v1, "v2"]));
    support::run(
        Command::new("umoci")
            .args(["insert", "--image", &format!("{}:v2", layout.display())])
            .arg(&data)
            .arg("/data"),
    );
    let layered = format!("{}/berth/busybox:v2", registry.host);
    support::push(&layout, "v2", &layered, &[]);
    Fixture {
        registry,
        _work: work,
        image,
        layered,
    }
}

fn idmap(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

/// The namespaces the kubelet asks for a `hostUsers: false` pod: its own network, IPC and user
/// namespace, a PID namespace per container.
fn userns_options(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids,
            gids,
        }),
        ..Default::default()
    }
}

fn userns_pod(name: &str, ns: &cri::NamespaceOption) -> cri::PodSandboxConfig {
    let mut config = pods::pod(name);
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(ns.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A busybox container that sleeps, with the pod's namespace options (as the kubelet repeats
/// them) and `mounts`.
fn sleeper(
    image: &str,
    ns: &cri::NamespaceOption,
    mounts: Vec<cri::Mount>,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "300".into()],
        mounts,
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(ns.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `sh -c script` in the container: its stdout, trimmed; panics (with stderr) unless it exits 0.
async fn sh(rt: &mut Rt, id: &str, script: &str, what: &str) -> String {
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: ExecSync {script:?}: {e}"))
        .into_inner();
    assert_eq!(
        r.exit_code,
        0,
        "{what}: {script:?} failed: {}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).trim().to_owned()
}

/// The handlers to run: berth-runtime always, runc and crun when installed.
fn handlers(test: &str) -> Vec<&'static str> {
    let mut out = vec![""];
    for (name, path) in [("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")] {
        if !Path::new(path).exists() {
            eprintln!("SKIP {test} for {name}: {path} is not installed (scripts/install-deps)");
            continue;
        }
        out.push(name);
    }
    out
}

/// Whether berthd reports the handler as running user-namespaced pods (RuntimeStatus's
/// `user_namespaces`): every handler that joins user namespaces, runc 1.1 too (berthd idmaps
/// the mounts it cannot).
async fn runs_userns_pods(rt: &mut Rt, handler: &str) -> bool {
    let name = if handler.is_empty() { "berth" } else { handler };
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    status
        .runtime_handlers
        .iter()
        .find(|h| h.name == name)
        .and_then(|h| h.features.as_ref())
        .is_some_and(|f| f.user_namespaces)
}

/// Files named `name` under `dir`, at most `depth` levels down (symlinks not followed).
fn find_files(dir: &Path, name: &str, depth: u32) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 0 {
            found.extend(find_files(&entry.path(), name, depth - 1));
        } else if kind.is_file() && entry.file_name() == name {
            found.push(entry.path());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn userns_pod_sees_its_files_owned_by_its_root() {
    let test = "userns_pod_sees_its_files_owned_by_its_root";
    if !can_run(test) {
        return;
    }
    let fx = fixture();
    let host = fx.registry.host.clone();
    let (pods, guard, mut rt) = calls::pods_pulling(21, host, &[&fx.image, &fx.layered]).await;

    for (i, handler) in handlers(test).into_iter().enumerate() {
        let what = if handler.is_empty() { "berth" } else { handler };
        assert!(
            runs_userns_pods(&mut rt, handler).await,
            "{what}: RuntimeStatus says it cannot run userns pods"
        );
        let host_id = HOST_BASE + i as u32 * RANGE;
        let maps = vec![idmap(0, host_id, RANGE)];
        let ns = userns_options(maps.clone(), maps.clone());
        let pod_config = userns_pod(&format!("userns-{what}"), &ns);
        let pod = try_run_pod(&mut rt, &pod_config, handler)
            .await
            .unwrap_or_else(|e| panic!("{what}: RunPodSandbox: {e}"));
        guard.sandbox(&pod);

        // A host-path volume owned by host root (holding a file of host uid 1000), with the
        // mappings the kubelet gives volumes of a user-namespaced pod, also read-only; and the
        // image itself as an image volume.
        let vol = pods.dir.path().join(format!("vol-{what}"));
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("owned"), b"x").unwrap();
        std::os::unix::fs::chown(vol.join("owned"), Some(1000), Some(1000)).unwrap();
        let mounts = vec![
            cri::Mount {
                container_path: "/vol".into(),
                host_path: vol.display().to_string(),
                uid_mappings: maps.clone(),
                gid_mappings: maps.clone(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/volro".into(),
                host_path: vol.display().to_string(),
                uid_mappings: maps.clone(),
                gid_mappings: maps.clone(),
                readonly: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/iv".into(),
                image: Some(cri::ImageSpec {
                    image: fx.image.clone(),
                    ..Default::default()
                }),
                readonly: true,
                ..Default::default()
            },
            // Two layers: an overlay view on idmapped layers.
            cri::Mount {
                container_path: "/iv2".into(),
                image: Some(cri::ImageSpec {
                    image: fx.layered.clone(),
                    ..Default::default()
                }),
                readonly: true,
                ..Default::default()
            },
        ];
        let id = create_container(
            &mut rt,
            &pod,
            &pod_config,
            sleeper(&fx.layered, &ns, mounts),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: CreateContainer: {e}"));
        start_container(&mut rt, &id)
            .await
            .unwrap_or_else(|e| panic!("{what}: StartContainer: {e}"));

        assert_eq!(sh(&mut rt, &id, "id -u", what).await, "0", "{what}");
        let uid_map = sh(&mut rt, &id, "cat /proc/self/uid_map", what).await;
        assert_eq!(
            uid_map.split_whitespace().collect::<Vec<_>>(),
            ["0", &host_id.to_string(), &RANGE.to_string()],
            "{what}: uid_map {uid_map:?}"
        );
        // The pod's own network namespace (owned by its user namespace) and a sysfs of its
        // own: only the pod's interfaces, not the host's.
        assert_eq!(
            sh(&mut rt, &id, "ls /sys/class/net", what).await,
            "eth0\nlo",
            "{what}: /sys/class/net"
        );
        let stat = |path: &str| format!("busybox stat -c %u:%g {path}");
        assert_eq!(
            sh(&mut rt, &id, &stat("/bin/busybox"), what).await,
            "0:0",
            "{what}"
        );
        assert_eq!(sh(&mut rt, &id, &stat("/"), what).await, "0:0", "{what}");
        assert_eq!(
            sh(
                &mut rt,
                &id,
                "busybox touch /newfile && busybox stat -c %u /newfile",
                what
            )
            .await,
            "0",
            "{what}: a file the container's root creates in its rootfs"
        );
        // On the host, the upper dir holds it with the pod's host ids (as containerd's does).
        let stored = find_files(&pods.config.root, "newfile", 8);
        assert_eq!(stored.len(), 1, "{what}: {stored:?}");
        let meta = std::fs::metadata(&stored[0]).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (host_id, host_id), "{what}");
        // The host-path volume: host root's dir is the container root's (not 65534's, as it
        // would be unmapped), host uid 1000's file is 1000's, and the volume is writable.
        assert_eq!(
            sh(&mut rt, &id, &stat("/vol /vol/owned /volro/owned"), what).await,
            "0:0\n1000:1000\n1000:1000",
            "{what}: the host-path volume's owners"
        );
        assert_eq!(
            sh(
                &mut rt,
                &id,
                "echo hi > /vol/f && busybox stat -c %u:%g /vol/f",
                what
            )
            .await,
            "0:0",
            "{what}"
        );
        let written = std::fs::metadata(vol.join("f")).unwrap();
        assert_eq!(
            (written.uid(), written.gid()),
            (0, 0),
            "{what}: the volume's new file on the host"
        );
        assert!(
            sh(
                &mut rt,
                &id,
                "busybox touch /volro/x 2>&1 || echo refused",
                what
            )
            .await
            .contains("refused"),
            "{what}: a read-only volume"
        );
        // A non-root owner of the image keeps its id too, in the rootfs and image volumes.
        assert_eq!(
            sh(&mut rt, &id, &stat("/data/owned"), what).await,
            "1000:1000",
            "{what}"
        );
        // The image volumes: the image's owners.
        assert_eq!(
            sh(&mut rt, &id, &stat("/iv/bin/busybox"), what).await,
            "0:0",
            "{what}"
        );
        assert_eq!(
            sh(
                &mut rt,
                &id,
                &stat("/iv2/bin/busybox /iv2/data/owned"),
                what
            )
            .await,
            "0:0\n1000:1000",
            "{what}"
        );
        assert!(
            sh(
                &mut rt,
                &id,
                "busybox touch /iv2/x 2>&1 || echo refused",
                what
            )
            .await
            .contains("refused"),
            "{what}: an image volume is read-only"
        );
        // The pod's files (/etc/hosts, /etc/resolv.conf) are readable.
        let hosts = sh(&mut rt, &id, "cat /etc/hosts", what).await;
        assert!(hosts.contains("localhost"), "{what}: /etc/hosts {hosts:?}");

        // The container's processes run as the pod's host range on the host.
        let status = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        let pid = status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_i64());
        if let Some(pid) = pid {
            let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid_line = proc_status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .unwrap_or_default()
                .to_owned();
            assert_eq!(
                uid_line.split_whitespace().nth(1),
                Some(host_id.to_string().as_str()),
                "{what}: {uid_line}"
            );
        }

        calls::remove_pod_for(&mut rt, &pod, what).await;
        let left = node::mounts_under(&pods.state());
        assert!(left.is_empty(), "{what}: still mounted: {left:?}");
        // The volume's files stay, with their host owners; the pod's namespaces are unpinned.
        assert_eq!(std::fs::metadata(vol.join("f")).unwrap().uid(), 0, "{what}");
        assert_eq!(
            std::fs::metadata(vol.join("owned")).unwrap().uid(),
            1000,
            "{what}"
        );
        let netns = std::fs::read_dir(pods.state().join("netns"))
            .into_iter()
            .flatten()
            .count();
        assert_eq!(netns, 0, "{what}: pinned netns left");
    }
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_userns_mappings_are_refused_naming_the_field() {
    let test = "invalid_userns_mappings_are_refused_naming_the_field";
    if !can_run(test) {
        return;
    }
    let fx = fixture();
    let host = fx.registry.host.clone();
    let (pods, guard, mut rt) = calls::pods_pulling(22, host, &[&fx.image]).await;

    let ok = vec![idmap(0, HOST_BASE, RANGE)];
    let cases: Vec<(&str, Vec<cri::IdMapping>, Vec<cri::IdMapping>, &str)> = vec![
        ("empty gids", ok.clone(), vec![], "userns_options.gids"),
        (
            "zero length",
            vec![idmap(0, HOST_BASE, 0)],
            ok.clone(),
            "userns_options.uids",
        ),
        (
            "overlapping container ids",
            vec![
                idmap(0, HOST_BASE, RANGE),
                idmap(1000, HOST_BASE + 2 * RANGE, 10),
            ],
            ok.clone(),
            "userns_options.uids",
        ),
        (
            "overlapping host ids",
            ok.clone(),
            vec![idmap(0, HOST_BASE, 100), idmap(100, HOST_BASE + 50, 100)],
            "userns_options.gids",
        ),
    ];
    for (i, (what, uids, gids, field)) in cases.into_iter().enumerate() {
        let config = userns_pod(&format!("bad-{i}"), &userns_options(uids, gids));
        let err = match try_run_pod(&mut rt, &config, "").await {
            Ok(pod) => {
                guard.sandbox(&pod);
                panic!("{what}: RunPodSandbox accepted it");
            }
            Err(e) => e,
        };
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {err:?}");
    }

    // A container whose mappings differ from its pod's.
    let ns = userns_options(ok.clone(), ok.clone());
    let pod_config = userns_pod("mismatch", &ns);
    let pod = try_run_pod(&mut rt, &pod_config, "")
        .await
        .expect("RunPodSandbox");
    guard.sandbox(&pod);
    let other = vec![idmap(0, HOST_BASE + RANGE, RANGE)];
    let err = create_container(
        &mut rt,
        &pod,
        &pod_config,
        sleeper(&fx.image, &userns_options(other.clone(), other), vec![]),
    )
    .await
    .expect_err("a container with other mappings than its pod's");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("security_context.namespace_options.userns_options"),
        "{err:?}"
    );
    // A volume with bad mappings.
    let bad_volume = cri::Mount {
        container_path: "/vol".into(),
        host_path: pods.dir.path().display().to_string(),
        uid_mappings: vec![idmap(0, HOST_BASE, 0)],
        gid_mappings: ok.clone(),
        ..Default::default()
    };
    let err = create_container(
        &mut rt,
        &pod,
        &pod_config,
        sleeper(&fx.image, &ns, vec![bad_volume]),
    )
    .await
    .expect_err("a volume mapping of length 0");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("mounts.uidMappings"), "{err:?}");

    remove_pod(&mut rt, &pod).await;
    let left = node::mounts_under(&pods.state());
    assert!(left.is_empty(), "still mounted: {left:?}");
    drop(guard);
}

/// berthd killed in the middle of CreateContainer in a user-namespaced pod — with the layers
/// bound idmapped on the scratch dir, with the idmapped rootfs mounted, with the container
/// created — leaves nothing mounted once the next berthd has swept; a container made then, and
/// its pod, leave nothing mounted once removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_in_a_userns_create_container_leaves_no_mount() {
    let test = "crash_in_a_userns_create_container_leaves_no_mount";
    if !can_run(test) {
        return;
    }
    let fx = fixture();
    let host = fx.registry.host.clone();
    let pods = pods::Pods::configure(23, |c| c.registry.insecure = vec![host]);
    let guard = Leftovers::new(pods.dir.path());
    let maps = vec![idmap(0, HOST_BASE, RANGE)];
    let ns = userns_options(maps.clone(), maps);
    let pod_config = userns_pod("crash", &ns);
    let config = || {
        sleeper(
            &fx.image,
            &ns,
            vec![cri::Mount {
                container_path: "/iv".into(),
                image: Some(cri::ImageSpec {
                    image: fx.image.clone(),
                    ..Default::default()
                }),
                readonly: true,
                ..Default::default()
            }],
        )
    };
    let berthd = Berthd::start(&pods, None);
    pull(&pods.channel().await, &fx.image).await;
    let mut rt = pods.client().await;
    let pod = try_run_pod(&mut rt, &pod_config, "")
        .await
        .expect("RunPodSandbox");
    guard.sandbox(&pod);
    drop(rt);
    berthd.stop();
    let containers = pods.state().join("containers");
    for point in [
        crash_point::CONTAINER_LAYERS_IDMAPPED,
        crash_point::CONTAINER_ROOTFS_MOUNTED,
        crash_point::CONTAINER_SHIM_CREATED,
    ] {
        let berthd = Berthd::start(&pods, Some(point));
        let mut rt = pods.client().await;
        create_container(&mut rt, &pod, &pod_config, config())
            .await
            .expect_err("berthd crashed");
        drop(rt);
        berthd.wait_killed();
        let left = node::mounts_under(&containers);
        let expected = if point == crash_point::CONTAINER_LAYERS_IDMAPPED {
            "/m"
        } else {
            "/rootfs"
        };
        assert!(
            left.iter().any(|m| m.to_string_lossy().ends_with(expected)),
            "{point}: {left:?}"
        );

        let (berthd, rt) = restart_swept(&pods, &containers, point).await;
        drop(rt);
        berthd.stop();
    }
    let berthd = Berthd::start(&pods, None);
    let mut rt = pods.client().await;
    let id = create_container(&mut rt, &pod, &pod_config, config())
        .await
        .expect("CreateContainer after the sweeps");
    start_container(&mut rt, &id).await.expect("StartContainer");
    assert_eq!(
        sh(
            &mut rt,
            &id,
            "busybox stat -c %u:%g /bin/busybox /iv/bin/busybox",
            "berth"
        )
        .await,
        "0:0\n0:0"
    );
    remove_pod(&mut rt, &pod).await;
    let left = node::mounts_under(&pods.state());
    assert!(left.is_empty(), "still mounted: {left:?}");
    drop(rt);
    berthd.stop();
    drop(guard);
}

/// Under runc 1.1 (which cannot idmap mounts) berthd binds a user-namespaced pod's volume
/// idmapped itself: killed right after, the next berthd unmounts it and leaves the host
/// path's files alone; a container made then is removed without leaving a mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_with_volumes_idmapped_by_berthd_keeps_the_host_files() {
    let test = "crash_with_volumes_idmapped_by_berthd_keeps_the_host_files";
    if !can_run(test) {
        return;
    }
    if !Path::new("/usr/sbin/runc").exists() {
        eprintln!("SKIP {test}: /usr/sbin/runc is not installed (scripts/install-deps)");
        return;
    }
    let fx = fixture();
    let host = fx.registry.host.clone();
    let pods = pods::Pods::configure(26, |c| c.registry.insecure = vec![host]);
    let guard = Leftovers::new(pods.dir.path());
    let maps = vec![idmap(0, HOST_BASE, RANGE)];
    let ns = userns_options(maps.clone(), maps.clone());
    let pod_config = userns_pod("crash-vol", &ns);
    let vol = pods.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("keep"), b"x").unwrap();
    let config = || {
        sleeper(
            &fx.image,
            &ns,
            vec![cri::Mount {
                container_path: "/vol".into(),
                host_path: vol.display().to_string(),
                uid_mappings: maps.clone(),
                gid_mappings: maps.clone(),
                ..Default::default()
            }],
        )
    };
    let berthd = Berthd::start(&pods, Some(crash_point::CONTAINER_VOLUMES_IDMAPPED));
    pull(&pods.channel().await, &fx.image).await;
    let mut rt = pods.client().await;
    let pod = try_run_pod(&mut rt, &pod_config, "runc")
        .await
        .expect("RunPodSandbox");
    guard.sandbox(&pod);
    create_container(&mut rt, &pod, &pod_config, config())
        .await
        .expect_err("berthd crashed");
    drop(rt);
    berthd.wait_killed();
    let containers = pods.state().join("containers");
    let left = node::mounts_under(&containers);
    assert!(
        left.iter()
            .any(|m| m.to_string_lossy().ends_with("/idmapped/0")),
        "the volume berthd bound: {left:?}"
    );

    let (berthd, mut rt) = restart_swept(&pods, &containers, "idmapped volume").await;
    assert_eq!(
        std::fs::read(vol.join("keep")).unwrap(),
        b"x",
        "the host's file"
    );
    let id = create_container(&mut rt, &pod, &pod_config, config())
        .await
        .expect("CreateContainer after the sweep");
    start_container(&mut rt, &id).await.expect("StartContainer");
    assert_eq!(
        sh(&mut rt, &id, "busybox stat -c %u:%g /vol/keep", "runc").await,
        "0:0"
    );
    remove_pod(&mut rt, &pod).await;
    let left = node::mounts_under(&pods.state());
    assert!(left.is_empty(), "still mounted: {left:?}");
    assert_eq!(
        std::fs::read(vol.join("keep")).unwrap(),
        b"x",
        "the host's file"
    );
    drop(rt);
    berthd.stop();
    drop(guard);
}

/// berthd killed in the middle of RunPodSandbox of a user-namespaced pod — with its user and
/// network namespaces pinned and attached, and with the pause started — leaves nothing pinned
/// or mounted once the next berthd has swept; a pod made then leaves nothing once removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_in_a_userns_run_pod_sandbox_leaves_no_pin() {
    let test = "crash_in_a_userns_run_pod_sandbox_leaves_no_pin";
    if !can_run(test) {
        return;
    }
    let pods = pods::Pods::configure(24, |_| {});
    let guard = Leftovers::new(pods.dir.path());
    let maps = vec![idmap(0, HOST_BASE, RANGE)];
    let ns = userns_options(maps.clone(), maps);
    let netns_dir = pods.state().join("netns");
    let pinned = |dir: &Path| std::fs::read_dir(dir).into_iter().flatten().count();
    for point in [
        crash_point::SANDBOX_NETWORK_ATTACHED,
        crash_point::SANDBOX_PAUSE_STARTED,
    ] {
        let berthd = Berthd::start(&pods, Some(point));
        let mut rt = pods.client().await;
        try_run_pod(&mut rt, &userns_pod(&format!("crash-{point}"), &ns), "")
            .await
            .expect_err("berthd crashed");
        drop(rt);
        berthd.wait_killed();
        let left = node::mounts_under(&pods.state());
        assert!(
            left.iter().any(|m| m.ends_with("userns")),
            "{point}: the pod's user namespace is not pinned: {left:?}"
        );
        assert_eq!(pinned(&netns_dir), 1, "{point}");

        let berthd = Berthd::start(&pods, None);
        let mut rt = pods.client().await;
        let listed = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(listed.is_empty(), "{point}: {listed:?}");
        let left = node::mounts_under(&pods.state());
        assert!(left.is_empty(), "{point}: still mounted {left:?}");
        assert_eq!(pinned(&netns_dir), 0, "{point}: netns left");
        drop(rt);
        berthd.stop();
    }
    let berthd = Berthd::start(&pods, None);
    let mut rt = pods.client().await;
    let pod = try_run_pod(&mut rt, &userns_pod("after-crash", &ns), "")
        .await
        .expect("RunPodSandbox after the sweeps");
    guard.sandbox(&pod);
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    // Stopped: the namespaces are unpinned already.
    let left = node::mounts_under(&pods.state());
    assert!(
        !left.iter().any(|m| m.ends_with("userns")),
        "after StopPodSandbox: {left:?}"
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("RemovePodSandbox");
    let left = node::mounts_under(&pods.state());
    assert!(left.is_empty(), "still mounted: {left:?}");
    assert_eq!(pinned(&netns_dir), 0, "netns left");
    drop(rt);
    berthd.stop();
    drop(guard);
}

/// A user-namespaced pod on the host network: a new user namespace with the pod's mappings
/// (no netns of its own, so nothing pinned but shared files), the host's /sys bound read-only
/// (sysfs needs the user namespace owning the host's netns), under every handler; Status
/// says so (RuntimeFeatures.user_namespaces_host_network).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_network_userns_pod_sees_the_hosts_sys() {
    let test = "host_network_userns_pod_sees_the_hosts_sys";
    if !can_run(test) {
        return;
    }
    let fx = fixture();
    let host = fx.registry.host.clone();
    let (pods, guard, mut rt) = calls::pods_pulling(25, host, &[&fx.image]).await;
    // What the pods below show, berthd reports to the kubelet (KEP-5607).
    let features = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .features
        .unwrap_or_default();
    assert!(features.user_namespaces_host_network, "{features:?}");
    let host_iface = std::fs::read_to_string("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"00000000"))
        .map(|f| f[0].to_owned());
    for (i, handler) in handlers(test).into_iter().enumerate() {
        let what = if handler.is_empty() { "berth" } else { handler };
        let host_id = HOST_BASE + i as u32 * RANGE;
        let maps = vec![idmap(0, host_id, RANGE)];
        let mut ns = userns_options(maps.clone(), maps);
        ns.network = cri::NamespaceMode::Node as i32;
        let pod_config = userns_pod(&format!("hostnet-{what}"), &ns);
        let pod = try_run_pod(&mut rt, &pod_config, handler)
            .await
            .unwrap_or_else(|e| panic!("{what}: RunPodSandbox: {e}"));
        guard.sandbox(&pod);
        let id = create_container(&mut rt, &pod, &pod_config, sleeper(&fx.image, &ns, vec![]))
            .await
            .unwrap_or_else(|e| panic!("{what}: CreateContainer: {e}"));
        start_container(&mut rt, &id)
            .await
            .unwrap_or_else(|e| panic!("{what}: StartContainer: {e}"));
        assert_eq!(sh(&mut rt, &id, "id -u", what).await, "0", "{what}");
        let uid_map = sh(&mut rt, &id, "cat /proc/self/uid_map", what).await;
        assert_eq!(
            uid_map.split_whitespace().nth(1),
            Some(host_id.to_string().as_str()),
            "{what}: uid_map {uid_map:?}"
        );
        // The host's default-route interface (other tests add and remove theirs meanwhile).
        if let Some(iface) = &host_iface {
            let seen = sh(&mut rt, &id, &format!("ls /sys/class/net/{iface}/"), what).await;
            assert!(
                seen.contains("address"),
                "{what}: the host's {iface}: {seen:?}"
            );
        }
        assert!(
            sh(
                &mut rt,
                &id,
                "busybox touch /sys/x 2>&1 || echo refused",
                what
            )
            .await
            .contains("refused"),
            "{what}: /sys is read-only"
        );
        calls::remove_pod_for(&mut rt, &pod, what).await;
        let left = node::mounts_under(&pods.state());
        assert!(left.is_empty(), "{what}: still mounted: {left:?}");
    }
    drop(guard);
}

/// Starts berthd again after a crash in CreateContainer: once it answers (it has swept by
/// then) it lists no container and nothing is left mounted under `containers`.
async fn restart_swept(pods: &pods::Pods, containers: &Path, what: &str) -> (Berthd, Rt) {
    let berthd = Berthd::start(pods, None);
    let mut rt = pods.client().await;
    let listed = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{what}: {listed:?}");
    let left = node::mounts_under(containers);
    assert!(
        left.is_empty(),
        "{what}: still mounted after the sweep: {left:?}"
    );
    (berthd, rt)
}
