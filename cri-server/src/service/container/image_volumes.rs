//! Image volumes (Kubernetes' OCI VolumeSource, KEP 4639): a CRI mount whose `image` is set
//! shows that image's rootfs, read-only. Each becomes a read-only view snapshot of the image
//! (key `<container id>-image-volume-<n>`) mounted under the container's directory, and the
//! spec bind-mounts it; RemoveContainer (or a failed CreateContainer) unmounts and removes it.
//!
//! In a pod with a user namespace the view is mounted idmapped (the mount's own uid/gid
//! mappings if the kubelet gave some, else the pod's), as the rootfs is, so the image's files
//! keep their owners inside the pod whatever the OCI runtime; the spec then binds it plainly.

use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use berth_runtime::rootfs::secure_path::RootDir;

use cri_api::v1 as cri;

use super::error::ContainerError;
use super::image::{self, ResolveError};
use super::Containers;
use crate::spec::{self, PodUserns};
use crate::store::container::ImageVolume;

/// Whether a CRI mount asks for an image.
fn image_of(m: &cri::Mount) -> Option<&str> {
    m.image
        .as_ref()
        .map(|i| i.image.as_str())
        .filter(|i| !i.is_empty())
}

/// Mounts a view of every image the mounts name, under `dir/image-volumes/<n>`; returns the
/// mounts with those images replaced by read-only host paths, and the volumes to release.
/// On failure nothing is left mounted. Blocking.
pub(super) fn mount_all(
    inner: &Containers,
    id: &str,
    name: &str,
    dir: &Path,
    mounts: &[cri::Mount],
    userns: Option<&PodUserns>,
) -> Result<(Vec<cri::Mount>, Vec<ImageVolume>), ContainerError> {
    // What can be refused from the request alone is refused before anything is mounted.
    for m in mounts {
        if let Some(asked) = image_of(m) {
            refuse_invalid(m, asked)?;
        }
    }
    let mut volumes = Vec::new();
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let Some(asked) = image_of(m) else {
            out.push(m.clone());
            continue;
        };
        let idmap = match volume_idmap(m, userns) {
            Ok(idmap) => idmap,
            Err(source) => {
                release(inner, id, &volumes);
                return Err(ContainerError::Spec {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        match mount_one(inner, id, name, dir, volumes.len(), asked, idmap.as_ref()) {
            Ok(v) => {
                let host_path = match sub_path(&v.path, &m.image_sub_path) {
                    Ok(p) => p,
                    Err(reason) => {
                        volumes.push(v);
                        release(inner, id, &volumes);
                        return Err(ContainerError::Invalid {
                            rpc: "CreateContainer",
                            reason: format!(
                                "container {name}: mount {} of image {asked}: {reason}",
                                m.container_path
                            ),
                        });
                    }
                };
                let mut bound = m.clone();
                bound.host_path = host_path.display().to_string();
                bound.image_sub_path.clear();
                bound.image = None;
                bound.readonly = true;
                if idmap.is_some() {
                    // Already idmapped: the runtime binds it as it is.
                    bound.uid_mappings.clear();
                    bound.gid_mappings.clear();
                }
                volumes.push(v);
                out.push(bound);
            }
            Err(e) => {
                release(inner, id, &volumes);
                return Err(e);
            }
        }
    }
    Ok((out, volumes))
}

/// Where the image volume mounted at `root` is bound from: `root` itself, or the path
/// `image_sub_path` names inside the image, resolved as if `root` were `/` (a symlink in the
/// image cannot lead out of it; the view is read-only, so what was found stays what it names).
/// Kubernetes' own rule for sub paths: relative, no `..`. A sub path the image does not have is
/// refused, as containerd does.
fn sub_path(root: &Path, sub: &str) -> Result<PathBuf, String> {
    if sub.is_empty() {
        return Ok(root.to_owned());
    }
    let rel = Path::new(sub);
    if rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "image_sub_path {sub:?} must be a relative path without '..'"
        ));
    }
    let dir = RootDir::open(root).map_err(|e| e.to_string())?;
    let fd = dir.resolve_follow(rel).map_err(|e| match e {
        berth_runtime::RuntimeError::Sys {
            source: nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR,
            ..
        } => format!("image_sub_path {sub:?} does not exist in the image"),
        e => format!("image_sub_path {sub:?}: {e}"),
    })?;
    let found = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("image_sub_path {sub:?}: read its path back: {e}"))?;
    if !found.starts_with(root) {
        return Err(format!("image_sub_path {sub:?} resolves outside the image"));
    }
    Ok(found)
}

/// An image volume's mount that cannot be served as asked: with a host path too, or
/// read-write (the CRI: image volumes are read-only, and a runtime should refuse one asked
/// read-write rather than quietly mount it read-only).
fn refuse_invalid(m: &cri::Mount, asked: &str) -> Result<(), ContainerError> {
    let reason = if !m.host_path.is_empty() {
        "host_path and image are mutually exclusive".to_owned()
    } else if !m.readonly {
        format!("image volume {asked:?} must be read-only (readonly: true)")
    } else {
        return Ok(());
    };
    Err(ContainerError::Invalid {
        rpc: "CreateContainer",
        reason: format!("mount {}: {reason}", m.container_path),
    })
}

