//! v1 devices: deny everything, then write each OCI rule in order to devices.allow or
//! devices.deny ("c 1:3 rwm"), so that the result is the spec's allowlist whatever was there.

use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use crate::devices::DeviceRule;
use crate::{cgroupfs, CgroupError};

/// The writes that set `rules` on a v1 devices cgroup: (file, value) in order.
pub(crate) fn plan(
    rules: &[LinuxDeviceCgroup],
) -> Result<Vec<(&'static str, String)>, CgroupError> {
    let mut writes = vec![("devices.deny", "a".to_owned())];
    for rule in DeviceRule::from_oci_list(rules)? {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        writes.push((file, rule.to_string()));
    }
    Ok(writes)
}

/// Applies the rules.
pub(super) fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    for (file, value) in plan(rules)? {
        cgroupfs::write(dir, file, &value)?;
    }
    Ok(())
}
