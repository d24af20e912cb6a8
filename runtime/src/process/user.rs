//! The user switch (`process.user`), umask, the working directory check (CVE-2024-21626) and
//! the path lookup of the executable inside the container.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fstat, umask, Mode};
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
/// root, so getcwd fails or does not start with `/`. A seccomp filter loaded before (it must
/// load while the process is still root) may deny getcwd; then the check walks up from the
/// working directory instead.
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd)
        .map_err(|e| RuntimeError::sys(format!("chdir to cwd {}", cwd.display()), e))?;
    let inside = match nix::unistd::getcwd() {
        Ok(p) => p.is_absolute() && !p.to_string_lossy().starts_with("(unreachable)"),
        Err(Errno::EPERM | Errno::EACCES | Errno::ENOSYS) => cwd_reaches_root()
            .map_err(|e| RuntimeError::sys(format!("check cwd {}", cwd.display()), e))?,
        Err(_) => false,
    };
    if inside {
        Ok(())
    } else {
        Err(RuntimeError::InvalidSpec {
            field: "process.cwd",
            reason: format!("{} is outside the container's root", cwd.display()),
        })
    }
}

/// Whether walking `..` up from the working directory reaches the process's root directory
/// (same device and inode as `/`). From a directory outside the root, `..` climbs to the top of
/// some other tree, whose `..` is itself, without passing the root. Bounded in depth.
pub fn cwd_reaches_root() -> nix::Result<bool> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let id = |st: nix::sys::stat::FileStat| (st.st_dev, st.st_ino);
    let root = id(nix::sys::stat::stat("/")?);
    let mut dir = open(".", dir_flags, Mode::empty())?;
    for _ in 0..4096 {
        let here = id(fstat(&dir)?);
        if here == root {
            return Ok(true);
        }
        let parent = openat(&dir, "..", dir_flags, Mode::empty())?;
        if id(fstat(&parent)?) == here {
            return Ok(false);
        }
        dir = parent;
    }
    Ok(false)
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
    fn cwd_walk_reaches_the_root_from_inside() {
        // The test process's cwd (the crate directory) is inside its root.
        assert!(cwd_reaches_root().unwrap());
    }

    /// After chroot into a directory while the working directory stays outside it (what a
    /// leaked host descriptor as cwd amounts to), the walk does not reach the root. Needs root
    /// (chroot); runs in a forked child so that the test process keeps its root.
    #[test]
    fn cwd_walk_does_not_reach_the_root_from_outside() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chroot needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let new_root = CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the child makes raw system calls only (chroot, open, openat, fstat, stat on
        // a short path, which nix copies to a stack buffer) and ends with _exit; it touches no
        // lock or allocator state another thread of the test harness might hold.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: chroot takes a live NUL-terminated path.
                let code = if unsafe { libc::chroot(new_root.as_ptr()) } != 0 {
                    2
                } else {
                    match cwd_reaches_root() {
                        Ok(false) => 0,
                        Ok(true) => 1,
                        Err(_) => 3,
                    }
                };
                crate::sys::exit_child(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "1: reached the root from outside, 2: chroot failed, 3: walk failed"
                );
            }
        }
    }

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
