//! The kubelet's volumes of a user-namespaced pod (CRI mounts with `uidMappings`/
//! `gidMappings`: host paths to show idmapped into the pod's user namespace) for a handler
//! whose runtime cannot idmap mounts itself (runc 1.1; per `handler_features`).
//!
//! berthd then makes each idmapped bind itself before the runtime's create, as it does for the
//! rootfs layers: the host path, with its submounts, is bound idmapped with the mount's
//! mappings on `<container dir>/idmapped/<n>` (a dir or a file, as the host path is), and the
//! runtime gets a plain bind of that path (the same container path, read-only and propagation
//! options; no mappings). Inside the pod the host path's owners show through the mapping (host
//! root's files as the pod's root's, not as 65534's) and the pod's writes are stored with the
//! ids shifted back, exactly as when the runtime idmaps. A handler that idmaps mounts
//! (berth-runtime, crun, runc 1.2) keeps doing it: one path per capability.
//!
//! A handler that cannot even join user namespaces gets no special case, as in RunPodSandbox:
//! its runtime refuses the pod's pause (the sandbox spec names the pod's user namespace), so
//! no container of such a pod gets this far.
//!
//! Released by RemoveContainer, by a failed CreateContainer's undo, and by the crash sweep
//! (which unmounts everything under an orphan's dir); never by `remove_dir_all` over a mount
//! (which would delete the host path's files): every mount under `idmapped/` is detached, and
//! only then its empty mount points removed.

use std::path::{Path, PathBuf};

use berth_runtime::rootfs::idmap;
use cri_api::v1 as cri;

use super::error::ContainerError;
use crate::spec::{self, PodUserns};

/// Under a container's dir: its idmapped volumes, one entry per CRI mount index.
const DIR: &str = "idmapped";

