//! Capabilities (containerd's default set, add/drop with "ALL", ambient), privileged
//! containers, and masked / read-only paths.

use cri_api::v1 as cri;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::SpecError;

/// containerd's default capabilities (its default spec's bounding/effective/permitted sets).
pub const DEFAULT_CAPS: [Capability; 14] = [
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
];

/// Every capability Linux 6.x knows (0 … 40), in number order; "ALL" and privileged mean those
/// of them berthd holds ([`super::HostInfo::held_caps`]).
pub const ALL_CAPS: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// The capabilities whose bits are set in `mask` (a CapEff-style mask).
pub fn caps_in_mask(mask: u64) -> Capabilities {
    ALL_CAPS
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, cap)| cap)
        .collect()
}

/// containerd's default masked paths.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A CRI capability name ("NET_ADMIN", "CAP_NET_ADMIN", any case).
fn parse_cap(name: &str, field: &'static str) -> Result<Capability, SpecError> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        SpecError::Invalid {
            field,
            reason: format!("{name:?} is not a capability"),
        }
    })
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// The process capabilities: privileged → every capability berthd holds (`held`) in every set
/// but ambient (containerd's `WithPrivileged`); otherwise the default set, "ALL" (again what
/// berthd holds) added or dropped first, then the individual adds and drops on
/// bounding/effective/permitted. add_ambient_capabilities go into every set, ambient and
/// inheritable included (the kernel needs both).
pub fn capabilities(
    caps: Option<&cri::Capability>,
    privileged: bool,
    held: &Capabilities,
) -> Result<LinuxCapabilities, SpecError> {
    let mut set: Capabilities = if privileged {
        held.clone()
    } else {
        DEFAULT_CAPS.into_iter().collect()
    };
    let mut ambient = Capabilities::new();
    if let Some(caps) = caps {
        if !privileged {
            if caps.add_capabilities.iter().any(|c| is_all(c)) {
                set = held.clone();
            }
            if caps.drop_capabilities.iter().any(|c| is_all(c)) {
                set.clear();
            }
            for c in caps.add_capabilities.iter().filter(|c| !is_all(c)) {
                set.insert(parse_cap(
                    c,
                    "security_context.capabilities.add_capabilities",
                )?);
            }
            for c in caps.drop_capabilities.iter().filter(|c| !is_all(c)) {
                set.remove(&parse_cap(
                    c,
                    "security_context.capabilities.drop_capabilities",
                )?);
            }
        }
        for c in &caps.add_ambient_capabilities {
            let cap = parse_cap(c, "security_context.capabilities.add_ambient_capabilities")?;
            set.insert(cap);
            ambient.insert(cap);
        }
    }
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(set.clone()));
    out.set_effective(Some(set.clone()));
    out.set_permitted(Some(set));
    if ambient.is_empty() {
        out.set_inheritable(None);
        out.set_ambient(None);
    } else {
        out.set_inheritable(Some(ambient.clone()));
        out.set_ambient(Some(ambient));
    }
    Ok(out)
}

