//! `berth-runtime features`: what this runtime supports, as the OCI runtime-spec "features"
//! document (`runc features` prints the same shape).
//!
//! True to berth rather than copied from runc: the systemd cgroup driver on cgroup v2 (not a
//! user's systemd), no AppArmor, SELinux or Intel RDT, no CRIU checkpointing; idmapped mounts
//! are supported. The seccomp lists come from
//! the seccomp module (flags probed against the running kernel), the capabilities from the ones
//! berth knows. `archs` lists what libseccomp can put in a filter on this host: its own
//! endianness only (a filter cannot mix them), so big-endian arches are absent on x86_64.
use std::collections::HashMap;

use oci_spec::runtime::{
    ApparmorBuilder, CgroupBuilder, Features, FeaturesBuilder, IDMapBuilder, IntelRdtBuilder,
    LinuxFeatureBuilder, LinuxNamespaceType, MountExtensionsBuilder, SeccompBuilder,
    SelinuxBuilder,
};
use serde_json::Value;

use crate::process::{capabilities, seccomp};

/// The oldest runtime-spec version berth accepts in `config.json`.
pub const OCI_VERSION_MIN: &str = "1.0.0";
/// The newest runtime spec whose configs berth-runtime takes (the properties it does not
/// implement fail `create` by name, see `container::spec_support`).
pub const OCI_VERSION_MAX: &str = "1.3.0";

/// The hooks berth runs.
pub const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The mount options berth understands (besides filesystem-specific data), as runc's.
pub const MOUNT_OPTIONS: [&str; 62] = [
    "acl",
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noacl",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

/// berth's own annotation: its version.
pub const ANNOTATION_VERSION: &str = "io.github.berth.version";
/// The libseccomp version berth is linked with (the key runc uses).
pub const ANNOTATION_LIBSECCOMP_VERSION: &str = "io.github.seccomp.libseccomp.version";
/// berth's own annotation: env values that are not UTF-8, exactly. `process.env` (JSON strings)
/// cannot carry them, so berthd puts a lossy `KEY=value` there (U+FFFD for each invalid byte,
/// what containerd gives runc) and, for a runtime that lists this key in its features, a JSON
/// object `{"KEY": "<base64 of the raw bytes>"}` here; the init's execve gets the bytes
/// (see `process::env_bytes`).
pub const ANNOTATION_ENV_BYTES: &str = "run.berth.env-bytes";

/// The features document as oci-spec's type.
pub fn features() -> Features {
    let mut actions = seccomp::supported_actions();
    actions.sort_by_key(|a| a.to_string());
    let mut operators: Vec<String> = seccomp::supported_operators()
        .iter()
        .map(ToString::to_string)
        .collect();
    operators.sort();
    let mut archs = seccomp::supported_archs();
    archs.sort_by_key(|a| a.to_string());
    let flags = seccomp::filter_flags();
    let known_flags: Vec<String> = flags.iter().map(|(f, _)| f.to_string()).collect();
    let supported_flags: Vec<String> = flags
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(f, _)| f.to_string())
        .collect();

    let mut annotations = HashMap::from([
        (
            ANNOTATION_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (ANNOTATION_ENV_BYTES.to_string(), "1".to_string()),
    ]);
    if let Ok(v) = libseccomp::ScmpVersion::current() {
        annotations.insert(
            ANNOTATION_LIBSECCOMP_VERSION.to_string(),
            format!("{}.{}.{}", v.major, v.minor, v.micro),
        );
    }

    let mut mount_options: Vec<String> = MOUNT_OPTIONS.iter().map(|s| s.to_string()).collect();
    mount_options.sort();

    // Builders only fail on missing required fields; none of these has any.
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::User,
            LinuxNamespaceType::Uts,
        ])
        .capabilities(
            capabilities::known_capabilities()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .cgroup(
            CgroupBuilder::default()
                .v1(true)
                .v2(true)
                // `--systemd-cgroup` (transient units over D-Bus, cgroup v2); not as a user's
                // systemd (rootless).
                .systemd(true)
                .systemd_user(false)
                .rdma(false)
                .build()
                .expect("cgroup features"),
        )
        .seccomp(
            SeccompBuilder::default()
                .enabled(true)
                .actions(actions)
                .operators(operators)
                .archs(archs)
                .known_flags(known_flags)
                .supported_flags(supported_flags)
                .build()
                .expect("seccomp features"),
        )
        .apparmor(
            ApparmorBuilder::default()
                .enabled(true)
                .build()
                .expect("apparmor"),
        )
        .selinux(
            SelinuxBuilder::default()
                .enabled(false)
                .build()
                .expect("selinux"),
        )
        .intel_rdt(
            IntelRdtBuilder::default()
                .enabled(false)
                .build()
                .expect("intelRdt"),
        )
        .mount_extensions(
            MountExtensionsBuilder::default()
                .idmap(
                    IDMapBuilder::default()
                        .enabled(true)
                        .build()
                        .expect("idmap"),
                )
                .build()
                .expect("mount extensions"),
        )
        .build()
        .expect("linux features");

    FeaturesBuilder::default()
        .oci_version_min(OCI_VERSION_MIN)
        .oci_version_max(OCI_VERSION_MAX)
        .hooks(HOOKS.map(String::from).to_vec())
        .mount_options(mount_options)
        .linux(linux)
        .annotations(annotations)
        .build()
        .expect("features")
}

