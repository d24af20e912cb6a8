//! RunPodSandbox: pod dirs and files, pinned netns + CNI ADD, the pause container under a
//! berth-shim, then the record. Whatever fails, everything done so far is undone (in reverse
//! order) before the error is returned.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_cri::v1 as cri;
use tonic::Status;

use super::error::{io, Result, SandboxError};
use super::image::{self, SandboxImage};
use super::{blocking, files, oci, Sandboxes};
use crate::shim_client::{Shim, ShimArgs};
use crate::spec::{SandboxFiles, SandboxSpecInput};
use crate::store::sandbox::{PodFiles, RuntimeRef, SandboxMeta, SandboxState};

pub(super) async fn run(
    ctx: &Arc<Sandboxes>,
    req: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Status> {
    let config = req.config.unwrap_or_default();
    let m = config.metadata.clone().unwrap_or_default();
    let pod = format!("{}/{}", m.namespace, m.name);
    let prepared = prepare(ctx, &config, &req.runtime_handler);
    let (id, name, runtime) = prepared.map_err(|e| e.into_status(&pod))?;
    tracing::info!(pod = %pod, sandbox = %id, handler = %runtime.handler, "RunPodSandbox");
    let image = match ctx.config.sandbox.image.as_str() {
        "" => Ok(None),
        name => image::ensure(&ctx.images, &ctx.image_pulls, name)
            .await
            .map(Some),
    };
    let done = match image {
        Ok(image) => {
            let (ctx2, id2, name2) = (ctx.clone(), id.clone(), name.clone());
            blocking(move || create(&ctx2, id2, name2, config, runtime, image)).await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(ip) => {
            tracing::info!(pod = %pod, sandbox = %id, ip = ?ip, "sandbox ready");
            Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
        }
        Err(e) => {
            ctx.store.release_name(&name, &id);
            tracing::warn!(pod = %pod, sandbox = %id, error = %e, "RunPodSandbox failed");
            Err(e.into_status(&pod))
        }
    }
}

/// Checks the request and reserves the name; returns the new ID, the name and the runtime.
fn prepare(
    ctx: &Sandboxes,
    config: &cri::PodSandboxConfig,
    handler: &str,
) -> Result<(String, String, RuntimeRef)> {
    let Some(m) = &config.metadata else {
        return Err(SandboxError::InvalidConfig("metadata is missing".into()));
    };
    for (field, value) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(SandboxError::InvalidConfig(format!(
                "metadata.{field} is empty"
            )));
        }
    }
    let handler = if handler.is_empty() {
        ctx.config.default_runtime.as_str()
    } else {
        handler
    };
    let Some(rt) = ctx.config.runtimes.get(handler) else {
        return Err(SandboxError::UnknownHandler {
            handler: handler.to_owned(),
            have: ctx
                .config
                .runtimes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let id = crate::store::new_id()?;
    let name = format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt);
    ctx.store.reserve_name(&name, &id)?;
    let runtime = RuntimeRef {
        handler: handler.to_owned(),
        path: rt.path.clone(),
        root: rt.root.clone(),
    };
    Ok((id, name, runtime))
}

/// What has been done so far, to undo on failure.
struct Undo<'a> {
    ctx: &'a Sandboxes,
    id: String,
    config: cri::PodSandboxConfig,
    state_dir: PathBuf,
    files: PodFiles,
    netns: Option<PathBuf>,
    attached: bool,
    created: Option<(RuntimeRef, i32)>,
    pod_cgroup: Option<String>,
    /// The sandbox image's snapshot was prepared (and maybe mounted).
    image_rootfs: bool,
}

impl Undo<'_> {
    fn run(self) {
        let id = &self.id;
        let warn = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(sandbox = %id, error = %e, "undo RunPodSandbox: {what}");
        };
        if let Some((rt, pid)) = &self.created {
            if let Err(e) = oci::kill(rt, id, *pid) {
                warn("kill the pause", &e);
            }
            let shim_dir = self.state_dir.join("shim");
            if let Err(e) = oci::wait_exit(&shim_dir, *pid, Duration::from_secs(10)) {
                warn("wait for the pause", &e);
            }
            if let Err(e) = oci::delete(rt, id) {
                warn("delete the pause container", &e);
            }
            oci::reap_shim(&shim_dir, Duration::from_secs(5));
        }
        if self.image_rootfs {
            let rootfs = self.state_dir.join("rootfs");
            if let Err(e) = image::release_rootfs(&self.ctx.images, id, &rootfs) {
                warn("release the sandbox image's rootfs", &e);
            }
        }
        if let Some(netns) = &self.netns {
            if self.attached {
                if let Err(e) = self.ctx.network.detach(id, netns, &self.config) {
                    warn("CNI DEL", &e);
                }
            }
            if let Err(e) = cni::netns::remove_pinned(netns) {
                warn("remove the netns", &e);
            }
        }
        if let Err(e) = files::unmount_shm(&self.files) {
            warn("unmount /dev/shm", &e);
        }
        if let Some(parent) = &self.pod_cgroup {
            if let Err(e) = super::stats::remove_pod_cgroup(parent, id, self.ctx.systemd()) {
                warn("remove the pod cgroup", &e);
            }
        }
        if let Err(e) = files::remove_dir(&self.state_dir) {
            warn("remove the pod dir", &e);
        }
    }
}

