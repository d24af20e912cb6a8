//! Tests of `container_spec` as a whole (the rules themselves are tested beside their code).

use std::path::Path;

use cri_api::v1 as cri;
use oci_spec::runtime::{Capability, LinuxDeviceType, LinuxNamespaceType, Spec};

use super::container_spec;
use crate::spec::test_support::*;
use crate::spec::{ContainerSpecInput, HostInfo};

fn sc(input: &mut ContainerSpecInput) -> &mut cri::LinuxContainerSecurityContext {
    input
        .config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn process(spec: &Spec) -> oci_spec::runtime::Process {
    spec.process().clone().unwrap()
}

fn linux(spec: &Spec) -> oci_spec::runtime::Linux {
    spec.linux().clone().unwrap()
}

#[test]
fn defaults() {
    let dir = tempfile::tempdir().unwrap();
    let input = container_input(dir.path());
    let spec = container_spec(&input).unwrap();
    let p = process(&spec);
    assert_eq!(p.args().clone().unwrap(), ["/bin/sh", "-c", "true"]);
    assert_eq!(
        p.env().clone().unwrap(),
        ["PATH=/bin", "HOSTNAME=web-0", "MODE=test"]
    );
    assert_eq!(p.cwd(), Path::new("/work"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.no_new_privileges(), Some(false));
    assert!(p.rlimits().is_none() && p.oom_score_adj().is_none());
    assert_eq!(
        p.capabilities()
            .clone()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
            .len(),
        14
    );
    assert_eq!(
        spec.root().clone().unwrap().path(),
        Path::new("/var/lib/berth/c1/rootfs")
    );
    assert_eq!(spec.root().clone().unwrap().readonly(), Some(false));
    assert_eq!(spec.hostname(), &None);
    let l = linux(&spec);
    let ns = l.namespaces().clone().unwrap();
    assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network
        && n.path().as_deref() == Some(Path::new("/proc/4242/ns/net"))));
    assert_eq!(
        l.cgroups_path().clone().unwrap(),
        Path::new("/kubepods/pod1/c1")
    );
    // No security context at all: containerd's default masked paths, no seccomp.
    assert_eq!(l.masked_paths().clone().unwrap().len(), 11);
    assert!(l.seccomp().is_none());
    assert_eq!(l.sysctl().clone().unwrap()["net.ipv4.ip_forward"], "1");
    let rules = l.resources().clone().unwrap().devices().clone().unwrap();
    assert!(!rules[0].allow(), "deny all devices first");
    let a = spec.annotations().clone().unwrap();
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.container-name"], "app");
    assert_eq!(
        a["io.kubernetes.cri.image-name"],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "sb1");
    let dests: Vec<_> = spec
        .mounts()
        .clone()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    for d in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/dev/shm",
        "/sys/fs/cgroup",
    ] {
        assert!(dests.iter().any(|x| x == d), "{d} missing from {dests:?}");
    }
}

#[test]
fn tty_user_and_readonly_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = container_input(dir.path());
    input.config.tty = true;
    input.config.stdin = true;
    {
        let sc = sc(&mut input);
        sc.run_as_username = "www".into();
        sc.supplemental_groups = vec![1234];
        sc.readonly_rootfs = true;
        sc.no_new_privs = true;
    }
    let spec = container_spec(&input).unwrap();
    let p = process(&spec);
    assert_eq!(p.terminal(), Some(true));
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
    assert_eq!(p.user().additional_gids().clone().unwrap(), [33, 44, 1234]);
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(spec.root().clone().unwrap().readonly(), Some(true));
    let err = {
        sc(&mut input).run_as_username = "nobody".into();
        container_spec(&input).unwrap_err().to_string()
    };
    assert_eq!(
        err,
        "security_context.run_as_username \"nobody\": not found in the image's /etc/passwd"
    );
}

#[test]
fn privileged() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = container_input(dir.path());
    sc(&mut input).privileged = true;
    sc(&mut input).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    // Not in a privileged sandbox: refused.
    let err = container_spec(&input).unwrap_err().to_string();
    assert!(err.starts_with("security_context.privileged"), "{err}");
    input
        .sandbox_config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let spec = container_spec(&input).unwrap();
    let caps = process(&spec).capabilities().clone().unwrap();
    assert!(caps
        .bounding()
        .clone()
        .unwrap()
        .contains(&Capability::SysAdmin));
    let l = linux(&spec);
    assert!(l.seccomp().is_none());
    assert!(l.masked_paths().is_none() && l.readonly_paths().is_none());
    assert!(l
        .devices()
        .clone()
        .unwrap()
        .iter()
        .any(|d| d.path() == Path::new("/dev/null")));
    let rules = l.resources().clone().unwrap().devices().clone().unwrap();
    assert!(rules
        .iter()
        .any(|r| r.allow() && r.typ() == Some(LinuxDeviceType::A)));
    let sys = spec
        .mounts()
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().clone().unwrap().contains(&"rw".to_string()));
}