/// The features document as JSON, without the `null`s of fields berth does not report.
pub fn features_json() -> serde_json::Value {
    let mut v = serde_json::to_value(features()).expect("features serialize");
    strip_nulls(&mut v);
    v
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_null(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.values().any(has_null),
            Value::Array(a) => a.iter().any(has_null),
            _ => false,
        }
    }

    #[test]
    fn document_parses_and_has_key_fields() {
        let v = features_json();
        let text = serde_json::to_string_pretty(&v).unwrap();
        let parsed: Features = serde_json::from_str(&text).expect("features parse");
        assert_eq!(parsed.oci_version_min(), OCI_VERSION_MIN);
        assert_eq!(parsed.oci_version_max(), "1.3.0");
        assert!(!has_null(&v), "{text}");

        assert_eq!(v["hooks"].as_array().unwrap().len(), 6);
        let opts = v["mountOptions"].as_array().unwrap();
        assert!(opts.contains(&"rbind".into()) && opts.contains(&"tmpcopyup".into()));
        let linux = &v["linux"];
        assert_eq!(
            linux["namespaces"],
            serde_json::json!(["cgroup", "ipc", "mount", "network", "pid", "user", "uts"])
        );
        let caps = linux["capabilities"].as_array().unwrap();
        assert_eq!(caps.first().unwrap(), "CAP_CHOWN");
        assert!(caps.contains(&"CAP_CHECKPOINT_RESTORE".into()));
        assert_eq!(
            linux["cgroup"],
            serde_json::json!({"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false})
        );
        let sc = &linux["seccomp"];
        assert_eq!(sc["enabled"], true);
        assert!(sc["actions"]
            .as_array()
            .unwrap()
            .contains(&"SCMP_ACT_NOTIFY".into()));
        assert!(sc["archs"]
            .as_array()
            .unwrap()
            .contains(&"SCMP_ARCH_X86_64".into()));
        assert!(sc["knownFlags"]
            .as_array()
            .unwrap()
            .contains(&"SECCOMP_FILTER_FLAG_TSYNC".into()));
        assert!(sc["supportedFlags"]
            .as_array()
            .unwrap()
            .contains(&"SECCOMP_FILTER_FLAG_LOG".into()));
        assert_eq!(linux["apparmor"]["enabled"], true);
        assert_eq!(linux["selinux"]["enabled"], false);
        assert_eq!(linux["intelRdt"]["enabled"], false);
        assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], true);
        assert_eq!(
            v["annotations"][ANNOTATION_VERSION],
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            v["annotations"][ANNOTATION_ENV_BYTES].is_string(),
            "berth-runtime honours {ANNOTATION_ENV_BYTES}"
        );
    }

    /// The lists runc 1.1.5 prints that berth shares verbatim.
    #[test]
    fn shares_runc_vocabulary() {
        let v = features_json();
        let sc = &v["linux"]["seccomp"];
        assert_eq!(
            sc["operators"],
            serde_json::json!([
                "SCMP_CMP_EQ",
                "SCMP_CMP_GE",
                "SCMP_CMP_GT",
                "SCMP_CMP_LE",
                "SCMP_CMP_LT",
                "SCMP_CMP_MASKED_EQ",
                "SCMP_CMP_NE"
            ])
        );
        assert_eq!(
            sc["actions"],
            serde_json::json!([
                "SCMP_ACT_ALLOW",
                "SCMP_ACT_ERRNO",
                "SCMP_ACT_KILL",
                "SCMP_ACT_KILL_PROCESS",
                "SCMP_ACT_KILL_THREAD",
                "SCMP_ACT_LOG",
                "SCMP_ACT_NOTIFY",
                "SCMP_ACT_TRACE",
                "SCMP_ACT_TRAP"
            ])
        );
        assert_eq!(v["mountOptions"].as_array().unwrap().len(), 62);
        assert_eq!(v["linux"]["capabilities"].as_array().unwrap().len(), 41);
    }
}
