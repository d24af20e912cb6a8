//! Resource limits (`process.rlimits`): one `setrlimit(2)` per entry, in the container's init
//! before `execve`. Limits are per process, so the whole container inherits them.
//!
//! Raising a hard limit needs CAP_SYS_RESOURCE (which some nodes, these included, lack even for
//! root): the error then names the limit, the values asked for and the current ones.
use std::fmt;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("rlimit {name} is given more than once")]
    Duplicate { name: PosixRlimitType },
    #[error("rlimit {name}: soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard {
        name: PosixRlimitType,
        soft: Limit,
        hard: Limit,
    },
    #[error("setrlimit {name} soft={soft} hard={hard} (current soft={current_soft} hard={current_hard}): {source}{hint}")]
    Set {
        name: PosixRlimitType,
        soft: Limit,
        hard: Limit,
        current_soft: Limit,
        current_hard: Limit,
        source: nix::Error,
        hint: &'static str,
    },
}

/// A limit value, shown as `unlimited` for `RLIM_INFINITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u64);

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == libc::RLIM_INFINITY {
            f.write_str("unlimited")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Applies every limit to the calling process. All entries are checked (no duplicates, soft not
/// above hard) before the first is set.
pub fn apply(rlimits: &[PosixRlimit]) -> Result<(), RlimitError> {
    for (i, r) in rlimits.iter().enumerate() {
        if rlimits[..i].iter().any(|o| o.typ() == r.typ()) {
            return Err(RlimitError::Duplicate { name: r.typ() });
        }
        if r.soft() > r.hard() {
            return Err(RlimitError::SoftAboveHard {
                name: r.typ(),
                soft: Limit(r.soft()),
                hard: Limit(r.hard()),
            });
        }
    }
    rlimits.iter().try_for_each(set_one)
}

fn set_one(r: &PosixRlimit) -> Result<(), RlimitError> {
    let resource = resource(r.typ());
    setrlimit(resource, r.soft(), r.hard()).map_err(|source| {
        let (current_soft, current_hard) = getrlimit(resource).unwrap_or((0, 0));
        let hint = if source == nix::Error::EPERM && r.hard() > current_hard {
            " (raising a hard limit needs CAP_SYS_RESOURCE)"
        } else {
            ""
        };
        RlimitError::Set {
            name: r.typ(),
            soft: Limit(r.soft()),
            hard: Limit(r.hard()),
            current_soft: Limit(current_soft),
            current_hard: Limit(current_hard),
            source,
            hint,
        }
    })
}

/// The kernel resource of a spec `RLIMIT_*` type.
pub fn resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HELPER_ENV: &str = "BERTH_RLIMIT_TEST_HELPER";
    const ALL: [&str; 16] = [
        "RLIMIT_CPU",
        "RLIMIT_FSIZE",
        "RLIMIT_DATA",
        "RLIMIT_STACK",
        "RLIMIT_CORE",
        "RLIMIT_RSS",
        "RLIMIT_NPROC",
        "RLIMIT_NOFILE",
        "RLIMIT_MEMLOCK",
        "RLIMIT_AS",
        "RLIMIT_LOCKS",
        "RLIMIT_SIGPENDING",
        "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE",
        "RLIMIT_RTPRIO",
        "RLIMIT_RTTIME",
    ];

    fn rlimits(json: &str) -> Vec<PosixRlimit> {
        serde_json::from_str(json).expect("rlimits JSON")
    }

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

    #[test]
    fn helper_entry() {
        let Ok(case) = std::env::var(HELPER_ENV) else {
            return;
        };
        match case.as_str() {
            "every-name" => {
                // Every limit set to its current values: accepted by the kernel, nothing changes.
                let json: Vec<String> = ALL
                    .iter()
                    .map(|name| {
                        let typ: PosixRlimitType = serde_json::from_value((*name).into()).unwrap();
                        let (soft, hard) = getrlimit(resource(typ)).unwrap();
                        format!(r#"{{"type":"{name}","soft":{soft},"hard":{hard}}}"#)
                    })
                    .collect();
                apply(&rlimits(&format!("[{}]", json.join(",")))).unwrap();
            }
            "lower" => {
                apply(&rlimits(
                    r#"[{"type":"RLIMIT_NOFILE","soft":512,"hard":1024},{"type":"RLIMIT_CORE","soft":0,"hard":0}]"#,
                ))
                .unwrap();
                assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (512, 1024));
                assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), (0, 0));
                // Without CAP_SYS_RESOURCE the hard limit cannot come back up.
                caps::drop(
                    None,
                    caps::CapSet::Effective,
                    caps::Capability::CAP_SYS_RESOURCE,
                )
                .unwrap();
                let err = apply(&rlimits(
                    r#"[{"type":"RLIMIT_NOFILE","soft":512,"hard":4096}]"#,
                ))
                .unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "setrlimit RLIMIT_NOFILE soft=512 hard=4096 (current soft=512 hard=1024): \
                     EPERM: Operation not permitted (raising a hard limit needs CAP_SYS_RESOURCE)"
                );
            }
            other => panic!("unknown helper case {other}"),
        }
    }

    #[test]
    fn every_linux_limit_is_known() {
        assert_helper_ok(spawn_helper("every-name"));
    }

    #[test]
    fn lowers_limits_and_names_refusals() {
        assert_helper_ok(spawn_helper("lower"));
    }

    #[test]
    fn checks_before_setting() {
        let err = apply(&rlimits(
            r#"[{"type":"RLIMIT_NOFILE","soft":2048,"hard":1024}]"#,
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rlimit RLIMIT_NOFILE: soft limit 2048 is above the hard limit 1024"
        );
        let err = apply(&rlimits(
            r#"[{"type":"RLIMIT_CORE","soft":0,"hard":0},{"type":"RLIMIT_CORE","soft":1,"hard":1}]"#,
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rlimit RLIMIT_CORE is given more than once"
        );
        assert_eq!(Limit(libc::RLIM_INFINITY).to_string(), "unlimited");
        // Unknown names are refused while parsing config.json.
        let err = serde_json::from_str::<Vec<PosixRlimit>>(
            r#"[{"type":"RLIMIT_BOGUS","soft":0,"hard":0}]"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("RLIMIT_BOGUS"), "{err}");
    }
}
