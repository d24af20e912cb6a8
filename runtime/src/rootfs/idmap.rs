//! Idmapped mounts (`mounts[].uidMappings/gidMappings`, options `idmap`/`ridmap`), for
//! Kubernetes pods with `hostUsers: false`: the runtime (in the host's namespaces) clones the
//! source as a detached mount, attaches a user namespace carrying the mapping with
//! mount_setattr(MOUNT_ATTR_IDMAP), and hands the descriptor to init, which moves it into place.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::mount_options::{self, attr, Recursive};
use crate::error::{Result, RuntimeError};
use crate::process::namespaces::write_id_maps;
use crate::process::sync::{self, ToParent};
use crate::sys::{
    self, MountAttr, AT_EMPTY_PATH, AT_RECURSIVE, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
};

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

/// Prepares every idmapped mount of the spec; the map is keyed by index in `mounts`.
pub fn prepare(spec: &Spec, bundle: &Path) -> Result<HashMap<usize, OwnedFd>> {
    let mut out = HashMap::new();
    let mounts = spec.mounts().clone().unwrap_or_default();
    let linux = spec.linux().as_ref();
    let default_uids = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let default_gids = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let Some(recursive) = wants_idmap(m) else {
            continue;
        };
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
        let source = if source.is_absolute() {
            source
        } else {
            bundle.join(source)
        };
        let fd = idmapped_tree(&source, &uids, &gids, recursive).map_err(|e| match e {
            RuntimeError::Sys { op, source: errno } => RuntimeError::Sys {
                op: format!(
                    "idmapped mount {} on {}: {op}",
                    m.source()
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default(),
                    m.destination().display()
                ),
                source: errno,
            },
            other => other,
        })?;
        out.insert(i, fd);
    }
    Ok(out)
}

fn idmapped_tree(
    source: &Path,
    uids: &[LinuxIdMapping],
    gids: &[LinuxIdMapping],
    recursive: Recursive,
) -> Result<OwnedFd> {
    let userns = mapped_userns(uids, gids)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive == Recursive::Yes {
        flags |= AT_RECURSIVE;
    }
    let cwd = File::open(".").map_err(|e| RuntimeError::io("open", ".", e))?;
    let tree = sys::open_tree(&cwd, &source.to_string_lossy(), flags)
        .map_err(|e| RuntimeError::sys(format!("open_tree {}", source.display()), e))?;
    let attr = MountAttr {
        attr_set: attr::IDMAP,
        userns_fd: std::os::fd::AsRawFd::as_raw_fd(&userns) as u64,
        ..Default::default()
    };
    let mut set_flags = AT_EMPTY_PATH;
    if recursive == Recursive::Yes {
        set_flags |= AT_RECURSIVE;
    }
    sys::mount_setattr(&tree, "", set_flags, &attr)
        .map_err(|e| RuntimeError::sys("mount_setattr MOUNT_ATTR_IDMAP", e))?;
    Ok(tree)
}

/// A user namespace carrying the given mappings: a short-lived child creates it, the runtime
/// writes its maps and keeps a descriptor to it, then ends the child.
fn mapped_userns(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<File> {
    let (parent, child) = sync::pair()?;
    match sys::fork().map_err(|e| RuntimeError::sys("fork for an idmap user namespace", e))? {
        ForkResult::Child => {
            drop(parent);
            let code = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = child.send(&ToParent::UsernsCreated);
                    // Wait until the runtime has what it needs and closes its end.
                    let _ = child.recv::<sync::ToChild>();
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
                            "create an idmap user namespace",
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