#[test]
fn security_context_paths_seccomp_and_caps() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = container_input(dir.path());
    {
        let sc = sc(&mut input);
        sc.masked_paths = vec!["/proc/kcore".into()];
        sc.readonly_paths = vec![];
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        sc.capabilities = Some(cri::Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            drop_capabilities: vec!["NET_RAW".into()],
            add_ambient_capabilities: vec![],
        });
    }
    let spec = container_spec(&input).unwrap();
    let l = linux(&spec);
    assert_eq!(l.masked_paths().clone().unwrap(), ["/proc/kcore"]);
    assert!(l.readonly_paths().is_none());
    // The profile follows the final capabilities: SYS_ADMIN allows mount.
    let names: Vec<String> = l
        .seccomp()
        .clone()
        .unwrap()
        .syscalls()
        .clone()
        .unwrap()
        .iter()
        .flat_map(|r| r.names().clone())
        .collect();
    assert!(names.iter().any(|n| n == "mount"));
    let b = process(&spec)
        .capabilities()
        .clone()
        .unwrap()
        .bounding()
        .clone()
        .unwrap();
    assert!(b.contains(&Capability::SysAdmin) && !b.contains(&Capability::NetRaw));
}

#[test]
fn resources_and_oom() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = container_input(dir.path());
    input.host = HostInfo {
        min_oom_score_adj: Some(0),
        ..HostInfo::default()
    };
    input.config.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        cpu_quota: 20_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 32 << 20,
        oom_score_adj: -5,
        ..Default::default()
    });
    let spec = container_spec(&input).unwrap();
    assert_eq!(process(&spec).oom_score_adj(), Some(0));
    let r = linux(&spec).resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().limit(), Some(32 << 20));
    assert_eq!(r.cpu().clone().unwrap().quota(), Some(20_000));
}

#[test]
fn namespaces_userns_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = container_input(dir.path());
    input
        .sandbox_config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options = Some(cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![idmap(0, 100000, 65536)],
            gids: vec![idmap(0, 100000, 65536)],
        }),
        ..Default::default()
    });
    sc(&mut input).namespace_options = Some(cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    });
    input.config.devices = vec![cri::Device {
        container_path: "/dev/xnull".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    }];
    input.host.cgroup2_unified = true;
    let spec = container_spec(&input).unwrap();
    let l = linux(&spec);
    let ns = l.namespaces().clone().unwrap();
    let find = |t| ns.iter().find(|n| n.typ() == t).cloned();
    assert_eq!(find(LinuxNamespaceType::Pid).unwrap().path(), &None);
    assert_eq!(
        find(LinuxNamespaceType::User).unwrap().path().as_deref(),
        Some(Path::new("/proc/4242/ns/user"))
    );
    assert!(find(LinuxNamespaceType::Cgroup).is_some());
    assert_eq!(l.uid_mappings().clone().unwrap()[0].host_id(), 100000);
    // Its own sysfs: the pod's network namespace belongs to the pod's user namespace.
    let sys = |spec: &oci_spec::runtime::Spec| {
        spec.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/sys"))
            .cloned()
            .unwrap()
    };
    assert_eq!(sys(&spec).typ().as_deref(), Some("sysfs"));
    assert_eq!(
        l.devices().clone().unwrap()[0].path(),
        Path::new("/dev/xnull")
    );
    // On the host network (not the pod's user namespace's), the host's /sys bound rro.
    let mut host_net = input.sandbox_config.clone();
    host_net
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = cri::NamespaceMode::Node as i32;
    let saved = std::mem::replace(&mut input.sandbox_config, host_net);
    let bound = sys(&container_spec(&input).unwrap());
    assert_eq!(bound.typ().as_deref(), Some("bind"));
    assert!(bound
        .options()
        .as_ref()
        .unwrap()
        .contains(&"rro".to_string()));
    input.sandbox_config = saved;
    // A container asking for a different user namespace than its pod: refused.
    sc(&mut input).namespace_options = Some(cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![idmap(0, 5, 1)],
            gids: vec![idmap(0, 5, 1)],
        }),
        ..Default::default()
    });
    assert!(container_spec(&input).is_err());
}

#[test]
fn host_network_drops_net_sysctls() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = container_input(dir.path());
    set_ns(
        &mut input.sandbox_config,
        cri::NamespaceMode::Node,
        cri::NamespaceMode::Pod,
        cri::NamespaceMode::Pod,
    );
    let spec = container_spec(&input).unwrap();
    assert!(linux(&spec).sysctl().is_none());
}
