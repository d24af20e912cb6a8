//! v1 net_cls (class id for tc) and net_prio (per-interface priority).

use std::path::Path;

use oci_spec::runtime::LinuxInterfacePriority;

use crate::{cgroupfs, CgroupError};

/// Writes net_cls.classid.
pub(super) fn apply_classid(dir: &Path, class_id: u32) -> Result<(), CgroupError> {
    cgroupfs::write(dir, "net_cls.classid", &class_id.to_string())
}

/// Writes one "ifname priority" line per interface to net_prio.ifpriomap.
pub(super) fn apply_prio(dir: &Path, prios: &[LinuxInterfacePriority]) -> Result<(), CgroupError> {
    for p in prios {
        cgroupfs::write(
            dir,
            "net_prio.ifpriomap",
            &format!("{} {}", p.name(), p.priority()),
        )?;
    }
    Ok(())
}
