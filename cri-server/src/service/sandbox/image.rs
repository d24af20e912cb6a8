//! The configured sandbox image (`[sandbox] image`): pulled when absent, pinned (so that the
//! kubelet's image GC and berth's leave it alone), and run as the pause container — its
//! entrypoint and cmd, its user, env and working dir — on a writable snapshot per sandbox, as containerd runs its
//! `sandbox_image`. With the key empty, the built-in pause ([`crate::pause`]) is used.

use std::path::Path;

use image_store::{ImageStore, PullOptions, Reference};

use super::error::{Result, SandboxError};
use crate::service::container::image::{self as images, ResolveError, ResolvedImage};

/// The pause command, user and layers of the sandbox image.
#[derive(Debug, Clone)]
pub(super) struct SandboxImage {
    pub name: String,
    pub resolved: ResolvedImage,
    pub args: Vec<String>,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

fn failed(image: &str, reason: impl std::fmt::Display) -> SandboxError {
    SandboxError::SandboxImage {
        image: image.to_owned(),
        reason: reason.to_string(),
    }
}

/// The sandbox image `name`, pulled if the store does not hold it, and pinned. `pulls`
/// serializes the pulls of concurrent RunPodSandbox calls (one pull serves them all).
pub(super) async fn ensure(
    store: &std::sync::Arc<ImageStore>,
    pulls: &tokio::sync::Mutex<()>,
    name: &str,
) -> Result<SandboxImage> {
    let _one_pull = pulls.lock().await;
    let found = {
        let (store, name) = (store.clone(), name.to_owned());
        super::blocking(move || lookup(&store, &name)).await?
    };
    let resolved = match found {
        Some(r) => r,
        None => {
            let reference: Reference = name.parse().map_err(|e| failed(name, e))?;
            tracing::info!(image = %reference, "pulling the sandbox image");
            store
                .pull(&reference, &PullOptions::default())
                .await
                .map_err(|e| failed(name, format!("pull: {e}")))?;
            let (store, n) = (store.clone(), name.to_owned());
            super::blocking(move || lookup(&store, &n))
                .await?
                .ok_or_else(|| failed(name, "not in the store after its pull"))?
        }
    };
    let (store, n) = (store.clone(), name.to_owned());
    super::blocking(move || {
        let pinned = store
            .image(&n)
            .map_err(|e| failed(&n, e))?
            .is_some_and(|i| i.pinned);
        if !pinned {
            store.set_pinned(&n, true).map_err(|e| failed(&n, e))?;
            tracing::info!(image = %n, "sandbox image pinned");
        }
        Ok(())
    })
    .await?;
    let config = resolved.config.config().clone().unwrap_or_default();
    let mut args: Vec<String> = config.entrypoint().clone().unwrap_or_default();
    args.extend(config.cmd().clone().unwrap_or_default());
    Ok(SandboxImage {
        name: name.to_owned(),
        args,
        user: config.user().clone().filter(|u| !u.is_empty()),
        env: config.env().clone().unwrap_or_default(),
        working_dir: config.working_dir().clone().filter(|d| !d.is_empty()),
        resolved,
    })
}

/// The image if the store holds it. Blocking.
fn lookup(store: &ImageStore, name: &str) -> Result<Option<ResolvedImage>> {
    match images::resolve(store, name) {
        Ok(r) => Ok(Some(r)),
        Err(ResolveError::NotFound) => Ok(None),
        Err(ResolveError::Broken(reason)) => Err(failed(name, reason)),
    }
}

/// Prepares the sandbox's writable snapshot (key: the sandbox ID) of the image and mounts it
/// on `rootfs`. On failure nothing is left. Blocking.
pub(super) fn mount_rootfs(
    store: &ImageStore,
    image: &SandboxImage,
    key: &str,
    rootfs: &Path,
) -> Result<()> {
    std::fs::create_dir_all(rootfs).map_err(super::error::io("create", rootfs))?;
    let mount = store
        .snapshots()
        .prepare(key, image.resolved.chain_id.as_ref())
        .map_err(|e| failed(&image.name, format!("snapshot {key}: {e}")))?;
    if let Err(e) = mount.mount(rootfs) {
        if let Err(re) = store.snapshots().remove(key) {
            tracing::warn!(sandbox = key, error = %re, "remove the sandbox snapshot");
        }
        return Err(failed(
            &image.name,
            format!("mount {}: {e}", rootfs.display()),
        ));
    }
    Ok(())
}

/// Unmounts the sandbox's rootfs (if mounted) and removes its snapshot (if any). Idempotent.
/// Blocking.
pub(super) fn release_rootfs(store: &ImageStore, key: &str, rootfs: &Path) -> Result<()> {
    if is_mount_point(rootfs) {
        image_store::unmount(rootfs).map_err(|e| SandboxError::Io {
            op: "unmount",
            path: rootfs.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    match store.snapshots().get(key) {
        Ok(Some(_)) => store
            .snapshots()
            .remove(key)
            .map_err(|e| failed("-", format!("remove snapshot {key}: {e}"))),
        Ok(None) => Ok(()),
        Err(e) => Err(failed("-", format!("snapshot {key}: {e}"))),
    }
}

fn is_mount_point(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p))
}
