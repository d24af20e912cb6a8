//! CreateContainer (containerd: `container_create.go`): reserve the name, prepare and mount the
//! rootfs snapshot, build the spec, start a shim (which creates the container through the OCI
//! runtime, not started), record it. On failure every step taken is undone.
//!
//! In a pod with its own user namespace (`hostUsers: false`, CRI `userns_options` mode POD)
//! the rootfs snapshot is mounted idmapped with the pod's mappings (`idmapped_snapshot.rs`,
//! which also says what the host stores for the container's files): inside the pod the image's
//! files keep their owners (root's are root's, not 65534's) and the container's root can write
//! them; the rootfs is still one mount, released as any other; runc and crun see a plain dir.
//! The kubelet's volumes with uid/gid mappings are idmapped by the runtime where it can, by
//! berthd otherwise (`idmapped_volumes.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use cri_api::v1 as cri;

use super::error::{blocking, ContainerError};
use super::image::{self, ResolveError, ResolvedImage};
use super::oci::OciRuntime;
use super::sandbox_view::SandboxView;
use super::{idmapped_snapshot, idmapped_volumes, image_volumes, remove, Containers};
use crate::service::handler_features::Features;
use crate::shim_client::{Shim, ShimArgs};
use crate::spec::{self, ContainerSpecInput, PodUserns};
use crate::store::container::{ContainerMeta, ImageVolume, State, Status};

const RPC: &str = "CreateContainer";

pub(super) async fn create(
    inner: &Arc<Containers>,
    req: cri::CreateContainerRequest,
    sandbox: SandboxView,
) -> Result<cri::CreateContainerResponse, ContainerError> {
    let config = req.config.ok_or(ContainerError::Missing {
        rpc: RPC,
        what: "config",
    })?;
    let meta = config
        .metadata
        .clone()
        .filter(|m| !m.name.is_empty())
        .ok_or(ContainerError::Missing {
            rpc: RPC,
            what: "config.metadata.name",
        })?;
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .ok_or(ContainerError::Missing {
            rpc: RPC,
            what: "config.image.image",
        })?;
    let pod = sandbox.config.metadata.clone().unwrap_or_default();
    let name = format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    );
    let id = crate::store::new_id()?;
    inner.store.reserve_name(&name, &id)?;
    let task_inner = inner.clone();
    let (task_id, task_name) = (id.clone(), name.clone());
    // The name is released inside the task, so a cancelled request still cleans up.
    blocking("create container", move || {
        let result = build(&task_inner, &task_id, &task_name, config, &sandbox, &image);
        if result.is_err() {
            task_inner.store.release_name(&task_name, &task_id);
        }
        result
    })
    .await?;
    Ok(cri::CreateContainerResponse { container_id: id })
}

/// What has been done so far, undone in reverse on failure.
struct Undo<'a> {
    inner: &'a Containers,
    id: &'a str,
    dir: PathBuf,
    snapshot: bool,
    mounted: Option<PathBuf>,
    shim: Option<(OciRuntime, PathBuf)>,
    image_volumes: Vec<ImageVolume>,
    /// berthd bound the volumes idmapped (`idmapped_volumes.rs`).
    idmapped_volumes: bool,
    done: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some((runtime, shim_dir)) = &self.shim {
            if let Err(e) = runtime.delete(self.id) {
                tracing::warn!(container = %self.id, error = %e, "undo create: runtime delete");
            }
            remove::wait_shim_gone(shim_dir);
        }
        let mut keep_dir = false;
        if self.idmapped_volumes {
            if let Err(e) = idmapped_volumes::release(self.id, &self.dir) {
                tracing::warn!(container = %self.id, error = %e, "undo create: release idmapped volumes");
                keep_dir = true;
            }
        }
        if let Err(e) = image_volumes::try_release(self.inner, self.id, &self.image_volumes) {
            tracing::warn!(container = %self.id, error = %e, "undo create: release image volumes");
            keep_dir = true;
        }
        if let Some(rootfs) = &self.mounted {
            if let Err(e) = image_store::unmount(rootfs) {
                tracing::warn!(container = %self.id, error = %e, "undo create: unmount rootfs");
                keep_dir = true;
            }
        }
        if self.snapshot && !keep_dir {
            if let Err(e) = self.inner.images.snapshots().remove(self.id) {
                tracing::warn!(container = %self.id, error = %e, "undo create: remove snapshot");
            }
        }
        if !keep_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(container = %self.id, error = %e, "undo create: remove dir");
                }
            }
        }
    }
}

