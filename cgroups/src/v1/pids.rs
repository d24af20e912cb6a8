//! v1 pids: pids.max and pids.current.

use std::path::Path;

use oci_spec::runtime::LinuxPids;

use crate::stats::{limit_or_none, PidsStats};
use crate::{cgroupfs, CgroupError};

/// The pids.max value for an OCI limit: a positive number, else "max" (0 and -1 are unlimited).
pub(crate) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_owned()
    }
}

/// Writes pids.max.
pub(super) fn apply(dir: &Path, pids: &LinuxPids) -> Result<(), CgroupError> {
    cgroupfs::write(dir, "pids.max", &pids_max(pids.limit()))
}

/// pids.current and pids.max (same files on v1 and v2).
pub(crate) fn stats(dir: &Path) -> Result<PidsStats, CgroupError> {
    Ok(PidsStats {
        current: cgroupfs::read_u64(dir, "pids.current")?,
        limit: cgroupfs::read_u64_opt(dir, "pids.max")?.and_then(limit_or_none),
    })
}