/// Masked and read-only paths: none when privileged; the security context's lists when it has
/// any (kubelet sends the defaults, or empty lists for procMount: Unmasked, which then mean
/// none); containerd's defaults when the container has no security context at all.
pub fn paths(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    privileged: bool,
) -> (Vec<String>, Vec<String>) {
    if privileged {
        return (Vec::new(), Vec::new());
    }
    match sc {
        Some(sc) => (sc.masked_paths.clone(), sc.readonly_paths.clone()),
        None => (
            DEFAULT_MASKED_PATHS.map(String::from).to_vec(),
            DEFAULT_READONLY_PATHS.map(String::from).to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str], ambient: &[&str]) -> cri::Capability {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        cri::Capability {
            add_capabilities: v(add),
            drop_capabilities: v(drop),
            add_ambient_capabilities: v(ambient),
        }
    }

    fn all() -> Capabilities {
        ALL_CAPS.into_iter().collect()
    }

    fn bounding(c: &LinuxCapabilities) -> Capabilities {
        c.bounding().clone().unwrap()
    }

    #[test]
    fn default_set() {
        let c = capabilities(None, false, &all()).unwrap();
        assert_eq!(bounding(&c), DEFAULT_CAPS.into_iter().collect());
        assert_eq!(c.effective(), c.bounding());
        assert_eq!(c.permitted(), c.bounding());
        assert!(c.inheritable().is_none() && c.ambient().is_none());
    }

    #[test]
    fn add_and_drop() {
        let c = capabilities(
            Some(&caps(
                &["NET_ADMIN", "cap_sys_time"],
                &["CHOWN", "KILL"],
                &[],
            )),
            false,
            &all(),
        )
        .unwrap();
        let b = bounding(&c);
        assert!(b.contains(&Capability::NetAdmin) && b.contains(&Capability::SysTime));
        assert!(!b.contains(&Capability::Chown) && !b.contains(&Capability::Kill));
        assert_eq!(b.len(), DEFAULT_CAPS.len());
        let err = capabilities(Some(&caps(&["NOPE"], &[], &[])), false, &all())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "security_context.capabilities.add_capabilities: \"NOPE\" is not a capability"
        );
    }

    #[test]
    fn all_keyword() {
        let c = capabilities(Some(&caps(&["ALL"], &["CHOWN"], &[])), false, &all()).unwrap();
        assert_eq!(bounding(&c).len(), ALL_CAPS.len() - 1);
        assert!(!bounding(&c).contains(&Capability::Chown));
        let c = capabilities(
            Some(&caps(&["NET_BIND_SERVICE"], &["all"], &[])),
            false,
            &all(),
        )
        .unwrap();
        assert_eq!(
            bounding(&c),
            [Capability::NetBindService].into_iter().collect()
        );
        let c = capabilities(Some(&caps(&[], &["ALL"], &[])), false, &all()).unwrap();
        assert!(bounding(&c).is_empty());
    }

    #[test]
    fn ambient() {
        let c = capabilities(Some(&caps(&[], &["ALL"], &["NET_ADMIN"])), false, &all()).unwrap();
        let one: Capabilities = [Capability::NetAdmin].into_iter().collect();
        assert_eq!(c.ambient().as_ref(), Some(&one));
        assert_eq!(c.inheritable().as_ref(), Some(&one));
        assert_eq!(c.permitted().as_ref(), Some(&one));
    }

    #[test]
    fn privileged_gets_everything() {
        let c = capabilities(Some(&caps(&[], &["ALL"], &[])), true, &all()).unwrap();
        assert_eq!(bounding(&c).len(), ALL_CAPS.len());
        assert_eq!(paths(None, true), (vec![], vec![]));
    }

    #[test]
    fn privileged_and_all_get_what_berthd_holds() {
        // A host without CAP_SYS_RESOURCE (these VMs, nested and kind nodes): asking for it
        // would fail the create with "capset: Operation not permitted".
        let mut held = all();
        held.remove(&Capability::SysResource);
        for c in [
            capabilities(None, true, &held).unwrap(),
            capabilities(Some(&caps(&["ALL"], &[], &[])), false, &held).unwrap(),
        ] {
            assert_eq!(bounding(&c), held);
            assert_eq!(c.effective().as_ref(), Some(&held));
            assert_eq!(c.permitted().as_ref(), Some(&held));
        }
    }

    #[test]
    fn caps_from_a_mask() {
        assert_eq!(caps_in_mask(0), Capabilities::new());
        let held = caps_in_mask(0x1ff_ffff_ffff & !(1 << 24));
        assert_eq!(held.len(), ALL_CAPS.len() - 1);
        assert!(!held.contains(&Capability::SysResource));
        assert!(held.contains(&Capability::CheckpointRestore));
    }

    #[test]
    fn masked_paths() {
        let (m, r) = paths(None, false);
        assert_eq!(m, DEFAULT_MASKED_PATHS);
        assert_eq!(r, DEFAULT_READONLY_PATHS);
        let sc = cri::LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(Some(&sc), false),
            (vec!["/proc/kcore".into()], vec!["/proc/sys".into()])
        );
        // Unmasked procMount: empty lists mean none.
        let sc = cri::LinuxContainerSecurityContext::default();
        assert_eq!(paths(Some(&sc), false), (vec![], vec![]));
    }
}