pub(super) fn io_err(
    id: &str,
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ContainerError {
    let (id, path) = (id.to_owned(), path.to_owned());
    move |source| ContainerError::Io {
        id,
        op,
        path,
        source,
    }
}

fn build(
    inner: &Containers,
    id: &str,
    name: &str,
    config: cri::ContainerConfig,
    sandbox: &SandboxView,
    image_name: &str,
) -> Result<(), ContainerError> {
    let handler = if sandbox.runtime_handler.is_empty() {
        inner.config.default_runtime.clone()
    } else {
        sandbox.runtime_handler.clone()
    };
    // The container's cgroup goes in the pod's, under the pod's driver.
    let driver = sandbox.cgroup_driver;
    let runtime = OciRuntime::for_handler(&inner.config, &handler, driver).ok_or(
        ContainerError::UnknownHandler {
            name: name.to_owned(),
            handler: handler.clone(),
        },
    )?;
    if config.mounts.iter().any(|m| m.recursive_read_only) {
        let features = inner.features.of(&runtime.path);
        refuse_unsupported_rro(name, &handler, &config.mounts, &features)?;
    }
    let image: ResolvedImage = image::resolve(&inner.images, image_name).map_err(|e| match e {
        ResolveError::NotFound => ContainerError::ImageNotFound {
            name: name.to_owned(),
            image: image_name.to_owned(),
        },
        ResolveError::Broken(reason) => ContainerError::Image {
            name: name.to_owned(),
            image: image_name.to_owned(),
            reason,
        },
    })?;
    let target_pid = target_pid(inner, &config)?;
    let log_path = log_path(&sandbox.config, &config);
    let userns = pod_userns(sandbox, &config, name)?;

    let dir = inner.config.state.join("containers").join(id);
    let (rootfs, bundle, shim_dir) = (dir.join("rootfs"), dir.join("bundle"), dir.join("shim"));
    let mut undo = Undo {
        inner,
        id,
        dir: dir.clone(),
        snapshot: false,
        mounted: None,
        shim: None,
        image_volumes: Vec::new(),
        idmapped_volumes: false,
        done: false,
    };
    for d in [&rootfs, &bundle, &shim_dir] {
        std::fs::create_dir_all(d).map_err(io_err(id, "create dir", d))?;
    }
    let mount = inner
        .images
        .snapshots()
        .prepare(id, image.chain_id.as_ref())
        .map_err(|source| ContainerError::Snapshot {
            id: id.to_owned(),
            source,
        })?;
    undo.snapshot = true;
    match &userns {
        Some(map) => idmapped_snapshot::mount(
            id,
            "rootfs",
            &mount,
            &rootfs,
            inner.images.snapshots().root(),
            &dir.join("m"),
            map,
        )?,
        None => mount
            .mount(&rootfs)
            .map_err(|source| ContainerError::Mount {
                id: id.to_owned(),
                source,
            })?,
    }
    undo.mounted = Some(rootfs.clone());
    crate::service::crash_point::reached(crate::service::crash_point::CONTAINER_ROOTFS_MOUNTED);
    if let Some(log) = &log_path {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(id, "create log dir", parent))?;
        }
    }

    let cgroups_path = driver.cgroups_path(&sandbox.cgroup_parent, id);
    let pod = sandbox.config.metadata.clone().unwrap_or_default();
    let container_name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut annotations: HashMap<String, String> = [
        ("io.kubernetes.cri.container-type", "container".to_owned()),
        ("io.kubernetes.cri.container-name", container_name),
        ("io.kubernetes.cri.sandbox-id", sandbox.id.clone()),
        ("io.kubernetes.cri.sandbox-name", pod.name.clone()),
        ("io.kubernetes.cri.sandbox-namespace", pod.namespace.clone()),
        ("io.kubernetes.cri.sandbox-uid", pod.uid.clone()),
        ("io.kubernetes.cri.image-name", image.name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Env values that are not UTF-8: lossy in process.env, exact in berth's annotation for a
    // runtime that takes it.
    if let Some((bytes, keys)) = spec::env_bytes(&config.envs) {
        if inner.features.of(&runtime.path).env_bytes {
            annotations.insert(
                berth_runtime::features::ANNOTATION_ENV_BYTES.to_owned(),
                bytes,
            );
        } else {
            // The names only: a value may be a Secret's.
            for key in &keys {
                tracing::warn!(
                    container = %name,
                    id,
                    handler = %handler,
                    variable = %key,
                    "env value is not UTF-8 and the handler's runtime does not take its bytes \
                     ({}): the process gets it with U+FFFD for each invalid byte",
                    berth_runtime::features::ANNOTATION_ENV_BYTES
                );
            }
        }
    }
    // Image volumes: read-only views of their images, bound like host paths.
    let mut spec_config = config.clone();
    let (mounts, volumes) =
        image_volumes::mount_all(inner, id, name, &dir, &config.mounts, userns.as_ref())?;
    undo.image_volumes = volumes;
    // Volumes with mappings in a user-namespaced pod: idmapped by berthd when the handler's
    // runtime cannot (runc 1.1), by the runtime otherwise.
    spec_config.mounts = if userns.is_some() && !inner.features.of(&runtime.path).idmap_mounts {
        undo.idmapped_volumes = true;
        let mounts = idmapped_volumes::mount_all(id, name, &dir, &mounts)?;
        crate::service::crash_point::reached(
            crate::service::crash_point::CONTAINER_VOLUMES_IDMAPPED,
        );
        mounts
    } else {
        mounts
    };
    let read_etc = |file: &str| std::fs::read_to_string(rootfs.join("etc").join(file)).ok();
    let input = ContainerSpecInput {
        id: id.to_owned(),
        config: spec_config,
        sandbox_id: sandbox.id.clone(),
        sandbox_config: sandbox.config.clone(),
        sandbox_pid: sandbox.pid,
        image_config: image.config.clone(),
        image_name: image.name.clone(),
        rootfs: rootfs.clone(),
        passwd: read_etc("passwd"),
        group: read_etc("group"),
        cgroups_path: cgroups_path.clone(),
        files: sandbox.files.clone(),
        annotations,
        target_pid,
        host: inner.host.clone(),
    };
    let spec = spec::container_spec(&input).map_err(|source| ContainerError::Spec {
        name: name.to_owned(),
        source,
    })?;
    let spec_path = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).expect("specs serialize");
    // The bundle lives in the state dir (a tmpfs on a node) and is only read by the runtime's
    // create below: replaced atomically, not synced — a machine crash ends the container it
    // describes, and a `kill -9` of berthd leaves the page cache intact.
    berth_runtime::atomic_file::replace(&spec_path, &json, 0o600)
        .map_err(io_err(id, "write", &spec_path))?;

    let args = ShimArgs {
        shim_binary: inner.shim_binary.clone(),
        id: id.to_owned(),
        bundle: bundle.clone(),
        runtime: runtime.path.clone(),
        runtime_root: runtime.root.clone(),
        sealed_runtime: crate::sealed_runtime::sealed_copy(&runtime.path),
        state_dir: shim_dir.clone(),
        socket: crate::shim_client::socket_path(&inner.config.shim_socket_dir, &shim_dir),
        log_path: log_path.clone(),
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        start: false,
        cgroup_driver: driver,
    };
    // From here the runtime may hold a container, even if the shim reports a failure.
    undo.shim = Some((runtime.clone(), shim_dir.clone()));
    let shim: Shim = Shim::create(&args).map_err(|source| ContainerError::Shim {
        id: id.to_owned(),
        source,
    })?;
    crate::service::crash_point::reached(crate::service::crash_point::CONTAINER_SHIM_CREATED);

    let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
    let stop_signal = super::stop_signal::choose(
        &config,
        image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone()),
    );
    let meta = ContainerMeta {
        id: id.to_owned(),
        name: name.to_owned(),
        sandbox_id: sandbox.id.clone(),
        config,
        image_name: image.name,
        image_id: image.id,
        image_ref: image.image_ref,
        log_path,
        snapshot_key: id.to_owned(),
        rootfs,
        dir,
        bundle,
        shim_dir,
        runtime_handler: handler,
        cgroups_path,
        stop_signal,
        created_at: Utc::now(),
        image_volumes: undo.image_volumes.clone(),
    };
    let status = Status {
        state: State::Created,
        resources,
        removing: false,
    };
    let c = inner.store.add(meta, status)?;
    undo.done = true;
    inner.exit_events.wake();
    tracing::info!(container = %id, pod = %sandbox.id, name = %name, init_pid = shim.init_pid, "container created");
    super::events::publish(inner, &c, cri::ContainerEventType::ContainerCreatedEvent);
    Ok(())
}

