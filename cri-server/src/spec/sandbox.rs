//! The pause container's spec (containerd: `podsandbox/sandbox_run_linux.go`).

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use super::{SandboxSpecInput, SpecError};

/// The pause container's spec.
pub fn sandbox_spec(input: &SandboxSpecInput) -> Result<Spec, SpecError> {
    let mut spec = berth_runtime::spec_default::default_spec(false);
    let root = spec.root_mut().get_or_insert_with(Default::default);
    root.set_path(input.rootfs.clone());
    root.set_readonly(Some(true));
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(input.args.clone()));
        process.set_terminal(Some(false));
        process.set_no_new_privileges(Some(true));
        process.set_oom_score_adj(Some(-998));
    }
    let host_network = input.netns.is_none();
    spec.set_hostname(if host_network {
        None
    } else {
        Some(input.config.hostname.clone())
    });
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Ipc, None),
        ns(LinuxNamespaceType::Mount, None),
    ];
    if let Some(netns) = &input.netns {
        namespaces.push(ns(LinuxNamespaceType::Network, Some(netns.clone())));
        namespaces.push(ns(LinuxNamespaceType::Uts, None));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_namespaces(Some(namespaces));
        linux.set_cgroups_path(Some(input.cgroups_path.clone().into()));
    }
    Ok(spec)
}

fn ns(typ: LinuxNamespaceType, path: Option<std::path::PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}
