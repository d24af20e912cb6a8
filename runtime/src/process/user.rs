//! The user switch (`process.user`), umask, the working directory check (CVE-2024-21626) and
//! the path lookup of the executable inside the container.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::User;

use crate::error::{Result, RuntimeError};

/// Whether setgroups(2) is allowed (it is not in a user namespace whose setgroups is "deny").
fn setgroups_allowed() -> bool {
    fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// Switches to the spec's uid, gid and additional gids. Capabilities survive the switch only
/// with keep-caps set by the caller.
pub fn switch(user: &User) -> Result<()> {
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());
    let mut groups: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    groups.dedup();
    if setgroups_allowed() {
        setgroups(&groups).map_err(|e| RuntimeError::sys(format!("setgroups {groups:?}"), e))?;
    } else if !groups.is_empty() {
        return Err(RuntimeError::InvalidSpec {
            field: "process.user.additionalGids",
            reason: "setgroups is denied in this user namespace".into(),
        });
    }
    setresgid(gid, gid, gid).map_err(|e| RuntimeError::sys(format!("setgid {gid}"), e))?;
    setresuid(uid, uid, uid).map_err(|e| RuntimeError::sys(format!("setuid {uid}"), e))?;
    Ok(())
}

pub fn set_umask(user: &User) {
    umask(Mode::from_bits_truncate(user.umask().unwrap_or(0o022)));
}

/// Changes to `cwd` and checks that the result is inside the container's root: a working
/// directory reached through a leaked host descriptor (CVE-2024-21626) has no path from the
/// root, so getcwd fails or does not start with `/`.
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd)
        .map_err(|e| RuntimeError::sys(format!("chdir to cwd {}", cwd.display()), e))?;
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() && !p.to_string_lossy().starts_with("(unreachable)") => Ok(()),
        _ => Err(RuntimeError::InvalidSpec {
            field: "process.cwd",
            reason: format!("{} is outside the container's root", cwd.display()),
        }),
    }
}

/// The home directory of `uid` from the container's /etc/passwd.
pub fn home_dir(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok()? == uid).then(|| f[5].to_owned())
    })
}

/// Resolves `arg0` like execvp, in the container's filesystem, so that "executable not found"
/// is reported by `create` rather than after `start`.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<CString> {
    let not_found = |reason: &str| RuntimeError::InvalidSpec {
        field: "process.args",
        reason: format!("exec: {arg0:?}: {reason}"),
    };
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if arg0.is_empty() {
        return Err(not_found("empty command"));
    }
    if arg0.contains('/') {
        return if is_exec(Path::new(arg0)) {
            Ok(CString::new(arg0).map_err(|_| not_found("NUL in path"))?)
        } else {
            Err(not_found("no such executable file"))
        };
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = PathBuf::from(dir).join(arg0);
        if is_exec(&candidate) {
            return CString::new(candidate.into_os_string().into_encoded_bytes())
                .map_err(|_| not_found("NUL in path"));
        }
    }
    Err(not_found("executable file not found in $PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_on_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(find_executable("sh", &env)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("/sh"));
        assert!(find_executable("/bin/sh", &env).is_ok());
        let err = find_executable("no-such-binary-xyz", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
        assert!(find_executable("/etc/passwd", &env).is_err());
    }
}
