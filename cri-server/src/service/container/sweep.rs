//! At startup: what a CreateContainer cut short by a crash (`kill -9` of berthd) left behind —
//! a container directory without a record — is torn down: the container (every handler's
//! `delete --force`), its shim and its socket, every mount under its directory (the rootfs and image volumes,
//! idmapped or not, the volumes berthd bound idmapped, and in a user-namespaced pod the
//! idmapped layers' scratch mount `m` if the crash came between it and the overlay), their
//! snapshots, and the directory (kept if anything stays mounted under it). Nothing that has
//! a record is touched.

use std::path::Path;

use super::oci::OciRuntime;
use super::Containers;
use crate::config::CgroupDriver;

/// Sweeps every orphan. Blocking; called once, before serving.
pub(super) fn orphans(inner: &Containers) {
    let dir = inner.config.state.join("containers");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !inner.store.get(&id).is_ok_and(|c| c.id() == id) {
            sweep(inner, &id, &entry.path());
        }
    }
}

fn sweep(inner: &Containers, id: &str, dir: &Path) {
    tracing::warn!(container = id, dir = %dir.display(), "sweeping a container a crash left half made");
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(container = id, error = %e, "sweep: {what}");
    };
    // The driver the container was being made under: its bundle's, else this berthd's.
    let driver = CgroupDriver::of_bundle(&dir.join("bundle"))
        .unwrap_or_else(|| inner.config.cgroup_driver());
    for name in inner.config.runtimes.keys() {
        let Some(runtime) = OciRuntime::for_handler(&inner.config, name, driver) else {
            continue;
        };
        if runtime.root.join(id).exists() {
            if let Err(e) = runtime.delete(id) {
                warn("runtime delete", &e);
            }
        }
    }
    super::remove::wait_shim_gone(&dir.join("shim"));
    crate::shim_client::remove_socket(&inner.config.shim_socket_dir, &dir.join("shim"));
    for m in crate::service::sandbox::mounts_under(dir).into_iter().rev() {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            warn("unmount", &e);
        }
    }
    // A mount still there (an idmapped host-path volume among them) must not be descended
    // into by the removal below.
    let left = crate::service::sandbox::mounts_under(dir);
    if !left.is_empty() {
        tracing::error!(container = id, mounts = ?left, "sweep: still mounted, the container dir stays");
        return;
    }
    let snapshots = inner.images.snapshots();
    let volume_prefix = format!("{id}-image-volume-");
    match snapshots.list() {
        Ok(all) => {
            for s in all
                .iter()
                .filter(|s| s.key == id || s.key.starts_with(&volume_prefix))
            {
                if let Err(e) = snapshots.remove(&s.key) {
                    warn("remove a snapshot", &e);
                }
            }
        }
        Err(e) => warn("list snapshots", &e),
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        warn("remove the container dir", &e);
    }
}
