//! The Linux security modules a pod or container may ask for — AppArmor and SELinux: applied
//! where berth can, refused with a clear error where it cannot, logged where the request has no
//! meaning on this node (SELinux labels where SELinux is off, as containerd does); never
//! silently dropped.
//!
//! AppArmor as containerd decides it: no profile or `Unconfined` leaves the process
//! unconfined; on a node without AppArmor any other profile is refused; with AppArmor, a
//! `Localhost` profile must be loaded in the kernel and is set as `process.apparmorProfile`
//! (the OCI runtime applies it at exec), and `RuntimeDefault` (privileged: unconfined) is
//! refused until berth ships and loads a default profile of its own.

use std::path::Path;

use cri_api::v1 as cri;

use super::{HostInfo, SpecError};

/// Where AppArmor says whether it is enabled.
const APPARMOR_ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
/// The profiles loaded in the kernel, one `name (mode)` per line.
const APPARMOR_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";
/// Present only where SELinux is enabled.
const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";

/// The deprecated string form's prefix of a Localhost profile.
const LOCALHOST_PREFIX: &str = "localhost/";

/// Whether this host has AppArmor enabled.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string(APPARMOR_ENABLED).is_ok_and(|v| v.trim_start().starts_with('Y'))
}

/// Whether this host has SELinux enabled.
pub fn selinux_enabled() -> bool {
    Path::new(SELINUX_ENFORCE).exists()
}

/// An AppArmor profile asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmor {
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

/// The profile asked for: `apparmor` wins over the deprecated `apparmor_profile` string
/// (`runtime/default`, `unconfined`, `localhost/<name>`); None when neither is set.
pub fn apparmor_request(
    profile: Option<&cri::SecurityProfile>,
    deprecated: &str,
) -> Result<Option<AppArmor>, SpecError> {
    use cri::security_profile::ProfileType;
    if let Some(p) = profile {
        return Ok(Some(match p.profile_type() {
            ProfileType::Unconfined => AppArmor::Unconfined,
            ProfileType::RuntimeDefault => AppArmor::RuntimeDefault,
            ProfileType::Localhost if p.localhost_ref.is_empty() => {
                return Err(SpecError::Invalid {
                    field: "security_context.apparmor",
                    reason: "a Localhost profile without localhost_ref".into(),
                })
            }
            ProfileType::Localhost => AppArmor::Localhost(p.localhost_ref.clone()),
        }));
    }
    Ok(match deprecated {
        "" => None,
        "unconfined" => Some(AppArmor::Unconfined),
        "runtime/default" => Some(AppArmor::RuntimeDefault),
        other => match other.strip_prefix(LOCALHOST_PREFIX) {
            Some(name) if !name.is_empty() => Some(AppArmor::Localhost(name.to_owned())),
            _ => {
                return Err(SpecError::Invalid {
                    field: "security_context.apparmor_profile",
                    reason: format!(
                        "{other:?} is none of runtime/default, unconfined, localhost/<name>"
                    ),
                })
            }
        },
    })
}

/// The `process.apparmorProfile` for `request` on a host where AppArmor is `enabled`, with
/// `loaded` telling whether a profile is loaded in the kernel.
pub fn apparmor_profile(
    request: Option<AppArmor>,
    privileged: bool,
    enabled: bool,
    loaded: impl Fn(&str) -> bool,
) -> Result<Option<String>, SpecError> {
    let Some(request) = request else {
        return Ok(None);
    };
    match request {
        AppArmor::Unconfined => Ok(None),
        _ if !enabled => Err(SpecError::Invalid {
            field: "security_context.apparmor",
            reason: format!("{request:?} asked for, but AppArmor is not enabled on this node"),
        }),
        AppArmor::RuntimeDefault if privileged => Ok(None),
        AppArmor::RuntimeDefault => Err(SpecError::NotYet {
            what: "AppArmor RuntimeDefault (berth has no default AppArmor profile yet)",
        }),
        AppArmor::Localhost(name) if loaded(&name) => Ok(Some(name)),
        AppArmor::Localhost(name) => Err(SpecError::Invalid {
            field: "security_context.apparmor",
            reason: format!("AppArmor profile {name:?} is not loaded on this node"),
        }),
    }
}

/// Whether AppArmor profile `name` is loaded in the kernel.
pub fn apparmor_loaded(name: &str) -> bool {
    std::fs::read_to_string(APPARMOR_PROFILES).is_ok_and(|list| {
        list.lines()
            .any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name)
    })
}

/// The AppArmor profile for a process asked for with `profile`/`deprecated`, on this host.
pub fn apparmor_for(
    profile: Option<&cri::SecurityProfile>,
    deprecated: &str,
    privileged: bool,
    host: &HostInfo,
) -> Result<Option<String>, SpecError> {
    apparmor_profile(
        apparmor_request(profile, deprecated)?,
        privileged,
        host.apparmor,
        apparmor_loaded,
    )
}

