//! Mounting a snapshot (a container's rootfs, an image volume) idmapped with a pod's user
//! namespace mappings, so that the image's files keep their owners inside the pod whatever the
//! OCI runtime: the runtime gets an ordinary directory.
//!
//! - A bind snapshot (a view of a one-layer image, an image without layers, a native snapshot)
//!   is mounted, then replaced in place by an idmapped clone of itself (`idmap_in_place`).
//! - An overlay cannot be idmapped itself (overlayfs lacks FS_ALLOW_IDMAP: mount_setattr gives
//!   EINVAL), but its lower layers can (Linux 5.19+), as containerd 2.x does it. The snapshots'
//!   directory is bound idmapped on a scratch dir (`<container dir>/m`), the overlay is mounted
//!   with its lower dirs under it and its own upper and work dirs, and the scratch mount is
//!   detached at once: overlayfs keeps private clones of its layers' mounts. The upper dir
//!   cannot go through the idmapped mount: overlayfs works in it as the mounter (host root),
//!   whom the pod's mapping does not map (EOVERFLOW, and the overlay turns read-only).
//!
//! Either way the target ends with exactly one mount, so every path that releases it
//! (RemoveContainer, a failed create, the crash sweep) unmounts it as it unmounts any rootfs; a
//! crash between the two steps leaves the scratch mount under the container's dir, where the
//! sweep unmounts everything.
//!
//! What the host stores: the upper dir is written with the container's own (host) ids, so a
//! file the container's root creates, or copies up from the image, is stored owned by the
//! pod's host id for 0 (e.g. 300000) — host-shifted ids, owned by an unprivileged host uid,
//! like containerd 2.x's upper dirs (which also chowns the upper dir's root to the pod's root,
//! as here, so that the container's root can create files in `/`). The image's layers stay
//! unshifted and shared by every pod whatever its mapping. A snapshot without lower layers (an
//! image with no layers, a native snapshot) is a bind idmapped in place: there the container's
//! writes are shifted back and stored unshifted (uid 0), like the image's own files, and a
//! setuid file the container's root makes there is setuid-root on the host's disk, as in a pod
//! without a user namespace. Host users reach neither: the snapshots' directory is root's only
//! (0700, as containerd's).

use std::path::{Path, PathBuf};

use berth_runtime::rootfs::idmap;

use super::error::ContainerError;
use crate::spec::PodUserns;

/// Mounts `mount` (from the snapshotter rooted at `snapshots`) on `target`, idmapped with
/// `map`; `scratch` is a path for the overlay's layers, empty again on return. On failure
/// nothing is left mounted. Blocking.
pub(super) fn mount(
    id: &str,
    what: &'static str,
    mount: &image_store::Mount,
    target: &Path,
    snapshots: &Path,
    scratch: &Path,
    map: &PodUserns,
) -> Result<(), ContainerError> {
    let idmap_err = |source| ContainerError::Idmap {
        id: id.to_owned(),
        what,
        source: Box::new(source),
    };
    let mount_err = |source| ContainerError::Mount {
        id: id.to_owned(),
        source,
    };
    if mount.fstype != "overlay" {
        mount.mount(target).map_err(mount_err)?;
        if let Err(e) = idmap::idmap_in_place(target, &map.uids, &map.gids) {
            let _ = image_store::unmount(target);
            return Err(idmap_err(e));
        }
        return Ok(());
    }
    if let Some(upper) = option_value(&mount.options, "upperdir=") {
        chown_to_pod_root(Path::new(upper), map).map_err(|source| ContainerError::Io {
            id: id.to_owned(),
            op: "chown to the pod's root",
            path: upper.into(),
            source,
        })?;
    }
    std::fs::create_dir_all(scratch).map_err(|source| ContainerError::Io {
        id: id.to_owned(),
        op: "create",
        path: scratch.to_owned(),
        source,
    })?;
    let scratch_mount = Scratch(scratch.to_owned());
    idmap::bind_idmapped(snapshots, scratch, &map.uids, &map.gids).map_err(idmap_err)?;
    crate::service::crash_point::reached(crate::service::crash_point::CONTAINER_LAYERS_IDMAPPED);
    let shifted = image_store::Mount {
        options: mount
            .options
            .iter()
            .map(|o| lowers_under_scratch(o, snapshots, scratch))
            .collect(),
        ..mount.clone()
    };
    shifted.mount(target).map_err(mount_err)?;
    drop(scratch_mount);
    tracing::debug!(container = id, what, target = %target.display(), "overlay mounted on idmapped layers");
    Ok(())
}