/// The pod's user namespace (`hostUsers: false`): its mappings, checked, and the container's
/// repeating them if it names some (InvalidArgument), before anything is mounted.
fn pod_userns(
    sandbox: &SandboxView,
    config: &cri::ContainerConfig,
    name: &str,
) -> Result<Option<PodUserns>, ContainerError> {
    let pod = sandbox
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let own = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    spec::container_userns(pod, own).map_err(|source| ContainerError::Spec {
        name: name.to_owned(),
        source,
    })
}

/// The CRI log file: the sandbox's log directory joined with the container's log path.
fn log_path(sandbox: &cri::PodSandboxConfig, config: &cri::ContainerConfig) -> Option<PathBuf> {
    if config.log_path.is_empty() {
        return None;
    }
    if sandbox.log_directory.is_empty() {
        let p = PathBuf::from(&config.log_path);
        return p.is_absolute().then_some(p);
    }
    Some(Path::new(&sandbox.log_directory).join(config.log_path.trim_start_matches('/')))
}

/// For a pid namespace shared with another container (`NamespaceMode::TARGET`): its init.
fn target_pid(
    inner: &Containers,
    config: &cri::ContainerConfig,
) -> Result<Option<i32>, ContainerError> {
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let Some(ns) = ns else { return Ok(None) };
    if ns.pid != cri::NamespaceMode::Target as i32 {
        return Ok(None);
    }
    let target = inner.get(&ns.target_id)?;
    match target.status().state {
        State::Running { pid, .. } => Ok(Some(pid)),
        other => Err(ContainerError::WrongState {
            id: target.id().to_owned(),
            state: other.name(),
            op: "share its pid namespace",
        }),
    }
}