/// The mounts with every host path that has mappings bound idmapped under
/// `<container dir>/idmapped/<n>`, the mapped mounts replaced by plain binds of those paths.
/// On failure nothing is left mounted. Blocking.
pub(super) fn mount_all(
    id: &str,
    name: &str,
    container_dir: &Path,
    mounts: &[cri::Mount],
) -> Result<Vec<cri::Mount>, ContainerError> {
    let mut out = Vec::with_capacity(mounts.len());
    for (n, m) in mounts.iter().enumerate() {
        if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() || m.host_path.is_empty() {
            out.push(m.clone());
            continue;
        }
        match mount_one(id, name, container_dir, n, m) {
            Ok(target) => {
                let mut bound = m.clone();
                bound.host_path = target.display().to_string();
                bound.uid_mappings.clear();
                bound.gid_mappings.clear();
                out.push(bound);
            }
            Err(e) => {
                if let Err(undo) = release(id, container_dir) {
                    tracing::warn!(container = id, error = %undo, "release idmapped volumes");
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn mount_one(
    id: &str,
    name: &str,
    container_dir: &Path,
    n: usize,
    m: &cri::Mount,
) -> Result<PathBuf, ContainerError> {
    let spec_err = |source| ContainerError::Spec {
        name: name.to_owned(),
        source,
    };
    let map = PodUserns {
        uids: spec::id_mappings(&m.uid_mappings, "mounts.uidMappings").map_err(spec_err)?,
        gids: spec::id_mappings(&m.gid_mappings, "mounts.gidMappings").map_err(spec_err)?,
    };
    let io = |op: &'static str, path: &Path| super::create::io_err(id, op, path);
    let host = Path::new(&m.host_path);
    // As the spec does for any host path (containerd's rule): a missing one becomes a dir.
    if std::fs::symlink_metadata(host).is_err() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(host)
            .map_err(io("create the volume", host))?;
    }
    let source = std::fs::canonicalize(host).map_err(io("resolve the volume", host))?;
    let is_dir = std::fs::metadata(&source)
        .map_err(io("stat the volume", &source))?
        .is_dir();
    let dir = container_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let target = dir.join(n.to_string());
    if is_dir {
        std::fs::create_dir(&target).map_err(io("create", &target))?;
    } else {
        std::fs::File::create(&target).map_err(io("create", &target))?;
    }
    idmap::bind_idmapped(&source, &target, &map.uids, &map.gids).map_err(|source| {
        ContainerError::IdmapVolume {
            id: id.to_owned(),
            host_path: m.host_path.clone(),
            container_path: m.container_path.clone(),
            source: Box::new(source),
        }
    })?;
    tracing::debug!(
        container = id,
        host_path = %m.host_path,
        container_path = %m.container_path,
        target = %target.display(),
        "volume bound idmapped by berthd"
    );
    Ok(target)
}

/// Detaches every idmapped volume of the container whose dir is `container_dir`, then removes
/// their (empty) mount points; idempotent. A mount that cannot be detached is an error and its
/// mount point stays. Blocking.
pub(super) fn release(id: &str, container_dir: &Path) -> Result<(), ContainerError> {
    let dir = container_dir.join(DIR);
    for m in crate::service::sandbox::mounts_under(&dir)
        .into_iter()
        .rev()
    {
        match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(ContainerError::Io {
                    id: id.to_owned(),
                    op: "unmount the idmapped volume",
                    path: m,
                    source: e.into(),
                })
            }
        }
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ContainerError::Io {
                id: id.to_owned(),
                op: "list",
                path: dir,
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Never recursive: a mount point still mounted refuses (EBUSY), nothing is deleted
        // through it.
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ContainerError::Io {
                    id: id.to_owned(),
                    op: "remove the idmapped volume's mount point",
                    path,
                    source,
                })
            }
        }
    }
    match std::fs::remove_dir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ContainerError::Io {
            id: id.to_owned(),
            op: "remove",
            path: dir,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn idmap(c: u32, h: u32, n: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id: c,
            host_id: h,
            length: n,
        }
    }

    /// Root only: a dir and a file bound idmapped and handed on as plain binds, unmapped
    /// mounts untouched; released, the host's files are all still there.
    #[test]
    fn volumes_are_bound_idmapped_and_released_without_touching_the_host() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP volumes_are_bound_idmapped_and_released: needs root (mounts)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (host, container) = (tmp.path().join("host"), tmp.path().join("c"));
        std::fs::create_dir_all(host.join("d")).unwrap();
        std::fs::write(host.join("d/f"), b"x").unwrap();
        std::fs::write(host.join("file"), b"y").unwrap();
        std::fs::create_dir_all(&container).unwrap();
        let maps = vec![idmap(0, 400000, 65536)];
        let mounts = vec![
            cri::Mount {
                container_path: "/d".into(),
                host_path: host.join("d").display().to_string(),
                uid_mappings: maps.clone(),
                gid_mappings: maps.clone(),
                readonly: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/plain".into(),
                host_path: host.join("d").display().to_string(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/file".into(),
                host_path: host.join("file").display().to_string(),
                uid_mappings: maps.clone(),
                gid_mappings: maps.clone(),
                ..Default::default()
            },
        ];
        let out = mount_all("c1", "app", &container, &mounts).unwrap();
        let seen = std::fs::metadata(container.join("idmapped/0/f")).map(|m| m.uid());
        let file = std::fs::metadata(container.join("idmapped/2")).map(|m| m.uid());
        let released = release("c1", &container);
        assert_eq!(
            seen.unwrap(),
            400000,
            "host root's file through the mapping"
        );
        assert_eq!(file.unwrap(), 400000);
        released.unwrap();
        assert_eq!(
            out[0].host_path,
            container.join("idmapped/0").display().to_string()
        );
        assert!(out[0].uid_mappings.is_empty() && out[0].gid_mappings.is_empty());
        assert!(out[0].readonly);
        assert_eq!(out[1], mounts[1]);
        assert_eq!(
            out[2].host_path,
            container.join("idmapped/2").display().to_string()
        );
        assert!(crate::service::sandbox::mounts_under(&container).is_empty());
        assert!(!container.join(DIR).exists());
        assert_eq!(std::fs::read(host.join("d/f")).unwrap(), b"x");
        assert_eq!(std::fs::read(host.join("file")).unwrap(), b"y");
        release("c1", &container).expect("idempotent");
    }

    #[test]
    fn bad_mappings_name_the_field_and_mount_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mounts = vec![cri::Mount {
            container_path: "/v".into(),
            host_path: tmp.path().display().to_string(),
            uid_mappings: vec![idmap(0, 400000, 0)],
            gid_mappings: vec![idmap(0, 400000, 1)],
            ..Default::default()
        }];
        let err = mount_all("c1", "app", &tmp.path().join("c"), &mounts).unwrap_err();
        assert!(matches!(err, ContainerError::Spec { .. }), "{err:?}");
        assert!(err.to_string().contains("mounts.uidMappings"), "{err}");
        assert!(!tmp.path().join("c").join(DIR).exists());
    }
}