/// The value of the overlay option `key` (`upperdir=`…).
fn option_value<'a>(options: &'a [String], key: &str) -> Option<&'a str> {
    options.iter().find_map(|o| o.strip_prefix(key))
}

/// The host ids the pod's root (0) has, when it is mapped.
fn pod_root(map: &PodUserns) -> Option<(u32, u32)> {
    let host = |maps: &[oci_spec::runtime::LinuxIdMapping]| {
        maps.iter()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map(|m| m.host_id())
    };
    Some((host(&map.uids)?, host(&map.gids)?))
}

/// Gives the upper dir's root to the pod's root, so that the container's root owns its `/`.
fn chown_to_pod_root(upper: &Path, map: &PodUserns) -> std::io::Result<()> {
    match pod_root(map) {
        Some((uid, gid)) => std::os::unix::fs::chown(upper, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// An overlay option with its lower layers' paths moved from under `snapshots` to under
/// `scratch`; other options as they are.
fn lowers_under_scratch(option: &str, snapshots: &Path, scratch: &Path) -> String {
    let Some(paths) = option.strip_prefix("lowerdir=") else {
        return option.to_owned();
    };
    let moved: Vec<String> = paths
        .split(':')
        .map(|p| match Path::new(p).strip_prefix(snapshots) {
            Ok(rel) => scratch.join(rel).display().to_string(),
            Err(_) => p.to_owned(),
        })
        .collect();
    format!("lowerdir={}", moved.join(":"))
}

/// The scratch mount of the idmapped layers: detached and its dir removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        match nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                tracing::warn!(path = %self.0.display(), error = %e, "detach the idmapped layers");
                return;
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_layers_move_under_the_scratch_dir() {
        let (root, scratch) = (Path::new("/var/lib/berth/snapshots"), Path::new("/s/c/m"));
        assert_eq!(
            lowers_under_scratch(
                "lowerdir=/var/lib/berth/snapshots/3/fs:/var/lib/berth/snapshots/1/fs",
                root,
                scratch
            ),
            "lowerdir=/s/c/m/3/fs:/s/c/m/1/fs"
        );
        let upper = "upperdir=/var/lib/berth/snapshots/9/fs";
        assert_eq!(lowers_under_scratch(upper, root, scratch), upper);
        assert_eq!(
            lowers_under_scratch("index=off", root, scratch),
            "index=off"
        );
        let options = vec!["index=off".to_owned(), upper.to_owned()];
        assert_eq!(
            option_value(&options, "upperdir="),
            Some("/var/lib/berth/snapshots/9/fs")
        );
    }

    #[test]
    fn the_pod_root_is_the_host_id_of_container_id_0() {
        let m = |c: u32, h: u32, n: u32| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(c)
                .host_id(h)
                .size(n)
                .build()
                .unwrap()
        };
        let map = PodUserns {
            uids: vec![m(1, 500, 10), m(0, 300000, 1)],
            gids: vec![m(0, 400000, 65536)],
        };
        assert_eq!(pod_root(&map), Some((300000, 400000)));
        let unmapped = PodUserns {
            uids: vec![m(1, 500, 10)],
            gids: vec![m(0, 400000, 65536)],
        };
        assert_eq!(pod_root(&unmapped), None);
    }
}
