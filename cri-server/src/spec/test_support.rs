//! Fixtures for the spec tests: a pod, a container, an image config.

use std::path::PathBuf;

use cri_api::v1 as cri;
use oci_spec::image::{ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder};

use super::{ContainerSpecInput, HostInfo, SandboxFiles, SandboxSpecInput};

pub fn idmap(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

pub fn set_ns(
    pod: &mut cri::PodSandboxConfig,
    network: cri::NamespaceMode,
    pid: cri::NamespaceMode,
    ipc: cri::NamespaceMode,
) {
    let opts = pod
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    opts.network = network as i32;
    opts.pid = pid as i32;
    opts.ipc = ipc as i32;
}

pub fn pod_config() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        log_directory: "/var/log/pods/web".into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/pod1".into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption::default()),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())]
                .into_iter()
                .collect(),
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Files that need not exist: the pause spec only names them.
pub fn sandbox_files() -> SandboxFiles {
    SandboxFiles {
        hostname: Some("/run/berth/sb1/hostname".into()),
        hosts: Some("/run/berth/sb1/hosts".into()),
        resolv_conf: Some("/run/berth/sb1/resolv.conf".into()),
        shm: Some("/run/berth/sb1/shm".into()),
    }
}

pub fn sandbox_input() -> SandboxSpecInput {
    SandboxSpecInput {
        id: "sb1".into(),
        config: pod_config(),
        rootfs: "/var/lib/berth/pause/rootfs".into(),
        args: vec!["/pause".into()],
        netns: Some("/run/netns/sb1".into()),
        userns: None,
        cgroups_path: "/kubepods/pod1/sb1".into(),
        files: sandbox_files(),
        image_user: None,
        image_env: Vec::new(),
        image_working_dir: None,
        host: HostInfo::default(),
    }
}

pub fn image_config(
    entrypoint: &[&str],
    cmd: &[&str],
    env: &[&str],
    user: &str,
    workdir: &str,
) -> ImageConfiguration {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let config = ConfigBuilder::default()
        .entrypoint(v(entrypoint))
        .cmd(v(cmd))
        .env(v(env))
        .user(user.to_string())
        .working_dir(workdir.to_string())
        .build()
        .unwrap();
    ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .unwrap()
}

pub fn container_config() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        envs: vec![cri::KeyValue {
            key: "MODE".into(),
            value: "test".into(),
        }],
        linux: Some(cri::LinuxContainerConfig {
            resources: None,
            security_context: None,
        }),
        ..Default::default()
    }
}

/// A container input whose sandbox files live in `dir` (mount sources must exist).
pub fn container_input(dir: &std::path::Path) -> ContainerSpecInput {
    for f in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(dir.join(f), "x\n").unwrap();
    }
    std::fs::create_dir_all(dir.join("shm")).unwrap();
    ContainerSpecInput {
        id: "c1".into(),
        config: container_config(),
        sandbox_id: "sb1".into(),
        sandbox_config: pod_config(),
        sandbox_pid: 4242,
        image_config: image_config(
            &["/bin/sh"],
            &["-c", "true"],
            &["PATH=/bin", "MODE=image"],
            "",
            "/work",
        ),
        image_name: "docker.io/library/busybox:latest".into(),
        rootfs: PathBuf::from("/var/lib/berth/c1/rootfs"),
        passwd: Some("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/:/bin/false\n".into()),
        group: Some("root:x:0:\nwww:x:33:\nvideo:x:44:www\n".into()),
        cgroups_path: "/kubepods/pod1/c1".into(),
        files: SandboxFiles {
            hostname: Some(dir.join("hostname")),
            hosts: Some(dir.join("hosts")),
            resolv_conf: Some(dir.join("resolv.conf")),
            shm: Some(dir.join("shm")),
        },
        annotations: Default::default(),
        target_pid: None,
        host: HostInfo::default(),
    }
}