/// The mappings an image volume is idmapped with: none outside a user namespace; the mount's
/// own if it has some, else the pod's.
fn volume_idmap(
    m: &cri::Mount,
    userns: Option<&PodUserns>,
) -> Result<Option<PodUserns>, spec::SpecError> {
    let Some(pod) = userns else {
        return Ok(None);
    };
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(Some(pod.clone()));
    }
    Ok(Some(PodUserns {
        uids: spec::id_mappings(&m.uid_mappings, "mounts.uidMappings")?,
        gids: spec::id_mappings(&m.gid_mappings, "mounts.gidMappings")?,
    }))
}

fn mount_one(
    inner: &Containers,
    id: &str,
    name: &str,
    dir: &Path,
    n: usize,
    asked: &str,
    idmap: Option<&PodUserns>,
) -> Result<ImageVolume, ContainerError> {
    let resolved = image::resolve(&inner.images, asked).map_err(|e| match e {
        ResolveError::NotFound => ContainerError::ImageNotFound {
            name: name.to_owned(),
            image: asked.to_owned(),
        },
        ResolveError::Broken(reason) => ContainerError::Image {
            name: name.to_owned(),
            image: asked.to_owned(),
            reason,
        },
    })?;
    let Some(chain) = resolved.chain_id else {
        return Err(ContainerError::Image {
            name: name.to_owned(),
            image: asked.to_owned(),
            reason: "it has no layers to mount as a volume".into(),
        });
    };
    let volume = ImageVolume {
        image: resolved.id,
        key: format!("{id}-image-volume-{n}"),
        path: dir.join("image-volumes").join(n.to_string()),
    };
    std::fs::create_dir_all(&volume.path).map_err(|source| ContainerError::Io {
        id: id.to_owned(),
        op: "create",
        path: volume.path.clone(),
        source,
    })?;
    let snapshots = inner.images.snapshots();
    let mount = snapshots
        .view(&volume.key, &chain)
        .map_err(|source| ContainerError::Snapshot {
            id: id.to_owned(),
            source,
        })?;
    let mounted = match idmap {
        Some(map) => super::idmapped_snapshot::mount(
            id,
            "image volume",
            &mount,
            &volume.path,
            snapshots.root(),
            &dir.join("m"),
            map,
        ),
        None => mount
            .mount(&volume.path)
            .map_err(|source| ContainerError::Mount {
                id: id.to_owned(),
                source,
            }),
    };
    if let Err(e) = mounted {
        let _ = snapshots.remove(&volume.key);
        return Err(e);
    }
    tracing::debug!(container = id, image = asked, path = %volume.path.display(), "image volume mounted");
    Ok(volume)
}

/// Unmounts and removes the views (best effort; what fails is logged). Blocking.
pub(super) fn release(inner: &Containers, id: &str, volumes: &[ImageVolume]) {
    if let Err(e) = try_release(inner, id, volumes) {
        tracing::warn!(container = id, error = %e, "release image volumes");
    }
}

/// Unmounts and removes the views; idempotent. Blocking.
pub(super) fn try_release(
    inner: &Containers,
    id: &str,
    volumes: &[ImageVolume],
) -> Result<(), ContainerError> {
    for v in volumes {
        match image_store::unmount(&v.path) {
            Ok(()) => {}
            Err(image_store::MountError::Sys { source, .. })
                if source.raw_os_error() == Some(nix::libc::EINVAL)
                    || source.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ContainerError::Mount {
                    id: id.to_owned(),
                    source,
                })
            }
        }
        match inner.images.snapshots().remove(&v.key) {
            Ok(()) | Err(image_store::SnapshotError::NotFound(_)) => {}
            Err(source) => {
                return Err(ContainerError::Snapshot {
                    id: id.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("view");
        std::fs::create_dir_all(root.join("etc/ssl")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("etc/up")).unwrap();
        let root = root.canonicalize().unwrap();

        assert_eq!(sub_path(&root, "").unwrap(), root);
        assert_eq!(sub_path(&root, "etc").unwrap(), root.join("etc"));
        assert_eq!(
            sub_path(&root, "etc/passwd").unwrap(),
            root.join("etc/passwd")
        );
        // Symlinks resolve inside the image, never on the host.
        assert_eq!(sub_path(&root, "abs/ssl").unwrap(), root.join("etc/ssl"));
        assert_eq!(sub_path(&root, "etc/up").unwrap(), root);
        let missing = sub_path(&root, "nope").unwrap_err();
        assert!(missing.contains("does not exist in the image"), "{missing}");
        assert!(sub_path(&root, "etc/passwd/x")
            .unwrap_err()
            .contains("does not exist"));
        for bad in ["/etc", "../etc", "etc/../.."] {
            let e = sub_path(&root, bad).unwrap_err();
            assert!(e.contains("relative path without '..'"), "{bad}: {e}");
        }
    }
}
