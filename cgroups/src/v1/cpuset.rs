//! v1 cpuset: cpus and mems. A new v1 cpuset cgroup starts with empty cpus/mems, and a process
//! cannot join it until they are set, so creation copies them down from the parent.

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use crate::{cgroupfs, CgroupError};

/// True if `cpu` sets cpus or mems.
pub(super) fn requested(cpu: &LinuxCpu) -> bool {
    cpu.cpus().as_deref().is_some_and(|c| !c.is_empty())
        || cpu.mems().as_deref().is_some_and(|m| !m.is_empty())
}

/// Writes cpuset.cpus then cpuset.mems.
pub(super) fn apply(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
        cgroupfs::write(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
        cgroupfs::write(dir, "cpuset.mems", mems)?;
    }
    Ok(())
}

/// Creates `dir` and every missing directory between `mount_point` and it, copying
/// cpuset.cpus and cpuset.mems from each parent into children where they are empty.
pub(super) fn create_with_parents(mount_point: &Path, dir: &Path) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(mount_point).unwrap_or(dir);
    let mut parent = mount_point.to_owned();
    for component in rel.components() {
        let child = parent.join(component);
        match std::fs::create_dir(&child) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create {
                    path: child,
                    source,
                })
            }
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            copy_if_empty(&parent, &child, file)?;
        }
        parent = child;
    }
    Ok(())
}

fn copy_if_empty(parent: &Path, child: &Path, file: &str) -> Result<(), CgroupError> {
    let Some(current) = cgroupfs::read_opt(child, file)? else {
        return Ok(());
    };
    if !current.trim().is_empty() {
        return Ok(());
    }
    let from_parent = cgroupfs::read(&parent.join(file))?;
    if from_parent.trim().is_empty() {
        return Ok(());
    }
    cgroupfs::write(child, file, from_parent.trim())
}
