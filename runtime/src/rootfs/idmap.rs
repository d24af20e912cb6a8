//! Idmapped mounts (`mounts[].uidMappings/gidMappings`, options `idmap`/`ridmap`), for
//! Kubernetes pods with `hostUsers: false`.
//!
//! Attaching the mapping needs privileges in the filesystem's user namespace (the host's), which
//! init in a new user namespace lacks. So the runtime, before forking, clones each source with
//! open_tree(OPEN_TREE_CLONE) and attaches a user namespace carrying the mapping with
//! mount_setattr(MOUNT_ATTR_IDMAP); init inherits the detached mounts and moves them into place
//! (as runc 1.2 does).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::mount_options::{self, attr, Recursive};
use crate::error::{Result, RuntimeError};
use crate::process::namespaces::write_id_maps;
use crate::sys::{
    self, MountAttr, AT_EMPTY_PATH, AT_RECURSIVE, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
};

/// One mount of the spec to idmap.
#[derive(Debug, Clone)]
pub struct IdmapRequest {
    /// Index in the spec's `mounts`.
    pub index: usize,
    pub source: PathBuf,
    pub destination: PathBuf,
    pub uids: Vec<LinuxIdMapping>,
    pub gids: Vec<LinuxIdMapping>,
    pub recursive: Recursive,
}

/// Whether the mount asks to be idmapped.
fn wants_idmap(m: &Mount) -> Option<Recursive> {
    let opts = mount_options::parse(m.options().as_deref().unwrap_or_default());
    if opts.idmap.is_some() {
        return opts.idmap;
    }
    let has_maps = m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty())
        || m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty());
    has_maps.then_some(if opts.flags.contains(nix::mount::MsFlags::MS_REC) {
        Recursive::Yes
    } else {
        Recursive::No
    })
}

/// The idmapped mounts of a spec. A mount without its own mappings uses the container's.
pub fn plan(spec: &Spec, bundle: &Path) -> Result<Vec<IdmapRequest>> {
    let linux = spec.linux().as_ref();
    let default_uids = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let default_gids = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(recursive) = wants_idmap(m) else {
            continue;
        };
        let source = m
            .source()
            .clone()
            .ok_or_else(|| RuntimeError::InvalidSpec {
                field: "mounts[].source",
                reason: format!(
                    "idmapped mount on {} has no source",
                    m.destination().display()
                ),
            })?;
        let uids = m
            .uid_mappings()
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default_uids.clone());
        let gids = m
            .gid_mappings()
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default_gids.clone());
        if uids.is_empty() || gids.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                field: "mounts[].uidMappings",
                reason: format!(
                    "idmapped mount on {} has no mappings and the container no user namespace mappings",
                    m.destination().display()
                ),
            });
        }
        out.push(IdmapRequest {
            index,
            source: if source.is_absolute() {
                source
            } else {
                bundle.join(source)
            },
            destination: m.destination().clone(),
            uids,
            gids,
            recursive,
        });
    }
    Ok(out)
}

/// Creates the detached idmapped mounts, by index in the spec's `mounts`.
pub fn create(requests: &[IdmapRequest]) -> Result<HashMap<usize, OwnedFd>> {
    requests
        .iter()
        .map(|r| {
            Ok((
                r.index,
                idmapped_tree(r, &mapped_userns(&r.uids, &r.gids)?)?,
            ))
        })
        .collect()
}

fn idmapped_tree(req: &IdmapRequest, userns: &File) -> Result<OwnedFd> {
    let what = format!(
        "idmapped mount {} on {}",
        req.source.display(),
        req.destination.display()
    );
    idmapped_clone(&req.source, userns, req.recursive == Recursive::Yes, &what)
}

