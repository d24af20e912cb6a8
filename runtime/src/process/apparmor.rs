//! AppArmor: `process.apparmorProfile` confines the process from its execve on, as runc does
//! (writing `exec PROFILE` to the task's AppArmor exec attribute). On a host without AppArmor
//! a profile cannot be applied, and the container fails rather than running unconfined.

use std::fs;
use std::path::Path;

use crate::error::{Result, RuntimeError};

const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";

/// Whether the kernel has AppArmor enabled.
pub fn enabled() -> bool {
    fs::read_to_string(ENABLED).is_ok_and(|s| enabled_from(&s))
}

fn enabled_from(parameter: &str) -> bool {
    parameter.trim_start().starts_with('Y')
}

/// Checks, before anything is set up, that a profile asked for can be applied.
pub fn check(profile: Option<&str>) -> Result<()> {
    match profile.filter(|p| !p.is_empty()) {
        Some(p) if !enabled() => Err(RuntimeError::InvalidSpec {
            field: "process.apparmorProfile",
            reason: format!("profile {p:?} asked for, but AppArmor is not enabled on this host"),
        }),
        _ => Ok(()),
    }
}

/// Makes the calling thread change to `profile` at its next execve. Runs in the container,
/// through its /proc (the interface file of Linux 5.8+, else the older shared one).
pub fn apply_on_exec(profile: Option<&str>) -> Result<()> {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    check(Some(profile))?;
    let value = exec_attr_value(profile);
    let new = Path::new("/proc/thread-self/attr/apparmor/exec");
    let path = if new.exists() {
        new
    } else {
        Path::new("/proc/thread-self/attr/exec")
    };
    fs::write(path, value)
        .map_err(|e| RuntimeError::io("apply the AppArmor profile through", path, e))
}

fn exec_attr_value(profile: &str) -> String {
    format!("exec {profile}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_module_parameter() {
        assert!(enabled_from("Y\n"));
        assert!(!enabled_from("N\n"));
        assert!(!enabled_from(""));
    }

    #[test]
    fn exec_attribute_names_the_profile() {
        assert_eq!(exec_attr_value("docker-default"), "exec docker-default");
    }

    #[test]
    fn no_profile_needs_nothing() {
        check(None).unwrap();
        check(Some("")).unwrap();
        apply_on_exec(None).unwrap();
    }

    #[test]
    fn a_profile_fails_without_apparmor() {
        if enabled() {
            eprintln!("skipped: AppArmor is enabled on this host");
            return;
        }
        let err = check(Some("docker-default")).unwrap_err().to_string();
        assert!(
            err.contains("process.apparmorProfile") && err.contains("not enabled"),
            "{err}"
        );
    }
}
