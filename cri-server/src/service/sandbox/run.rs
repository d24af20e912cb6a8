//! RunPodSandbox: pod dirs and files, pinned netns (with a pinned user namespace owning it for a
//! user-namespaced pod) + CNI ADD, the pause container under a berth-shim, then the record. Whatever fails, everything done so far is undone (in reverse
//! order) before the error is returned.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cri_api::v1 as cri;
use tonic::Status;

use super::cgroup::{self, PodCgroup};
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
    let (id, name, runtime, cgroup) = prepared.map_err(|e| e.into_status(&pod))?;
    tracing::info!(pod = %pod, sandbox = %id, handler = %runtime.handler,
        cgroup_driver = ctx.cgroup_driver().name(), pod_cgroup = %cgroup.parent, "RunPodSandbox");
    let image = match ctx.config.sandbox.image.as_str() {
        "" => Ok(None),
        name => image::ensure(&ctx.images, &ctx.image_pulls, name)
            .await
            .map(Some),
    };
    let done = match image {
        Ok(image) => {
            let (ctx2, id2, name2) = (ctx.clone(), id.clone(), name.clone());
            blocking(move || create(&ctx2, id2, name2, config, runtime, cgroup, image)).await
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

/// Checks the request and reserves the name; returns the new ID, the name, the runtime and
/// the pod's cgroup.
fn prepare(
    ctx: &Sandboxes,
    config: &cri::PodSandboxConfig,
    handler: &str,
) -> Result<(String, String, RuntimeRef, PodCgroup)> {
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
    let cgroup_parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str());
    let cgroup = cgroup::plan(ctx.cgroup_driver(), cgroup_parent.unwrap_or_default(), &id)?;
    let name = format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt);
    ctx.store.reserve_name(&name, &id)?;
    let runtime = RuntimeRef {
        handler: handler.to_owned(),
        path: rt.path.clone(),
        root: rt.root.clone(),
    };
    Ok((id, name, runtime, cgroup))
}