/// A user namespace carrying the given mappings, as an open `/proc/<pid>/ns/user`: a child
/// born in a new user namespace holds it while its maps are written and the descriptor opened,
/// then is killed and reaped. Safe to call from a multi-threaded process.
pub fn mapped_userns(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<File> {
    let mut files = mapped_namespaces(uids, gids, CloneFlags::empty(), &["user"])?;
    Ok(files.remove(0))
}

/// A user namespace carrying the given mappings and a new network namespace owned by it, as
/// open `/proc/<pid>/ns/user` and `/proc/<pid>/ns/net` (a user-namespaced pod's namespaces,
/// as containerd and CRI-O make them: only then may the pod mount a sysfs of its own, and runc
/// join both). Safe to call from a multi-threaded process.
pub fn mapped_userns_with_netns(
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
) -> Result<(File, File)> {
    let mut files = mapped_namespaces(uids, gids, CloneFlags::CLONE_NEWNET, &["user", "net"])?;
    let net = files.remove(1);
    Ok((files.remove(0), net))
}

/// Opens `/proc/<pid>/ns/<name>` for each of `names` of a holder child cloned into a new user
/// namespace (plus `extra` namespaces) once its id maps are written; the child is then killed
/// and reaped.
fn mapped_namespaces(
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
    extra: CloneFlags,
    names: &[&str],
) -> Result<Vec<File>> {
    let pid = sys::spawn_ns_holder(extra)
        .map_err(|e| RuntimeError::sys("clone a user namespace holder", e))?;
    let result = write_id_maps(pid, uids, gids).and_then(|()| {
        names
            .iter()
            .map(|name| {
                let path = format!("/proc/{pid}/ns/{name}");
                File::open(&path).map_err(|e| RuntimeError::io("open", path, e))
            })
            .collect()
    });
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    result
}

/// Replaces the mount at `path` by an idmapped clone of itself (with its submounts): after
/// this, files owned by host id `h` appear owned by `c` to processes of a user namespace with
/// the same mappings, and ids they write are stored shifted back (`c` → `h`). The mount point
/// keeps exactly one mount, so whoever unmounts `path` unmounts the idmapped one. The kernel
/// must support idmapping the filesystem (overlayfs, ext4, xfs, btrfs, tmpfs since 6.3…).
///
/// This is how berthd gives a user-namespaced pod's containers an idmapped rootfs (an overlay
/// snapshot) and image volumes, whatever the OCI runtime: the runtime sees an ordinary path.
pub fn idmap_in_place(path: &Path, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    let what = format!("idmap the mount {}", path.display());
    let context = |op: &str, e| RuntimeError::sys(format!("{what}: {op}"), e);
    let userns = mapped_userns(uids, gids)?;
    let tree = idmapped_clone(path, &userns, true, &what)?;
    // The original goes; the detached clone keeps the filesystem alive until it is attached.
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| context("unmount the original", e))?;
    let target = File::open(path).map_err(|e| RuntimeError::io("open", path, e))?;
    sys::move_mount(&tree, &target).map_err(|e| context("move_mount", e))
}

/// An idmapped bind mount of `source` (with its submounts) on `target`, an existing directory
/// or file of the same kind.
pub fn bind_idmapped(
    source: &Path,
    target: &Path,
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
) -> Result<()> {
    let what = format!(
        "idmapped bind of {} on {}",
        source.display(),
        target.display()
    );
    let userns = mapped_userns(uids, gids)?;
    let tree = idmapped_clone(source, &userns, true, &what)?;
    let target_fd = File::open(target).map_err(|e| RuntimeError::io("open", target, e))?;
    sys::move_mount(&tree, &target_fd)
        .map_err(|e| RuntimeError::sys(format!("{what}: move_mount"), e))
}

/// A detached clone of the mount at `path`, idmapped with `userns`; errors say `what` failed.
fn idmapped_clone(path: &Path, userns: &File, recursive: bool, what: &str) -> Result<OwnedFd> {
    let context = |op: &str, e| RuntimeError::sys(format!("{what}: {op}"), e);
    let recursive = if recursive { AT_RECURSIVE } else { 0 };
    let cwd = File::open("/").map_err(|e| RuntimeError::io("open", "/", e))?;
    let tree = sys::open_tree(
        &cwd,
        &path.to_string_lossy(),
        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | recursive,
    )
    .map_err(|e| context("open_tree", e))?;
    let attr = MountAttr {
        attr_set: attr::IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..Default::default()
    };
    sys::mount_setattr(&tree, "", AT_EMPTY_PATH | recursive, &attr)
        .map_err(|e| context("mount_setattr MOUNT_ATTR_IDMAP", e))?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use oci_spec::runtime::LinuxIdMappingBuilder;

    use super::*;

    fn map(container: u32, host: u32, size: u32) -> Vec<LinuxIdMapping> {
        vec![LinuxIdMappingBuilder::default()
            .container_id(container)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()]
    }

    /// Root only: a tmpfs idmapped in place and bound idmapped elsewhere shows a file owned
    /// by 0 as the mapping's host id (seen from the host), and both unmount with one umount.
    #[test]
    fn idmap_in_place_and_bind() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP idmap_in_place_and_bind: needs root (mounts)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (src, bound) = (dir.path().join("src"), dir.path().join("bound"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&bound).unwrap();
        mount(
            Some("tmpfs"),
            &src,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        let result = (|| -> Result<(u32, u32, u32)> {
            bind_idmapped(&src, &bound, &map(0, 400000, 65536), &map(0, 500000, 65536))?;
            let meta = std::fs::metadata(bound.join("f")).unwrap();
            idmap_in_place(&src, &map(0, 600000, 65536), &map(0, 600000, 65536))?;
            let in_place = std::fs::metadata(src.join("f")).unwrap().uid();
            Ok((meta.uid(), meta.gid(), in_place))
        })();
        let _ = umount2(&bound, MntFlags::MNT_DETACH);
        let _ = umount2(&src, MntFlags::MNT_DETACH);
        assert_eq!(result.unwrap(), (400000, 500000, 600000));
        // One unmount each removed every mount: the files are gone with the tmpfs.
        assert!(!src.join("f").exists() && !bound.join("f").exists());
        // Bad mappings name the cause.
        let err = mapped_userns(&map(0, 1, 0), &map(0, 1, 1)).unwrap_err();
        assert!(err.to_string().contains("uid_map"), "{err}");
    }
}
