//! A container's spec (containerd: `container_create.go`, `container_create_linux.go`).

use std::collections::BTreeMap;

use cri_api::v1 as cri;
use oci_spec::runtime::{LinuxDeviceCgroup, Spec};

use super::{
    annotations, base, cdi, devices, lsm, mounts, namespaces, process, resources, seccomp,
    security, ContainerSpecInput, SpecError,
};

/// Sysctls that live in the IPC namespace (kubelet's namespaced list).
fn ipc_sysctl(key: &str) -> bool {
    key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.")
}

/// A container's spec.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let config = &input.config;
    let image = input.image_config.config().clone().unwrap_or_default();
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let pod_linux = input.sandbox_config.linux.clone().unwrap_or_default();
    let pod_sc = pod_linux.security_context.clone().unwrap_or_default();
    let ns_opts = sc.namespace_options.as_ref();
    let privileged = sc.privileged;
    if privileged && !pod_sc.privileged {
        return Err(SpecError::Invalid {
            field: "security_context.privileged",
            reason: "no privileged container allowed in a sandbox that is not privileged".into(),
        });
    }
    let host_ipc = ns_opts.is_some_and(|o| o.ipc() == cri::NamespaceMode::Node);
    let host_network = pod_sc
        .namespace_options
        .as_ref()
        .is_some_and(|o| o.network() == cri::NamespaceMode::Node);

    let pod_userns = namespaces::container_userns(pod_sc.namespace_options.as_ref(), ns_opts)?;

    let mut spec = base::spec(&input.rootfs);

    // Process.
    let args = process::args(
        &config.command,
        &config.args,
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
    )?;
    let hostname = if input.sandbox_config.hostname.is_empty() {
        input.host.hostname.clone()
    } else {
        input.sandbox_config.hostname.clone()
    };
    let env = process::merge_env(&[
        &[process::DEFAULT_PATH_ENV.to_string()],
        &[format!("HOSTNAME={hostname}")],
        image.env().as_deref().unwrap_or_default(),
        &process::config_env(&config.envs),
    ]);
    let user = process::resolve_user(&process::UserRequest {
        run_as_username: &sc.run_as_username,
        run_as_user: sc.run_as_user.map(|u| u.value),
        run_as_group: sc.run_as_group.map(|g| g.value),
        image_user: image.user().as_deref(),
        supplemental_groups: &sc.supplemental_groups,
        strict_groups: sc.supplemental_groups_policy() == cri::SupplementalGroupsPolicy::Strict,
        passwd: input.passwd.as_deref(),
        group: input.group.as_deref(),
    })?;
    let caps = security::capabilities(sc.capabilities.as_ref(), privileged, &input.host.held_caps)?;
    let bounding = caps.bounding().clone().unwrap_or_default();
    // The deprecated path is still how old kubelets and crictl files ask.
    #[allow(deprecated)]
    let old_seccomp_path = sc.seccomp_profile_path.as_str();
    let seccomp = seccomp::select(sc.seccomp.as_ref(), old_seccomp_path, privileged, &bounding)?;
    let oom = match &linux.resources {
        Some(r) => Some(resources::oom_score_adj(r.oom_score_adj, &input.host)?),
        None => None,
    };
    #[allow(deprecated)]
    let old_apparmor = sc.apparmor_profile.as_str();
    let apparmor = lsm::apparmor_for(sc.apparmor.as_ref(), old_apparmor, privileged, &input.host)?;
    let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
    lsm::selinux(
        name,
        sc.selinux_options.as_ref(),
        &config.mounts,
        &input.host,
    )?;
    // CDI devices: their spec files and host nodes read now, applied once the spec is built.
    let cdi = cdi::resolve(config, &input.host.cdi_spec_dirs)?;
    if let Some(p) = spec.process_mut() {
        p.set_apparmor_profile(apparmor);
        p.set_args(Some(args));
        p.set_env(Some(env));
        p.set_cwd(process::cwd(&config.working_dir, image.working_dir().as_deref()).into());
        p.set_terminal(Some(config.tty));
        p.set_capabilities(Some(caps));
        p.set_no_new_privileges(Some(sc.no_new_privs));
        p.set_oom_score_adj(oom);
        let u = p.user_mut();
        u.set_uid(user.uid);
        u.set_gid(user.gid);
        u.set_additional_gids(Some(user.additional_gids));
    }
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(sc.readonly_rootfs));
    }

    // Mounts.
    let built = mounts::container(&mounts::ContainerMounts {
        config: &config.mounts,
        files: &input.files,
        readonly_rootfs: sc.readonly_rootfs,
        host_ipc,
        privileged,
        userns: pod_userns.as_ref(),
    })?;
    let mut all_mounts = built.mounts;
    // The pod's own network namespace belongs to its user namespace, so a fresh sysfs
    // mounts; the host's does not.
    if pod_userns.is_some() && host_network {
        mounts::sysfs_for_userns(&mut all_mounts);
    }
    spec.set_mounts(Some(all_mounts));

    // Devices.
    let mut devs = devices::from_config(&config.devices)?;
    if privileged {
        let host = devices::privileged()?;
        devs.devices.extend(host.devices);
        devs.rules.extend(host.rules);
    }

    let (masked, readonly) = security::paths(linux.security_context.as_ref(), privileged);
    let l = spec.linux_mut().get_or_insert_with(Default::default);
    let mut container_ns = namespaces::container(
        ns_opts,
        input.sandbox_pid,
        input.target_pid,
        pod_userns.is_some(),
        input.host.cgroup2_unified && !privileged,
    )?;
    if pod_userns.is_some() {
        // The host's namespaces of a host-network (and host-IPC/PID) userns pod are not joined
        // by path but kept, as containerd does: they belong to the host's user namespace, which
        // runc (joining the pod's user namespace first) may not join from inside it.
        namespaces::keep_host_namespaces(&mut container_ns, pod_sc.namespace_options.as_ref());
    }
    l.set_namespaces(Some(container_ns));
    if let Some(userns) = &pod_userns {
        l.set_uid_mappings(Some(userns.uids.clone()));
        l.set_gid_mappings(Some(userns.gids.clone()));
    }
    l.set_rootfs_propagation(built.rootfs_propagation.map(String::from));
    l.set_cgroups_path(Some(input.cgroups_path.clone().into()));
    l.set_masked_paths(Some(masked).filter(|m| !m.is_empty()));
    l.set_readonly_paths(Some(readonly).filter(|r| !r.is_empty()));
    l.set_seccomp(seccomp);
    l.set_devices(Some(devs.devices).filter(|d| !d.is_empty()));
    let sysctls: BTreeMap<String, String> = pod_linux
        .sysctls
        .iter()
        .filter(|(k, _)| !(host_network && k.starts_with("net.")))
        .filter(|(k, _)| !(host_ipc && ipc_sysctl(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !sysctls.is_empty() {
        l.set_sysctl(Some(sysctls.into_iter().collect()));
    }
    let res = l.resources_mut().get_or_insert_with(Default::default);
    let mut rules: Vec<LinuxDeviceCgroup> = res.devices().clone().unwrap_or_default();
    rules.extend(devs.rules);
    res.set_devices(Some(rules));
    if let Some(r) = &linux.resources {
        resources::apply(r, &input.host, res)?;
    }
    if let Some(cdi) = &cdi {
        cdi.apply(&mut spec);
    }

    spec.set_annotations(Some(annotations::container(
        &input.sandbox_id,
        &input.sandbox_config,
        config,
        &input.image_name,
        &input.annotations,
    )));
    Ok(spec)
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
