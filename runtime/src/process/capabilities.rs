//! Capabilities: the spec's five sets, applied the way runc does.
//!
//! Order in the container's init (runc's `finalizeNamespace`): [`drop_bounding`] while still
//! privileged, then keep-caps + the user switch, then [`apply`] (inheritable, effective,
//! permitted, and only then ambient, whose members must already be permitted and inheritable).
//! A set absent from the spec is empty, as in runc.
//!
//! Unknown names are refused: `oci-spec` rejects them while parsing `config.json` (naming them),
//! and [`parse_capability`] does the same for names from elsewhere (CRI, CLI). Capabilities the
//! running kernel does not know (newer than it) are skipped with a warning, as runc does.
use std::collections::HashSet;
use std::str::FromStr;

use caps::errors::CapsError as LibError;
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, Capability as SpecCapability, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {name:?}")]
    Unknown { name: String },
    #[error("drop {cap} from the bounding set: {source}")]
    DropBounding { cap: Capability, source: LibError },
    #[error("set the {set} capabilities to [{caps}]: {source}")]
    Set {
        set: &'static str,
        caps: String,
        source: LibError,
    },
    #[error("clear the ambient capabilities: {source}")]
    ClearAmbient { source: LibError },
    #[error("raise ambient capability {cap} (it must be permitted and inheritable): {source}")]
    RaiseAmbient { cap: Capability, source: LibError },
}

/// Parses a capability name (`CAP_SYS_ADMIN`, or `SYS_ADMIN` / `sys_admin` as Kubernetes writes).
pub fn parse_capability(name: &str) -> Result<Capability, CapsError> {
    Capability::from_str(&caps::to_canonical(name)).map_err(|_| CapsError::Unknown {
        name: name.to_string(),
    })
}

/// Every capability berth knows, in kernel order (for `features`).
pub fn known_capabilities() -> Vec<Capability> {
    let mut all: Vec<Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all
}

/// The `caps` crate's capability for one of the spec's.
pub fn from_spec(cap: SpecCapability) -> Result<Capability, CapsError> {
    // oci-spec displays `SysAdmin` as `SYS_ADMIN`.
    parse_capability(&cap.to_string())
}

/// Drops every capability the kernel knows that is not in `caps.bounding` from the bounding set
/// of the calling thread (needs CAP_SETPCAP).
pub fn drop_bounding(caps: &LinuxCapabilities) -> Result<(), CapsError> {
    let keep = resolve(caps.bounding().as_ref(), "bounding")?;
    let mut all: Vec<Capability> = caps::runtime::thread_all_supported().into_iter().collect();
    all.sort_by_key(|c| c.index());
    for cap in all.into_iter().filter(|c| !keep.contains(c)) {
        caps::drop(None, CapSet::Bounding, cap)
            .map_err(|source| CapsError::DropBounding { cap, source })?;
    }
    Ok(())
}

/// Sets the inheritable, effective, permitted and ambient sets of the calling thread (after the
/// user switch). The effective set must be a subset of the permitted one, and neither may grow
/// beyond what the thread holds.
pub fn apply(caps: &LinuxCapabilities) -> Result<(), CapsError> {
    let inheritable = resolve(caps.inheritable().as_ref(), "inheritable")?;
    let effective = resolve(caps.effective().as_ref(), "effective")?;
    let permitted = resolve(caps.permitted().as_ref(), "permitted")?;
    let ambient = resolve(caps.ambient().as_ref(), "ambient")?;
    // Inheritable first, while CAP_SETPCAP is still effective; effective before permitted, since
    // the kernel refuses an effective set that is not a subset of the permitted one.
    set(CapSet::Inheritable, "inheritable", &inheritable)?;
    set(CapSet::Effective, "effective", &effective)?;
    set(CapSet::Permitted, "permitted", &permitted)?;
    if caps::runtime::ambient_set_supported().is_err() {
        if !ambient.is_empty() {
            tracing::warn!("ambient capabilities are not supported by this kernel, skipped");
        }
        return Ok(());
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| CapsError::ClearAmbient { source })?;
    for cap in sorted(&ambient) {
        // As runc: an ambient capability that is not also permitted and inheritable cannot be
        // raised; that is a warning, not a failure (runc's own default spec asks for ambient
        // capabilities without inheritable ones).
        if let Err(source) = caps::raise(None, CapSet::Ambient, cap) {
            tracing::debug!(error = %CapsError::RaiseAmbient { cap, source }, "ambient capability skipped");
        }
    }
    Ok(())
}

fn set(set: CapSet, name: &'static str, value: &CapsHashSet) -> Result<(), CapsError> {
    caps::set(None, set, value).map_err(|source| CapsError::Set {
        set: name,
        caps: sorted(value)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        source,
    })
}

/// The spec's set as `caps` capabilities, minus those the running kernel does not know.
fn resolve(set: Option<&Capabilities>, name: &'static str) -> Result<CapsHashSet, CapsError> {
    let supported = caps::runtime::thread_all_supported();
    let mut out = HashSet::new();
    for &cap in set.into_iter().flatten() {
        let cap = from_spec(cap)?;
        if supported.contains(&cap) {
            out.insert(cap);
        } else {
            tracing::warn!(capability = %cap, set = name, "capability unknown to the running kernel, skipped");
        }
    }
    Ok(out)
}

