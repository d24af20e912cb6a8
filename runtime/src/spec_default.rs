//! The default `config.json` that `berth-runtime spec` writes: the same document as `runc spec`
//! (and `runc spec --rootless`), field for field, with two deliberate differences:
//!
//! - `hostname` is `berth`, not `runc`.
//! - rootless: the id mappings map container root to the *calling* user's euid/egid (runc does
//!   the same; the saved fixtures were made as root, hence `hostID: 0`).
//!
//! `ociVersion` stays runc's `1.0.2-dev`: the document uses nothing newer.
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// The `ociVersion` of the default spec.
pub const DEFAULT_OCI_VERSION: &str = "1.0.2-dev";

/// The hostname of the default spec.
pub const DEFAULT_HOSTNAME: &str = "berth";

const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// runc's default spec, or its rootless variant (user namespace mapping root to the caller, no
/// network namespace, /sys bind-mounted, no `gid=5` on devpts, no device cgroup rules).
pub fn default_spec(rootless: bool) -> Spec {
    // Builders only fail on missing required fields; every one is set here.
    build(rootless).expect("the default spec is well-formed")
}

fn build(rootless: bool) -> Result<Spec, oci_spec::OciSpecError> {
    let caps: oci_spec::runtime::Capabilities = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    // Builders start from oci-spec's `Default` impls, which differ from runc's: unset by hand.
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .ambient(caps)
        .build()?;
    capabilities.set_inheritable(None);
    let process = ProcessBuilder::default()
        .terminal(true)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(vec!["sh".to_string()])
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "TERM=xterm".to_string(),
        ])
        .cwd("/")
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()?])
        .no_new_privileges(true)
        .build()?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    let mut linux = LinuxBuilder::default()
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec());
    if rootless {
        namespaces.retain(|n| *n != LinuxNamespaceType::Network);
        namespaces.push(LinuxNamespaceType::User);
        let map = |host_id: u32| {
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(host_id)
                .size(1u32)
                .build()
        };
        linux = linux
            .uid_mappings(vec![map(nix::unistd::geteuid().as_raw())?])
            .gid_mappings(vec![map(nix::unistd::getegid().as_raw())?]);
    } else {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?;
        linux = linux.resources(
            LinuxResourcesBuilder::default()
                .devices(vec![deny_all])
                .build()?,
        );
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<LinuxNamespace>, _>>()?;

    let mut linux = linux.namespaces(namespaces).build()?;
    if rootless {
        linux.set_resources(None);
    }
    let mut spec = SpecBuilder::default()
        .version(DEFAULT_OCI_VERSION)
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()?,
        )
        .hostname(DEFAULT_HOSTNAME)
        .mounts(mounts(rootless)?)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    Ok(spec)
}

fn mounts(rootless: bool) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        let builder = MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source);
        if options.is_empty() {
            builder.build()
        } else {
            builder
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
        }
    };
    let devpts: &[&str] = if rootless {
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ]
    } else {
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]
    };
    let sys = if rootless {
        mount(
            "/sys",
            "none",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?
    } else {
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &[])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount("/dev/pts", "devpts", "devpts", devpts)?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        sys,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `runc spec` and `runc spec --rootless` of runc 1.1.5 (Debian 12), run as root.
    const RUNC: &str = include_str!("spec_default/runc-1.1.5-spec.json");
    const RUNC_ROOTLESS: &str = include_str!("spec_default/runc-1.1.5-spec-rootless.json");

    /// The fixture with the documented differences applied.
    fn expected(fixture: &str, rootless: bool) -> Value {
        let mut v: Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(v["hostname"], "runc");
        v["hostname"] = DEFAULT_HOSTNAME.into();
        if rootless {
            v["linux"]["uidMappings"][0]["hostID"] = nix::unistd::geteuid().as_raw().into();
            v["linux"]["gidMappings"][0]["hostID"] = nix::unistd::getegid().as_raw().into();
        }
        v
    }

    /// Compares two JSON documents field by field, reporting the first differing path.
    fn assert_same(path: &str, got: &Value, want: &Value) {
        match (got, want) {
            (Value::Object(g), Value::Object(w)) => {
                let mut keys: Vec<&String> = g.keys().chain(w.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let (gv, wv) = (g.get(k), w.get(k));
                    assert!(
                        gv.is_some(),
                        "{path}.{k}: missing, runc has {}",
                        wv.unwrap()
                    );
                    assert!(wv.is_some(), "{path}.{k}: extra field {}", gv.unwrap());
                    assert_same(&format!("{path}.{k}"), gv.unwrap(), wv.unwrap());
                }
            }
            (Value::Array(g), Value::Array(w)) => {
                // Capability sets are sets: runc sorts them, oci-spec keeps a HashSet.
                let (mut g, mut w) = (g.clone(), w.clone());
                if path.contains(".capabilities.") {
                    g.sort_by_key(|v| v.to_string());
                    w.sort_by_key(|v| v.to_string());
                }
                assert_eq!(g.len(), w.len(), "{path}: {g:?} vs runc {w:?}");
                for (i, (gv, wv)) in g.iter().zip(&w).enumerate() {
                    assert_same(&format!("{path}[{i}]"), gv, wv);
                }
            }
            _ => assert_eq!(got, want, "{path}"),
        }
    }

    #[test]
    fn matches_runc_spec() {
        let got = serde_json::to_value(default_spec(false)).unwrap();
        assert_same("", &got, &expected(RUNC, false));
    }

    #[test]
    fn matches_runc_spec_rootless() {
        let got = serde_json::to_value(default_spec(true)).unwrap();
        assert_same("", &got, &expected(RUNC_ROOTLESS, true));
    }

    #[test]
    fn round_trips() {
        for rootless in [false, true] {
            let spec = default_spec(rootless);
            let json = serde_json::to_string_pretty(&spec).unwrap();
            assert_eq!(serde_json::from_str::<Spec>(&json).unwrap(), spec);
        }
    }
}
