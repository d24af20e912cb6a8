//! At startup: what a RunPodSandbox cut short by a crash (`kill -9` of berthd) left behind —
//! a sandbox directory without a record — is torn down: the pause (every handler's `delete
//! --force`), its shim and its socket, the CNI attachment (DEL with the pod config
//! RunPodSandbox wrote first, in `pod.json`), the pinned netns and user namespace, mounts (/dev/shm, the sandbox image's
//! rootfs) and its snapshot, the pod cgroup berth made (with the systemd driver, the pod's
//! slice), and the directory. Pinned netns with no sandbox go too. Nothing that has a record
//! is touched. The pod keeps the cgroup driver it was made under: its pause's bundle says
//! which.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1 as cri;

use super::{cgroup, files, image, oci, Sandboxes};
use crate::config::CgroupDriver;
use crate::store::sandbox::RuntimeRef;

/// The pod config, written before anything else is made for the pod.
pub(super) const POD_CONFIG: &str = "pod.json";

/// Sweeps every orphan. Blocking; called once, before serving.
pub(super) fn orphans(ctx: &Sandboxes) {
    let known = |id: &str| ctx.store.get(id).is_ok_and(|s| s.meta.id == id);
    let dir = ctx.config.state.join("sandboxes");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !known(&id) {
            sweep(ctx, &id, &entry.path());
        }
    }
    for entry in std::fs::read_dir(ctx.netns.dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !known(&id) {
            tracing::warn!(sandbox = %id, "removing a pinned netns no sandbox owns");
            if let Err(e) = cni::netns::remove_pinned(&entry.path()) {
                tracing::warn!(sandbox = %id, error = %e, "remove the netns");
            }
        }
    }
}

fn sweep(ctx: &Sandboxes, id: &str, state_dir: &Path) {
    tracing::warn!(sandbox = id, dir = %state_dir.display(), "sweeping a sandbox a crash left half made");
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(sandbox = id, error = %e, "sweep: {what}");
    };
    let config: Option<cri::PodSandboxConfig> = std::fs::read(state_dir.join(POD_CONFIG))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let bundle = state_dir.join("bundle");
    let driver = CgroupDriver::of_bundle(&bundle).unwrap_or_else(|| ctx.cgroup_driver());
    // The pause, whichever handler made it.
    for handler in ctx.config.runtimes.values() {
        let rt = RuntimeRef {
            handler: String::new(),
            path: handler.path.clone(),
            root: handler.root.clone(),
        };
        if rt.root.join(id).exists() {
            if let Err(e) = oci::delete(&rt, driver, id) {
                warn("delete the pause", &e);
            }
        }
    }
    oci::reap_shim(&state_dir.join("shim"), Duration::from_secs(5));
    crate::shim_client::remove_socket(&ctx.config.shim_socket_dir, &state_dir.join("shim"));
    if let Ok(netns) = ctx.netns.path_of(id) {
        if let Some(config) = &config {
            if let Err(e) = ctx.network.detach(id, &netns, config) {
                warn("CNI DEL", &e);
            }
        }
        if let Err(e) = cni::netns::remove_pinned(&netns) {
            warn("remove the netns", &e);
        }
    }
    // The pod's user namespace (a mount under the dir, which the loop below would detach
    // too): unpinned and unlinked by name first.
    if let Err(e) = super::network::remove_userns(state_dir) {
        warn("unpin the user namespace", &e);
    }
    for m in mounts_under(state_dir).into_iter().rev() {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            warn("unmount", &e);
        }
    }
    if let Err(e) = image::release_rootfs(&ctx.images, id, &state_dir.join("rootfs")) {
        warn("remove the sandbox image's snapshot", &e);
    }
    let owns_cgroup = config
        .as_ref()
        .is_none_or(|c| c.linux.as_ref().is_none_or(|l| l.cgroup_parent.is_empty()));
    if owns_cgroup {
        let removed =
            cgroup::plan(driver, "", id).and_then(|own| cgroup::remove(&own.parent, id, driver));
        if let Err(e) = removed {
            warn("remove the pod cgroup", &e);
        }
    }
    if let Err(e) = files::remove_dir(state_dir) {
        warn("remove the pod dir", &e);
    }
}

/// Mount points under `dir`, in mount order.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}