fn sorted(set: &CapsHashSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = set.iter().copied().collect();
    v.sort_by_key(|c| c.index());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HELPER_ENV: &str = "BERTH_CAPS_TEST_HELPER";

    fn spawn_helper(case: &str) -> std::process::Output {
        let module = module_path!().split_once("::").expect("crate::module").1;
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                &format!("{module}::helper_entry"),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, case)
            .output()
            .expect("run helper")
    }

    fn assert_helper_ok(out: std::process::Output) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "helper failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn privileged() -> bool {
        let ok = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED (not counted as a real pass): needs CAP_SETPCAP (run as root)");
        }
        ok
    }

    /// The thread's capability sets as /proc shows them: (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
    fn proc_caps() -> [u64; 5] {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"].map(field)
    }

    fn spec(json: &str) -> LinuxCapabilities {
        serde_json::from_str(json).expect("capabilities JSON")
    }

    #[test]
    fn helper_entry() {
        let Ok(case) = std::env::var(HELPER_ENV) else {
            return;
        };
        match case.as_str() {
            "runc-default" => {
                let caps = LinuxCapabilities::default(); // AUDIT_WRITE, KILL, NET_BIND_SERVICE
                drop_bounding(&caps).unwrap();
                apply(&caps).unwrap();
                let mask = [
                    Capability::CAP_AUDIT_WRITE,
                    Capability::CAP_KILL,
                    Capability::CAP_NET_BIND_SERVICE,
                ]
                .iter()
                .fold(0, |m, c| m | c.bitmask());
                assert_eq!(proc_caps(), [mask; 5], "Inh, Prm, Eff, Bnd, Amb");
            }
            "split" => {
                let caps = spec(
                    r#"{"bounding":["CAP_CHOWN","CAP_KILL","CAP_SETUID"],"permitted":["CAP_CHOWN","CAP_KILL"],
                        "effective":["CAP_KILL"],"inheritable":["CAP_CHOWN"]}"#,
                );
                drop_bounding(&caps).unwrap();
                apply(&caps).unwrap();
                let [inh, prm, eff, bnd, amb] = proc_caps();
                let m = |c: &[Capability]| c.iter().fold(0, |m, c| m | c.bitmask());
                use Capability::*;
                assert_eq!(bnd, m(&[CAP_CHOWN, CAP_KILL, CAP_SETUID]));
                assert_eq!(prm, m(&[CAP_CHOWN, CAP_KILL]));
                assert_eq!(eff, m(&[CAP_KILL]));
                assert_eq!(inh, m(&[CAP_CHOWN]));
                assert_eq!(amb, 0);
            }
            "ambient-not-inheritable" => {
                let caps = spec(
                    r#"{"bounding":["CAP_KILL"],"permitted":["CAP_KILL"],"effective":["CAP_KILL"],"ambient":["CAP_KILL"]}"#,
                );
                drop_bounding(&caps).unwrap();
                // Skipped with a warning, as runc does; the other sets are still applied.
                apply(&caps).unwrap();
                let [inh, prm, eff, _, amb] = proc_caps();
                let kill = Capability::CAP_KILL.bitmask();
                assert_eq!((inh, prm, eff, amb), (0, kill, kill, 0));
            }
            other => panic!("unknown helper case {other}"),
        }
    }

    #[test]
    fn drops_to_runc_default_set() {
        if privileged() {
            assert_helper_ok(spawn_helper("runc-default"));
        }
    }

    #[test]
    fn sets_differ_per_kind() {
        if privileged() {
            assert_helper_ok(spawn_helper("split"));
        }
    }

    #[test]
    fn ambient_without_inheritable_is_skipped() {
        if privileged() {
            assert_helper_ok(spawn_helper("ambient-not-inheritable"));
        }
    }

    #[test]
    fn every_spec_capability_maps() {
        for cap in known_capabilities() {
            let spec: SpecCapability = serde_json::from_value(cap.to_string().into()).unwrap();
            assert_eq!(from_spec(spec).unwrap(), cap);
        }
        assert_eq!(known_capabilities().len(), 41);
        assert_eq!(known_capabilities()[0], Capability::CAP_CHOWN);
    }

    #[test]
    fn parses_names() {
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN").unwrap(),
            Capability::CAP_SYS_ADMIN
        );
        assert_eq!(
            parse_capability("net_raw").unwrap(),
            Capability::CAP_NET_RAW
        );
        let err = parse_capability("CAP_FLY").unwrap_err();
        assert_eq!(err.to_string(), r#"unknown capability "CAP_FLY""#);
        // In config.json, oci-spec refuses unknown names and names them.
        let err =
            serde_json::from_str::<LinuxCapabilities>(r#"{"bounding":["CAP_FLY"]}"#).unwrap_err();
        assert!(err.to_string().contains("CAP_FLY"), "{err}");
    }
}
