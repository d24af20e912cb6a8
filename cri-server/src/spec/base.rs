//! containerd's default spec as the CRI plugin starts from it: runc-like, with containerd's
//! capability set and mounts, no rlimits (they are inherited), no seccomp or AppArmor until the
//! security context asks, and namespaces filled in later.

use std::path::Path;

use oci_spec::runtime::{LinuxResources, Spec};

use super::{mounts, process, security};

pub fn spec(rootfs: &Path) -> Spec {
    let mut spec = berth_runtime::spec_default::default_spec(false);
    let root = spec.root_mut().get_or_insert_with(Default::default);
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(false));
    spec.set_hostname(None);
    spec.set_mounts(Some(mounts::defaults(false)));
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(false));
        p.set_args(None);
        p.set_env(Some(vec![process::DEFAULT_PATH_ENV.to_string()]));
        p.set_cwd("/".into());
        p.set_rlimits(None);
        p.set_no_new_privileges(None);
        p.set_apparmor_profile(None);
        p.set_capabilities(
            security::capabilities(None, false, &security::DEFAULT_CAPS.into_iter().collect()).ok(),
        );
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_masked_paths(Some(
            security::DEFAULT_MASKED_PATHS.map(String::from).to_vec(),
        ));
        linux.set_readonly_paths(Some(
            security::DEFAULT_READONLY_PATHS.map(String::from).to_vec(),
        ));
        linux.set_seccomp(None);
        if linux.resources().is_none() {
            linux.set_resources(Some(LinuxResources::default()));
        }
    }
    spec
}
