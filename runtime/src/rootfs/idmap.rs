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
use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::mount_options::{self, attr, Recursive};
use crate::error::{Result, RuntimeError};
use crate::process::namespaces::write_id_maps;
use crate::process::sync::{self, ToChild, ToParent};
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
    let context = |op: &str, e| {
        RuntimeError::sys(
            format!(
                "idmapped mount {} on {}: {op}",
                req.source.display(),
                req.destination.display()
            ),
            e,
        )
    };
    let recursive = if req.recursive == Recursive::Yes {
        AT_RECURSIVE
    } else {
        0
    };
    let cwd = File::open("/").map_err(|e| RuntimeError::io("open", "/", e))?;
    let tree = sys::open_tree(
        &cwd,
        &req.source.to_string_lossy(),
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

/// A user namespace carrying the given mappings: a short-lived child creates it, the runtime
/// writes its maps and keeps a descriptor to it, then ends the child.
fn mapped_userns(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<File> {
    let (parent, child) = sync::pair()?;
    match sys::fork().map_err(|e| RuntimeError::sys("fork for an idmap user namespace", e))? {
        ForkResult::Child => {
            drop(parent);
            let code = match nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = child.send(&ToParent::UsernsCreated);
                    // Wait until the runtime has what it needs and closes its end.
                    let _ = child.recv::<ToChild>();
                    0
                }
                Err(_) => 1,
            };
            sys::exit_child(code)
        }
        ForkResult::Parent { child: pid } => {
            drop(child);
            let result = (|| {
                match parent.recv::<ToParent>()? {
                    Some(ToParent::UsernsCreated) => {}
                    _ => {
                        return Err(RuntimeError::sys(
                            "create a user namespace for an idmapped mount",
                            nix::errno::Errno::EPERM,
                        ))
                    }
                }
                write_id_maps(pid, uids, gids)?;
                let path = format!("/proc/{pid}/ns/user");
                File::open(&path).map_err(|e| RuntimeError::io("open", path, e))
            })();
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            result
        }
    }
}