/// As containerd: a recursive read-only mount needs a runtime that says it makes one
/// (RuntimeStatus tells the kubelet which do); a plain read-only bind would leave its
/// submounts writable.
fn refuse_unsupported_rro(
    name: &str,
    handler: &str,
    mounts: &[cri::Mount],
    features: &Features,
) -> Result<(), ContainerError> {
    match mounts.iter().find(|m| m.recursive_read_only) {
        Some(m) if !features.rro_mounts => Err(ContainerError::Invalid {
            rpc: "CreateContainer",
            reason: format!(
                "container {name}: mount at {:?}: runtime handler {handler:?} does not support \
                 recursive read-only mounts",
                m.container_path
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rro_mounts_need_a_runtime_that_makes_them() {
        let mounts = [
            cri::Mount {
                container_path: "/data".into(),
                readonly: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/mnt".into(),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            },
        ];
        let without = Features::default();
        let with = Features {
            rro_mounts: true,
            ..Features::default()
        };
        let err = refuse_unsupported_rro("c", "crun", &mounts, &without).unwrap_err();
        assert!(matches!(err, ContainerError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("\"/mnt\""), "{err}");
        assert!(err.to_string().contains("\"crun\""), "{err}");
        refuse_unsupported_rro("c", "berth", &mounts, &with).unwrap();
        refuse_unsupported_rro("c", "crun", &mounts[..1], &without).unwrap();
    }
}
