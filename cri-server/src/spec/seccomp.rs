//! Seccomp: RuntimeDefault (the built-in profile of `seccomp_default.rs`), Unconfined (none),
//! Localhost (a JSON file in docker's profile format, or the OCI `linux.seccomp` format), and the
//! deprecated `seccomp_profile_path` strings. Rules with `includes`/`excludes` (capabilities,
//! architectures) are resolved against the container's bounding set and this machine.

use std::path::Path;

use cri_api::v1 as cri;
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;

use super::seccomp_default;
use super::SpecError;

/// A profile in docker's format (a superset of the OCI one: `names` or `name`, `archMap`,
/// `includes`/`excludes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default, alias = "defaultErrno")]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<Arch>,
    #[serde(default)]
    pub arch_map: Vec<ArchMap>,
    #[serde(default)]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    pub listener_path: Option<std::path::PathBuf>,
    #[serde(default)]
    pub listener_metadata: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Vec<Arch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Vec<String>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    pub includes: Filter,
    #[serde(default)]
    pub excludes: Filter,
}

/// Conditions of a rule: capabilities in the bounding set, Go architecture names
/// (`amd64`, `arm64`, …). `minKernel` is accepted and taken as met (these nodes run 6.x).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    /// Parsed so that profiles carrying it load; not compared (see above).
    #[serde(default, rename = "minKernel")]
    pub _min_kernel: Option<String>,
}

/// This machine's architecture in Go's names, as profiles write it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The seccomp of a process, or None for unconfined.
pub fn select(
    profile: Option<&cri::SecurityProfile>,
    deprecated_path: &str,
    privileged: bool,
    bounding: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let (kind, localhost) = match profile {
        Some(p) => (p.profile_type(), p.localhost_ref.as_str()),
        None => match deprecated_path {
            "" | "unconfined" => (cri::security_profile::ProfileType::Unconfined, ""),
            "runtime/default" | "docker/default" => {
                (cri::security_profile::ProfileType::RuntimeDefault, "")
            }
            path => match path.strip_prefix("localhost/") {
                Some(file) => (cri::security_profile::ProfileType::Localhost, file),
                None => {
                    return Err(SpecError::Invalid {
                        field: "security_context.seccomp_profile_path",
                        reason: format!("{path:?}: unknown profile"),
                    })
                }
            },
        },
    };
    match kind {
        cri::security_profile::ProfileType::Unconfined => Ok(None),
        cri::security_profile::ProfileType::RuntimeDefault => Ok(Some(resolve(
            &seccomp_default::profile(),
            bounding,
            go_arch(),
        ))),
        cri::security_profile::ProfileType::Localhost => {
            let profile = load(Path::new(localhost))?;
            Ok(Some(resolve(&profile, bounding, go_arch())))
        }
    }
}

/// Reads a Localhost profile (an absolute path on the node).
pub fn load(path: &Path) -> Result<Profile, SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::Invalid {
            field: "security_context.seccomp.localhost_ref",
            reason: format!("{path:?} is not an absolute path"),
        });
    }
    let text = std::fs::read(path).map_err(|source| SpecError::Host {
        field: "security_context.seccomp.localhost_ref",
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| SpecError::SeccompProfile {
        path: path.into(),
        source,
    })
}

/// The OCI seccomp for a process with `bounding` capabilities on `arch`.
pub fn resolve(profile: &Profile, bounding: &Capabilities, arch: &str) -> LinuxSeccomp {
    let has_cap = |name: &str| {
        serde_json::from_value::<Capability>(serde_json::Value::String(name.to_string()))
            .is_ok_and(|c| bounding.contains(&c))
    };
    let mut architectures = profile.architectures.clone();
    if architectures.is_empty() {
        // archMap: the entry of this machine's native architecture, with its sub-architectures.
        let native = native_arch(arch);
        for m in &profile.arch_map {
            if Some(m.architecture) == native {
                architectures.push(m.architecture);
                architectures.extend(m.sub_architectures.iter().copied());
            }
        }
    }
    let syscalls = profile
        .syscalls
        .iter()
        .filter(|r| {
            let included = r.includes.caps.iter().all(|c| has_cap(c))
                && (r.includes.arches.is_empty() || r.includes.arches.iter().any(|a| a == arch));
            let excluded = r.excludes.caps.iter().any(|c| has_cap(c))
                || r.excludes.arches.iter().any(|a| a == arch);
            included && !excluded
        })
        .map(|r| {
            let mut names = r.names.clone();
            if let Some(n) = &r.name {
                names.push(n.clone());
            }
            let mut s = LinuxSyscall::default();
            s.set_names(names);
            s.set_action(r.action);
            s.set_errno_ret(r.errno_ret);
            s.set_args(if r.args.is_empty() {
                None
            } else {
                Some(r.args.clone())
            });
            s
        })
        .collect::<Vec<_>>();
    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    out.set_architectures(if architectures.is_empty() {
        None
    } else {
        Some(architectures)
    });
    out.set_flags(if profile.flags.is_empty() {
        None
    } else {
        Some(profile.flags.clone())
    });
    out.set_listener_path(profile.listener_path.clone());
    out.set_listener_metadata(profile.listener_metadata.clone());
    out.set_syscalls(Some(syscalls));
    out
}