/// The blocking part; returns the pod's IP, if any.
fn create(
    ctx: &Sandboxes,
    id: String,
    name: String,
    config: cri::PodSandboxConfig,
    runtime: RuntimeRef,
    image: Option<SandboxImage>,
) -> Result<Option<std::net::IpAddr>> {
    let state_dir = ctx.config.state.join("sandboxes").join(&id);
    let mut undo = Undo {
        ctx,
        id: id.clone(),
        config: config.clone(),
        state_dir: state_dir.clone(),
        files: PodFiles::default(),
        netns: None,
        attached: false,
        created: None,
        pod_cgroup: None,
        image_rootfs: false,
    };
    match create_steps(ctx, &id, &name, &config, runtime, image, &mut undo) {
        Ok(ip) => Ok(ip),
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

fn create_steps(
    ctx: &Sandboxes,
    id: &str,
    name: &str,
    config: &cri::PodSandboxConfig,
    runtime: RuntimeRef,
    image: Option<SandboxImage>,
    undo: &mut Undo<'_>,
) -> Result<Option<std::net::IpAddr>> {
    let created_at = Utc::now();
    let ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let host_network = ns.network == cri::NamespaceMode::Node as i32;
    let host_ipc = ns.ipc == cri::NamespaceMode::Node as i32;
    let state_dir = undo.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(io("create", &state_dir))?;
    // First of all: what a sweep after a crash needs to undo the rest (CNI DEL).
    let intent = state_dir.join(super::sweep::POD_CONFIG);
    let json = serde_json::to_vec(config).map_err(|e| {
        io("serialize", &intent)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    berth_runtime::atomic_file::write(&intent, &json, 0o600).map_err(io("write", &intent))?;

    // Network first: the pod's IPs go into its hosts file.
    let (mut network, mut ips) = (None, Vec::new());
    if !host_network {
        let netns = ctx.netns.create(id)?;
        undo.netns = Some(netns.path().to_owned());
        undo.attached = true; // a failed ADD tears itself down; DEL again is harmless
        let (net, addrs) = ctx.network.attach(id, netns.path(), config)?;
        network = Some(net);
        ips = addrs;
    }
    crate::service::crash_point::reached(crate::service::crash_point::SANDBOX_NETWORK_ATTACHED);

    let inputs = files::FileInputs {
        config,
        host_network,
        host_ipc,
        ips: &ips,
    };
    let made = files::make(&state_dir, &inputs, &mut undo.files);
    made?;

    let (cgroup_parent, owns_cgroup_parent) = match config.linux.as_ref().map(|l| &l.cgroup_parent)
    {
        Some(parent) if !parent.is_empty() => (parent.clone(), false),
        _ if ctx.systemd() => ("system.slice".to_owned(), false),
        _ => (format!("/berth/{id}"), true),
    };
    if owns_cgroup_parent {
        undo.pod_cgroup = Some(cgroup_parent.clone());
    }
    let cgroups_path = if ctx.systemd() {
        format!("{cgroup_parent}:berth:{id}")
    } else {
        format!("{}/{id}", cgroup_parent.trim_end_matches('/'))
    };

    // The pause container: the configured sandbox image on its own snapshot, or the
    // built-in pause (shared, read-only).
    let (rootfs, args) = match &image {
        Some(image) => {
            let rootfs = state_dir.join("rootfs");
            undo.image_rootfs = true;
            image::mount_rootfs(&ctx.images, image, id, &rootfs)?;
            (rootfs, image.args.clone())
        }
        None => {
            let pause = crate::pause::ensure(&ctx.config.root, &ctx.helper_dirs)?;
            (pause.rootfs, pause.args)
        }
    };
    let spec = crate::spec::sandbox_spec(&SandboxSpecInput {
        id: id.to_owned(),
        config: config.clone(),
        rootfs,
        args,
        netns: undo.netns.clone(),
        cgroups_path: cgroups_path.clone(),
        files: SandboxFiles {
            hostname: undo.files.hostname.clone(),
            hosts: undo.files.hosts.clone(),
            resolv_conf: undo.files.resolv_conf.clone(),
            shm: undo.files.shm.clone(),
        },
        image_user: image.as_ref().and_then(|i| i.user.clone()),
        image_env: image.as_ref().map(|i| i.env.clone()).unwrap_or_default(),
        image_working_dir: image.as_ref().and_then(|i| i.working_dir.clone()),
        host: ctx.host.clone(),
    })?;
    let bundle = state_dir.join("bundle");
    std::fs::create_dir_all(&bundle).map_err(io("create", &bundle))?;
    let config_json = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| {
        io("serialize", &config_json)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    berth_runtime::atomic_file::write(&config_json, &json, 0o600)
        .map_err(io("write", &config_json))?;
    let shim_dir = state_dir.join("shim");
    let shim = Shim::create(&ShimArgs {
        shim_binary: ctx.shim_binary.clone(),
        id: id.to_owned(),
        bundle,
        runtime: runtime.path.clone(),
        runtime_root: runtime.root.clone(),
        state_dir: shim_dir,
        log_path: None,
        stdin: false,
        stdin_once: false,
    });
    let shim = match shim {
        Ok(shim) => shim,
        Err(e) => {
            // The shim may have got as far as the runtime's create.
            undo.created = Some((runtime.clone(), 0));
            return Err(e.into());
        }
    };
    undo.created = Some((runtime.clone(), shim.init_pid));
    oci::start(&runtime, id)?;
    crate::service::crash_point::reached(crate::service::crash_point::SANDBOX_PAUSE_STARTED);

    let meta = SandboxMeta {
        id: id.to_owned(),
        name: name.to_owned(),
        config: config.clone(),
        runtime,
        netns: undo.netns.clone(),
        network,
        pid: shim.init_pid,
        state_dir,
        created_at,
        ips: ips.clone(),
        cgroup_parent,
        owns_cgroup_parent,
        cgroups_path,
        files: undo.files.clone(),
        image: image.map(|i| i.name),
    };
    ctx.store
        .add(meta, SandboxState::Ready { pid: shim.init_pid })?;
    Ok(ips.first().copied())
}
