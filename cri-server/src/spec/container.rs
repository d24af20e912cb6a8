//! A container's spec (containerd: `container_create_linux.go`).

use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, Mount, Spec,
};

use super::{ContainerSpecInput, SpecError};

/// A container's spec.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let mut spec = berth_runtime::spec_default::default_spec(false);
    let config = &input.config;
    let image = input.image_config.config().clone().unwrap_or_default();
    let root = spec.root_mut().get_or_insert_with(Default::default);
    root.set_path(input.rootfs.clone());
    root.set_readonly(Some(false));
    spec.set_hostname(None);

    let mut args: Vec<String> = if config.command.is_empty() {
        image.entrypoint().clone().unwrap_or_default()
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(image.cmd().clone().unwrap_or_default());
    }
    if args.is_empty() {
        return Err(SpecError::Invalid {
            field: "command",
            reason: "no command specified (neither in the config nor in the image)".into(),
        });
    }
    let mut env: Vec<String> = image.env().clone().unwrap_or_default();
    for kv in &config.envs {
        env.retain(|e| e.split('=').next() != Some(kv.key.as_str()));
        env.push(format!("{}={}", kv.key, kv.value));
    }
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let caps: Capabilities = [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(args));
        process.set_env(Some(env));
        process.set_cwd(cwd.into());
        process.set_terminal(Some(config.tty));
        process.set_capabilities(Some(capabilities));
        process.set_no_new_privileges(Some(sc.no_new_privs));
        let user = process.user_mut();
        user.set_uid(sc.run_as_user.map(|u| u.value as u32).unwrap_or(0));
        user.set_gid(sc.run_as_group.map(|g| g.value as u32).unwrap_or(0));
    }

    let pid = input.sandbox_pid;
    let join = |typ, name: &str| ns(typ, Some(PathBuf::from(format!("/proc/{pid}/ns/{name}"))));
    let pid_mode = sc
        .namespace_options
        .as_ref()
        .map(|n| n.pid())
        .unwrap_or_default();
    let namespaces = vec![
        if pid_mode == k8s_cri::v1::NamespaceMode::Pod {
            join(LinuxNamespaceType::Pid, "pid")
        } else {
            ns(LinuxNamespaceType::Pid, None)
        },
        join(LinuxNamespaceType::Network, "net"),
        join(LinuxNamespaceType::Ipc, "ipc"),
        join(LinuxNamespaceType::Uts, "uts"),
        ns(LinuxNamespaceType::Mount, None),
    ];
    if let Some(linux) = spec.linux_mut() {
        linux.set_namespaces(Some(namespaces));
        linux.set_cgroups_path(Some(input.cgroups_path.clone().into()));
    }

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let files = &input.files;
    for (dest, src) in [
        ("/etc/hostname", &files.hostname),
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
        ("/dev/shm", &files.shm),
    ] {
        if let Some(src) = src {
            if config.mounts.iter().any(|m| m.container_path == dest) {
                continue;
            }
            mounts.retain(|m| m.destination() != std::path::Path::new(dest));
            mounts.push(bind(dest, src.clone(), false, "rprivate"));
        }
    }
    for m in &config.mounts {
        mounts.retain(|x| x.destination() != std::path::Path::new(&m.container_path));
        mounts.push(bind(
            &m.container_path,
            m.host_path.clone().into(),
            m.readonly,
            "rprivate",
        ));
    }
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

fn bind(dest: &str, src: PathBuf, readonly: bool, propagation: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(src));
    let mut options = vec!["rbind".to_string(), propagation.to_string()];
    options.push(if readonly { "ro" } else { "rw" }.to_string());
    m.set_options(Some(options));
    m
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}