fn native_arch(arch: &str) -> Option<Arch> {
    Some(match arch {
        "amd64" => Arch::ScmpArchX86_64,
        "386" => Arch::ScmpArchX86,
        "arm64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "s390x" => Arch::ScmpArchS390x,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "riscv64" => Arch::ScmpArchRiscv64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::security::DEFAULT_CAPS;

    fn default_caps() -> Capabilities {
        DEFAULT_CAPS.into_iter().collect()
    }

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    fn runtime_default() -> cri::SecurityProfile {
        cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }
    }

    #[test]
    fn runtime_default_profile() {
        let s = select(Some(&runtime_default()), "", false, &default_caps())
            .unwrap()
            .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        let n = names(&s);
        for allowed in ["read", "write", "execve", "clone3", "chroot"] {
            assert!(n.iter().any(|x| x == allowed), "{allowed} missing");
        }
        // Needs CAP_SYS_ADMIN / CAP_SYS_MODULE, which the default set lacks.
        for denied in ["mount", "unshare", "init_module", "reboot"] {
            assert!(!n.iter().any(|x| x == denied), "{denied} allowed");
        }
        if go_arch() == "amd64" {
            assert_eq!(
                s.architectures().clone().unwrap(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
            assert!(n.iter().any(|x| x == "arch_prctl"));
        }
        // With CAP_SYS_ADMIN: mount and friends are allowed.
        let mut admin = default_caps();
        admin.insert(Capability::SysAdmin);
        let s = select(Some(&runtime_default()), "", false, &admin)
            .unwrap()
            .unwrap();
        assert!(names(&s).iter().any(|x| x == "mount"));
    }

    #[test]
    fn unconfined_and_privileged() {
        let unconfined = cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        };
        assert!(select(Some(&unconfined), "", false, &default_caps())
            .unwrap()
            .is_none());
        assert!(select(Some(&runtime_default()), "", true, &default_caps())
            .unwrap()
            .is_none());
        // Nothing set at all: unconfined, as containerd's default unset_seccomp_profile.
        assert!(select(None, "", false, &default_caps()).unwrap().is_none());
        assert!(select(None, "runtime/default", false, &default_caps())
            .unwrap()
            .is_some());
        assert!(select(None, "bogus", false, &default_caps()).is_err());
    }

    #[test]
    fn localhost_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(
            &path,
            r#"{
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 38,
                "archMap": [
                    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
                ],
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                    {"name": "personality", "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                    {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
                     "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                    {"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                     "comment": "docker profiles carry comments"}
                ]
            }"#,
        )
        .unwrap();
        let localhost = cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.to_string_lossy().into_owned(),
        };
        let s = select(Some(&localhost), "", false, &default_caps())
            .unwrap()
            .unwrap();
        assert_eq!(s.default_errno_ret(), Some(38));
        assert_eq!(
            names(&s),
            ["read", "write", "personality", "clone", "kexec_load"]
        );
        let rules = s.syscalls().clone().unwrap();
        assert_eq!(rules[1].args().as_ref().unwrap()[0].value(), 8);
        assert_eq!(rules[3].errno_ret(), Some(1));
        if go_arch() == "amd64" {
            assert_eq!(
                s.architectures().clone().unwrap(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86]
            );
        }
        // The deprecated "localhost/<path>" form reads the same file.
        let old = select(
            None,
            &format!("localhost/{}", path.display()),
            false,
            &default_caps(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(names(&old).len(), 5);
    }

    #[test]
    fn localhost_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{ not json").unwrap();
        let profile = |p: &Path| cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: p.to_string_lossy().into_owned(),
        };
        let err = select(Some(&profile(&bad)), "", false, &default_caps())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("security_context.seccomp localhost"),
            "{err}"
        );
        let err = select(
            Some(&profile(&dir.path().join("missing.json"))),
            "",
            false,
            &default_caps(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("security_context.seccomp.localhost_ref"),
            "{err}"
        );
        let err = select(
            Some(&profile(Path::new("rel.json"))),
            "",
            false,
            &default_caps(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not an absolute path"), "{err}");
    }
}