/// Whether an SELinux label asks for anything.
fn labels(o: Option<&cri::SeLinuxOption>) -> bool {
    o.is_some_and(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    })
}

/// SELinux labels (`selinux_options`, `Mount.selinux_relabel`) of `what`: refused where SELinux
/// is enabled (berth cannot label processes or files), else ignored with one log line, since
/// they have no meaning there (as containerd does).
pub fn selinux(
    what: &str,
    options: Option<&cri::SeLinuxOption>,
    mounts: &[cri::Mount],
    host: &HostInfo,
) -> Result<(), SpecError> {
    let relabel: Vec<&str> = mounts
        .iter()
        .filter(|m| m.selinux_relabel)
        .map(|m| m.container_path.as_str())
        .collect();
    if !labels(options) && relabel.is_empty() {
        return Ok(());
    }
    if host.selinux {
        return Err(SpecError::NotYet {
            what:
                "SELinux labels (selinux_options, selinux_relabel) on a node with SELinux enabled",
        });
    }
    tracing::info!(
        what,
        label = ?options,
        relabel = ?relabel,
        "SELinux is not enabled on this node: the SELinux label and relabel requests are ignored"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri::security_profile::ProfileType;

    fn profile(t: ProfileType, name: &str) -> cri::SecurityProfile {
        cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: name.into(),
        }
    }

    #[test]
    fn requests_from_both_forms() {
        let req = |p: Option<cri::SecurityProfile>, s: &str| apparmor_request(p.as_ref(), s);
        assert_eq!(req(None, "").unwrap(), None);
        assert_eq!(req(None, "unconfined").unwrap(), Some(AppArmor::Unconfined));
        assert_eq!(
            req(None, "runtime/default").unwrap(),
            Some(AppArmor::RuntimeDefault)
        );
        assert_eq!(
            req(None, "localhost/web").unwrap(),
            Some(AppArmor::Localhost("web".into()))
        );
        // The field wins over the deprecated string.
        assert_eq!(
            req(Some(profile(ProfileType::Localhost, "db")), "unconfined").unwrap(),
            Some(AppArmor::Localhost("db".into()))
        );
        for bad in ["localhost/", "docker-default"] {
            let err = req(None, bad).unwrap_err().to_string();
            assert!(err.contains("apparmor_profile"), "{err}");
        }
        let err = req(Some(profile(ProfileType::Localhost, "")), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("localhost_ref"), "{err}");
    }

    #[test]
    fn profiles_as_containerd_decides() {
        let loaded = |n: &str| n == "web";
        let decide = |r: Option<AppArmor>, privileged, enabled| {
            apparmor_profile(r, privileged, enabled, loaded)
        };
        // Nothing asked, or unconfined: nothing, whether AppArmor is on or off.
        for enabled in [false, true] {
            assert_eq!(decide(None, false, enabled).unwrap(), None);
            assert_eq!(
                decide(Some(AppArmor::Unconfined), false, enabled).unwrap(),
                None
            );
        }
        // AppArmor off: any profile is refused, naming the cause.
        for r in [AppArmor::RuntimeDefault, AppArmor::Localhost("web".into())] {
            let err = decide(Some(r), false, false).unwrap_err().to_string();
            assert!(err.contains("AppArmor is not enabled"), "{err}");
        }
        // AppArmor on: a loaded Localhost profile is applied, one not loaded refused.
        assert_eq!(
            decide(Some(AppArmor::Localhost("web".into())), false, true).unwrap(),
            Some("web".into())
        );
        let err = decide(Some(AppArmor::Localhost("db".into())), false, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"db\" is not loaded"), "{err}");
        // RuntimeDefault: unconfined when privileged, else not yet.
        assert_eq!(
            decide(Some(AppArmor::RuntimeDefault), true, true).unwrap(),
            None
        );
        assert!(matches!(
            decide(Some(AppArmor::RuntimeDefault), false, true),
            Err(SpecError::NotYet { .. })
        ));
    }

    #[test]
    fn selinux_is_ignored_where_off_and_refused_where_on() {
        let label = cri::SeLinuxOption {
            r#type: "spc_t".into(),
            ..Default::default()
        };
        let relabeled = cri::Mount {
            container_path: "/data".into(),
            selinux_relabel: true,
            ..Default::default()
        };
        let off = HostInfo::default();
        let on = HostInfo {
            selinux: true,
            ..HostInfo::default()
        };
        assert!(selinux("c", Some(&label), &[], &off).is_ok());
        assert!(selinux("c", None, std::slice::from_ref(&relabeled), &off).is_ok());
        assert!(selinux("c", Some(&label), &[], &on).is_err());
        assert!(selinux("c", None, &[relabeled], &on).is_err());
        // An empty label asks for nothing, even where SELinux is on.
        assert!(selinux("c", Some(&cri::SeLinuxOption::default()), &[], &on).is_ok());
    }
}
