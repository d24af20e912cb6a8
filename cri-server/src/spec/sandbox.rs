//! The pause container's spec (containerd: `podsandbox/sandbox_run_linux.go`).

use cri_api::v1 as cri;
use oci_spec::runtime::Spec;

use super::{
    annotations, base, lsm, mounts, namespaces, process, resources, seccomp, security,
    SandboxSpecInput, SpecError,
};

/// containerd's oom_score_adj for the pause (kubelet's `PodInfraOOMAdj`).
pub const SANDBOX_OOM_SCORE_ADJ: i64 = -998;

/// The pause container's spec.
pub fn sandbox_spec(input: &SandboxSpecInput) -> Result<Spec, SpecError> {
    let linux = input.config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns_opts = sc.namespace_options.as_ref();
    let privileged = sc.privileged;
    let host_ipc = ns_opts.is_some_and(|o| o.ipc() == cri::NamespaceMode::Node);
    let userns = namespaces::pod_userns(ns_opts)?;
    if input.args.is_empty() {
        return Err(SpecError::Invalid {
            field: "sandbox image",
            reason: "the pause image has neither Entrypoint nor Cmd".into(),
        });
    }

    let mut spec = base::spec(&input.rootfs);
    // The host's hostname on the host network: no UTS namespace, nothing to set. A pod config
    // without a hostname gets none either: its new UTS namespace starts with the node's.
    spec.set_hostname(
        input
            .netns
            .as_ref()
            .filter(|_| !input.config.hostname.is_empty())
            .map(|_| input.config.hostname.clone()),
    );
    let mut pause_mounts = mounts::sandbox(&input.files, host_ipc);
    // A fresh sysfs needs the pod's user namespace to own its network namespace: on the
    // host network it does not.
    if userns.is_some() && input.userns.is_none() {
        mounts::sysfs_for_userns(&mut pause_mounts);
    }
    spec.set_mounts(Some(pause_mounts));
    spec.set_annotations(Some({
        let mut a = annotations::sandbox(&input.id, &input.config);
        if let Some(res) = &linux.resources {
            a.extend(resources::sandbox_annotations(res));
        }
        a
    }));
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(true));
    }

    let user = process::resolve_user(&process::UserRequest {
        run_as_user: sc.run_as_user.map(|u| u.value),
        run_as_group: sc.run_as_group.map(|g| g.value),
        image_user: input.image_user.as_deref(),
        supplemental_groups: &sc.supplemental_groups,
        strict_groups: true,
        ..Default::default()
    })?;
    let caps = security::capabilities(None, privileged, &input.host.held_caps)?;
    let bounding = caps.bounding().clone().unwrap_or_default();
    // The deprecated path is still how old kubelets and crictl files ask.
    #[allow(deprecated)]
    let old_seccomp_path = sc.seccomp_profile_path.as_str();
    let seccomp = seccomp::select(sc.seccomp.as_ref(), old_seccomp_path, privileged, &bounding)?;
    let oom = resources::oom_score_adj(SANDBOX_OOM_SCORE_ADJ, &input.host)?;
    let apparmor = lsm::apparmor_for(sc.apparmor.as_ref(), "", privileged, &input.host)?;
    let name = input
        .config
        .metadata
        .as_ref()
        .map_or("", |m| m.name.as_str());
    lsm::selinux(name, sc.selinux_options.as_ref(), &[], &input.host)?;
    if let Some(p) = spec.process_mut() {
        p.set_apparmor_profile(apparmor);
        p.set_args(Some(input.args.clone()));
        let env = process::merge_env(&[&p.env().clone().unwrap_or_default(), &input.image_env]);
        p.set_env(Some(env));
        p.set_cwd(process::cwd("", input.image_working_dir.as_deref()).into());
        p.set_no_new_privileges(Some(true));
        p.set_oom_score_adj(Some(oom));
        p.set_capabilities(Some(caps));
        let u = p.user_mut();
        u.set_uid(user.uid);
        u.set_gid(user.gid);
        u.set_additional_gids(Some(user.additional_gids));
    }

    let l = spec.linux_mut().get_or_insert_with(Default::default);
    l.set_namespaces(Some(namespaces::sandbox(
        ns_opts,
        input.netns.as_ref(),
        userns.is_some(),
        input.userns.as_ref(),
    )));
    // The mappings stay when the pause joins the pinned user namespace: they are that
    // namespace's, and runc 1.1 refuses a user namespace without them.
    if userns.is_some() && input.userns.is_none() && input.netns.is_some() {
        return Err(SpecError::Invalid {
            field: "security_context.namespace_options.userns_options",
            reason: "the pod's network namespace has no user namespace pinned with it".into(),
        });
    }
    if let Some(userns) = &userns {
        l.set_uid_mappings(Some(userns.uids.clone()));
        l.set_gid_mappings(Some(userns.gids.clone()));
    }
    l.set_cgroups_path(Some(input.cgroups_path.clone().into()));
    if !linux.sysctls.is_empty() {
        l.set_sysctl(Some(linux.sysctls.clone().into_iter().collect()));
    }
    l.set_seccomp(seccomp);
    if privileged {
        l.set_masked_paths(None);
        l.set_readonly_paths(None);
    }
    let res = l.resources_mut().get_or_insert_with(Default::default);
    let mut cpu = res.cpu().clone().unwrap_or_default();
    cpu.set_shares(Some(resources::SANDBOX_CPU_SHARES));
    res.set_cpu(Some(cpu));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use oci_spec::runtime::LinuxNamespaceType;

    use super::*;
    use crate::spec::test_support::*;
    use crate::spec::HostInfo;

    #[test]
    fn pause_defaults() {
        let input = sandbox_input();
        let spec = sandbox_spec(&input).unwrap();
        let p = spec.process().clone().unwrap();
        assert_eq!(p.args().clone().unwrap(), ["/pause"]);
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), Some(-998));
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert!(p.rlimits().is_none());
        assert_eq!(spec.root().clone().unwrap().readonly(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
        let l = spec.linux().clone().unwrap();
        assert_eq!(
            l.cgroups_path().clone(),
            Some(PathBuf::from("/kubepods/pod1/sb1"))
        );
        assert_eq!(l.sysctl().clone().unwrap()["net.ipv4.ip_forward"], "1");
        let ns: Vec<_> = l.namespaces().clone().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network
            && n.path().as_deref() == Some(std::path::Path::new("/run/netns/sb1"))));
        assert_eq!(
            l.resources()
                .clone()
                .unwrap()
                .cpu()
                .clone()
                .unwrap()
                .shares(),
            Some(2)
        );
        // RuntimeDefault seccomp from the security context.
        assert!(l.seccomp().is_some());
        assert_eq!(l.masked_paths().clone().unwrap().len(), 11);
        let a = spec.annotations().clone().unwrap();
        assert_eq!(a["io.kubernetes.cri.container-type"], "sandbox");
        assert_eq!(a["io.kubernetes.cri.sandbox-id"], "sb1");
        assert_eq!(
            a["io.kubernetes.cri.sandbox-log-directory"],
            "/var/log/pods/web"
        );
        assert_eq!(
            a["io.kubernetes.cri.sandbox-memory"],
            (128 << 20).to_string()
        );
        // /dev/shm and resolv.conf bound read-only from the sandbox's files.
        let m = spec.mounts().clone().unwrap();
        assert!(m
            .iter()
            .any(|m| m.destination() == std::path::Path::new("/dev/shm")
                && m.typ().as_deref() == Some("bind")));
    }

    #[test]
    fn no_hostname_keeps_the_nodes() {
        // critest and a minimal pod.json send no hostname: the pod's own UTS namespace starts
        // with the node's, so the spec sets none (never an empty one).
        let mut input = sandbox_input();
        input.config.hostname.clear();
        let spec = sandbox_spec(&input).unwrap();
        assert_eq!(spec.hostname(), &None);
    }

    #[test]
    fn host_namespaces() {
        let mut input = sandbox_input();
        input.netns = None;
        set_ns(
            &mut input.config,
            cri::NamespaceMode::Node,
            cri::NamespaceMode::Node,
            cri::NamespaceMode::Node,
        );
        let spec = sandbox_spec(&input).unwrap();
        assert_eq!(spec.hostname(), &None);
        let ns = spec.linux().clone().unwrap().namespaces().clone().unwrap();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].typ(), LinuxNamespaceType::Mount);
        let shm = spec
            .mounts()
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.destination() == std::path::Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(
            shm.source().as_deref(),
            Some(std::path::Path::new("/dev/shm"))
        );
    }

    #[test]
    fn user_namespace_and_run_as() {
        let mut input = sandbox_input();
        let sc = input
            .config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.run_as_user = Some(cri::Int64Value { value: 65535 });
        sc.run_as_group = Some(cri::Int64Value { value: 65535 });
        sc.supplemental_groups = vec![5];
        sc.namespace_options.as_mut().unwrap().userns_options = Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![idmap(0, 100000, 65536)],
            gids: vec![idmap(0, 100000, 65536)],
        });
        // A pod network without the user namespace that owns it: refused.
        assert!(sandbox_spec(&input).is_err());
        input.userns = Some("/run/berth/sandboxes/sb1/userns".into());
        let spec = sandbox_spec(&input).unwrap();
        let u = spec.process().clone().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (65535, 65535));
        assert_eq!(u.additional_gids().clone().unwrap(), [5, 65535]);
        let l = spec.linux().clone().unwrap();
        let user_path = |l: &oci_spec::runtime::Linux| {
            l.namespaces()
                .clone()
                .unwrap()
                .iter()
                .find(|n| n.typ() == LinuxNamespaceType::User)
                .map(|n| n.path().clone())
        };
        assert_eq!(
            user_path(&l),
            Some(Some("/run/berth/sandboxes/sb1/userns".into()))
        );
        // Its mappings stay (runc 1.1 needs them), and it gets a sysfs of its own.
        assert_eq!(l.uid_mappings().clone().unwrap()[0].host_id(), 100000);
        let sys_type = |spec: &oci_spec::runtime::Spec| {
            spec.mounts()
                .iter()
                .flatten()
                .find(|m| m.destination() == std::path::Path::new("/sys"))
                .and_then(|m| m.typ().clone())
        };
        assert_eq!(sys_type(&spec).as_deref(), Some("sysfs"));
        // On the host network: a new user namespace, and the host's /sys bound.
        input.netns = None;
        input.userns = None;
        let spec = sandbox_spec(&input).unwrap();
        assert_eq!(user_path(&spec.linux().clone().unwrap()), Some(None));
        assert_eq!(sys_type(&spec).as_deref(), Some("bind"));
    }

    #[test]
    fn privileged_and_restricted_oom() {
        let mut input = sandbox_input();
        input.host = HostInfo {
            min_oom_score_adj: Some(0),
            ..HostInfo::default()
        };
        input
            .config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .privileged = true;
        let spec = sandbox_spec(&input).unwrap();
        assert_eq!(spec.process().clone().unwrap().oom_score_adj(), Some(0));
        let l = spec.linux().clone().unwrap();
        assert!(l.seccomp().is_none() && l.masked_paths().is_none());
    }

    #[test]
    fn sandbox_image_env_and_working_dir() {
        let mut input = sandbox_input();
        let spec = sandbox_spec(&input).unwrap();
        let p = spec.process().clone().unwrap();
        assert_eq!(p.cwd().to_str(), Some("/"));
        let default_env = p.env().clone().unwrap();
        input.image_env = vec!["PATH=/opt/pause".into(), "MODE=sandbox".into()];
        input.image_working_dir = Some("/work".into());
        let spec = sandbox_spec(&input).unwrap();
        let p = spec.process().clone().unwrap();
        assert_eq!(p.cwd().to_str(), Some("/work"));
        assert_eq!(
            p.env().clone().unwrap(),
            ["PATH=/opt/pause", "MODE=sandbox"]
        );
        assert!(default_env[0].starts_with("PATH="));
    }

    #[test]
    fn empty_args_rejected() {
        let mut input = sandbox_input();
        input.args.clear();
        assert!(sandbox_spec(&input).is_err());
    }
}