/// What has been done so far, to undo on failure.
struct Undo<'a> {
    ctx: &'a Sandboxes,
    id: String,
    config: cri::PodSandboxConfig,
    state_dir: PathBuf,
    files: PodFiles,
    netns: Option<PathBuf>,
    /// The pod's user namespace pinned in the pod dir (owner of `netns`).
    userns: Option<PathBuf>,
    attached: bool,
    created: Option<(RuntimeRef, i32)>,
    /// The pod cgroup berth made (its slice, under systemd), to remove.
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
        let driver = self.ctx.cgroup_driver();
        if let Some((rt, pid)) = &self.created {
            if let Err(e) = oci::kill(rt, driver, id, *pid) {
                warn("kill the pause", &e);
            }
            let shim_dir = self.state_dir.join("shim");
            if let Err(e) = oci::wait_exit(&shim_dir, *pid, Duration::from_secs(10)) {
                warn("wait for the pause", &e);
            }
            if let Err(e) = oci::delete(rt, driver, id) {
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
        if let Some(userns) = &self.userns {
            if let Err(e) = cni::netns::remove_pinned(userns) {
                warn("unpin the user namespace", &e);
            }
        }
        if let Err(e) = files::unmount_shm(&self.files) {
            warn("unmount /dev/shm", &e);
        }
        if let Some(parent) = &self.pod_cgroup {
            if let Err(e) = cgroup::remove(parent, id, driver) {
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
    cgroup: PodCgroup,
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
        userns: None,
        attached: false,
        created: None,
        pod_cgroup: None,
        image_rootfs: false,
    };
    match create_steps(ctx, &id, &name, &config, runtime, cgroup, image, &mut undo) {
        Ok(ip) => Ok(ip),
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn create_steps(
    ctx: &Sandboxes,
    id: &str,
    name: &str,
    config: &cri::PodSandboxConfig,
    runtime: RuntimeRef,
    cgroup: PodCgroup,
    image: Option<SandboxImage>,
    undo: &mut Undo<'_>,
) -> Result<Option<std::net::IpAddr>> {
    let created_at = Utc::now();
    let began = Instant::now();
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
    // First of all: what a sweep after a crash needs to undo the rest (CNI DEL). Replaced
    // atomically but not synced, like every file of the state dir: they describe processes,
    // mounts and a netns that die with the kernel (and the state dir is a tmpfs on a node).
    // A `kill -9` of berthd loses nothing of them (the page cache is the kernel's); only a
    // machine crash could, and that takes what they describe with it. A lost or torn intent
    // after one merely skips the sweep's CNI DEL, and the IPAM reservation it would have
    // released is freed by the DEL of the sandbox's record or by CNI GC.
    let intent = state_dir.join(super::sweep::POD_CONFIG);
    let json = serde_json::to_vec(config).map_err(|e| {
        io("serialize", &intent)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    berth_runtime::atomic_file::replace(&intent, &json, 0o600).map_err(io("write", &intent))?;

    let netns = if host_network {
        None
    } else {
        // A user-namespaced pod's netns belongs to the pod's user namespace, made first.
        let netns = match crate::spec::container_userns(Some(&ns), None)? {
            Some(userns) => {
                let (user_pin, netns) =
                    super::network::create_userns_netns(&ctx.netns, id, &state_dir, &userns)?;
                undo.userns = Some(user_pin);
                netns
            }
            None => ctx.netns.create(id)?,
        };
        undo.netns = Some(netns.path().to_owned());
        undo.attached = true; // a failed ADD tears itself down; DEL again is harmless
        Some(netns.path().to_owned())
    };

    // CNI ADD (a chain of plugin processes) and the pause's start (a shim, the runtime's
    // `run --detach`) need nothing of each other but the pinned netns: they run side by side.
    // The pause only waits in its netns, whether or not its interfaces are there yet. Whatever
    // fails, both have finished when the scope ends, and `undo` knows all either made.
    let (attached, pause) = std::thread::scope(|s| {
        let cni = netns.as_deref().map(|netns| {
            s.spawn(move || {
                let r = ctx.network.attach(id, netns, config);
                (r, began.elapsed())
            })
        });
        let pause = create_pause(
            ctx,
            id,
            config,
            &runtime,
            &cgroup,
            image.as_ref(),
            host_network,
            host_ipc,
            undo,
        );
        let pause_done = began.elapsed();
        let attached = cni.map(|h| h.join().expect("the CNI ADD thread does not panic"));
        (attached, (pause, pause_done))
    });
    let (mut network, mut ips, mut cni_done) = (None, Vec::new(), Duration::ZERO);
    if let Some((attached, done)) = attached {
        let (net, addrs) = attached?;
        (network, ips, cni_done) = (Some(net), addrs, done);
    }
    let (pause, pause_done) = pause;
    let pause = pause?;
    if !ips.is_empty() {
        // The hosts file was made before the IPs were known; fill it in place (the pause
        // binds it already, and the pod's containers bind it only after this returns).
        let inputs = files::FileInputs {
            config,
            host_network,
            host_ipc,
            ips: &ips,
        };
        files::write_hosts(&state_dir, &inputs)?;
    }
    crate::service::crash_point::reached(crate::service::crash_point::SANDBOX_NETWORK_ATTACHED);
    crate::service::crash_point::reached(crate::service::crash_point::SANDBOX_PAUSE_STARTED);

    let meta = SandboxMeta {
        id: id.to_owned(),
        name: name.to_owned(),
        config: config.clone(),
        runtime,
        netns: undo.netns.clone(),
        network,
        pid: pause.init_pid,
        state_dir,
        created_at,
        ips: ips.clone(),
        cgroup_parent: cgroup.parent,
        owns_cgroup_parent: cgroup.owns,
        cgroups_path: cgroup.cgroups_path,
        files: undo.files.clone(),
        image: image.map(|i| i.name),
    };
    ctx.store.add(
        meta,
        SandboxState::Ready {
            pid: pause.init_pid,
        },
    )?;
    // Where a pod's start goes (ms since the RPC's blocking part began): CNI ADD and the
    // pause's creation and start ran side by side; then the durable record.
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    tracing::debug!(sandbox = %id, cni_add_done_ms = ms(cni_done), pause_started_ms = ms(pause_done),
        recorded_ms = ms(began.elapsed()), "RunPodSandbox steps");
    Ok(ips.first().copied())
}

/// The running pause container.
struct Pause {
    init_pid: i32,
}

/// The pod's files, the pause's rootfs and spec (in the pod's cgroup), and its shim, which
/// creates and starts it through the runtime (in the pinned netns, if any).
#[allow(clippy::too_many_arguments)]
fn create_pause(
    ctx: &Sandboxes,
    id: &str,
    config: &cri::PodSandboxConfig,
    runtime: &RuntimeRef,
    cgroup: &PodCgroup,
    image: Option<&SandboxImage>,
    host_network: bool,
    host_ipc: bool,
    undo: &mut Undo<'_>,
) -> Result<Pause> {
    let state_dir = undo.state_dir.clone();
    // Without the IPs yet: `write_hosts` adds them once CNI ADD is done.
    let inputs = files::FileInputs {
        config,
        host_network,
        host_ipc,
        ips: &[],
    };
    files::make(&state_dir, &inputs, &mut undo.files)?;

    // The runtime makes the pod cgroup (systemd its slice) with the pause's.
    if cgroup.owns {
        undo.pod_cgroup = Some(cgroup.parent.clone());
    }

    // The pause container: the configured sandbox image on its own snapshot, or the
    // built-in pause (shared, read-only).
    let (rootfs, args) = match image {
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
        userns: undo.userns.clone(),
        cgroups_path: cgroup.cgroups_path.clone(),
        files: SandboxFiles {
            hostname: undo.files.hostname.clone(),
            hosts: undo.files.hosts.clone(),
            resolv_conf: undo.files.resolv_conf.clone(),
            shm: undo.files.shm.clone(),
        },
        image_user: image.and_then(|i| i.user.clone()),
        image_env: image.map(|i| i.env.clone()).unwrap_or_default(),
        image_working_dir: image.and_then(|i| i.working_dir.clone()),
        host: ctx.host.clone(),
    })?;
    let bundle = state_dir.join("bundle");
    std::fs::create_dir_all(&bundle).map_err(io("create", &bundle))?;
    let config_json = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| {
        io("serialize", &config_json)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    // Volatile state, like the intent: replaced atomically, not synced.
    berth_runtime::atomic_file::replace(&config_json, &json, 0o600)
        .map_err(io("write", &config_json))?;
    let shim = Shim::create(&ShimArgs {
        shim_binary: ctx.shim_binary.clone(),
        id: id.to_owned(),
        bundle,
        runtime: runtime.path.clone(),
        runtime_root: runtime.root.clone(),
        sealed_runtime: crate::sealed_runtime::sealed_copy(&runtime.path),
        state_dir: state_dir.join("shim"),
        socket: crate::shim_client::socket_path(
            &ctx.config.shim_socket_dir,
            &state_dir.join("shim"),
        ),
        log_path: None,
        stdin: false,
        stdin_once: false,
        // The pause needs nothing done between create and start.
        start: true,
        cgroup_driver: ctx.cgroup_driver(),
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
    Ok(Pause {
        init_pid: shim.init_pid,
    })
}
