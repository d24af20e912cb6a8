//! Masked and readonly paths (`linux.maskedPaths`, `linux.readonlyPaths`), applied after
//! pivot_root like runc: a masked directory is covered by an empty read-only tmpfs, a masked
//! file by /dev/null; a readonly path is bound onto itself and remounted read-only. Paths the
//! container does not have are skipped.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, SFlag};

use super::mounts;
use super::secure_path::{proc_fd_path, RootDir};
use crate::error::{Result, RuntimeError};

fn resolve_existing(root: &RootDir, path: &Path) -> Result<Option<std::os::fd::OwnedFd>> {
    match root.resolve_follow(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(RuntimeError::Sys {
            source: Errno::ENOENT,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn mask(root: &RootDir, paths: &[String]) -> Result<()> {
    for p in paths {
        let Some(fd) = resolve_existing(root, Path::new(p))? else {
            continue;
        };
        let st = fstat(&fd).map_err(|e| RuntimeError::sys(format!("stat masked path {p}"), e))?;
        let target = proc_fd_path(&fd);
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let result = if is_dir {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        result.map_err(|e| RuntimeError::sys(format!("mask {p}"), e))?;
    }
    Ok(())
}

pub fn make_readonly(root: &RootDir, paths: &[String]) -> Result<()> {
    for p in paths {
        let Some(fd) = resolve_existing(root, Path::new(p))? else {
            continue;
        };
        let target = proc_fd_path(&fd);
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys(format!("bind readonly path {p}"), e))?;
        let mounted = root.resolve_follow(Path::new(p))?;
        let target = proc_fd_path(&mounted);
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        let locked = mounts::security_flags_of(&target);
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            flags | locked,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys(format!("remount {p} read-only"), e))?;
    }
    Ok(())
}
