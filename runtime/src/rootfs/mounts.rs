//! The spec's `mounts`, performed inside the container's mount namespace before pivot_root.
//! Targets are resolved inside the rootfs ([`RootDir`]) and mounted through their
//! `/proc/self/fd/N` magic link, so the image cannot redirect a mount outside.

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;

use super::mount_options::{self, MountOptions};
use super::secure_path::{proc_fd_path, Create, RootDir};
use crate::error::{Result, RuntimeError};
use crate::sys::{self, MountAttr, AT_EMPTY_PATH, AT_RECURSIVE};

/// What mounting needs to know besides the mount itself.
#[derive(Debug, Default)]
pub struct MountEnv {
    /// The bundle directory: relative bind sources are relative to it.
    pub bundle: PathBuf,
    /// The container's cgroup directories on the host, one per hierarchy, and the cgroup path
    /// below the hierarchy roots (to tell the hierarchy's mount point).
    pub cgroup_dirs: Vec<PathBuf>,
    pub cgroup_path: PathBuf,
    /// Whether the container has its own cgroup namespace.
    pub cgroupns: bool,
    /// Detached idmapped mounts prepared by the runtime, by index in `mounts`.
    pub idmapped: HashMap<usize, OwnedFd>,
}

pub fn mount_all(root: &RootDir, mounts: &[Mount], env: &mut MountEnv) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        mount_one(root, i, m, env).map_err(|e| match e {
            RuntimeError::Sys { op, source } => RuntimeError::Sys {
                op: format!("mount {}: {op}", m.destination().display()),
                source,
            },
            other => other,
        })?;
    }
    Ok(())
}

fn mount_one(root: &RootDir, index: usize, m: &Mount, env: &mut MountEnv) -> Result<()> {
    let opts = mount_options::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let dest = m.destination();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroups(root, dest, &opts, env);
    }
    if opts.is_bind() || typ == "bind" {
        let source = bind_source(m, env)?;
        let is_dir = fs::metadata(&source)
            .map_err(|e| RuntimeError::io("stat bind mount source", &source, e))?
            .is_dir();
        let target =
            root.resolve_or_create(dest, if is_dir { Create::Dir } else { Create::File })?;
        if let Some(tree) = env.idmapped.remove(&index) {
            sys::move_mount(&tree, &target)
                .map_err(|e| RuntimeError::sys("attach the idmapped mount", e))?;
        } else {
            let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
            mount(
                Some(&source),
                &proc_fd_path(&target),
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::sys(format!("bind {}", source.display()), e))?;
        }
        let mounted = root.resolve_follow(dest)?;
        if !opts.remount_flags().is_empty() {
            remount_bind(&mounted, &opts)?;
        }
        return finish(&mounted, &opts);
    }
    let target = root.resolve_or_create(dest, Create::Dir)?;
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    let result = mount(
        Some(&source),
        &proc_fd_path(&target),
        Some(typ),
        opts.flags,
        data,
    );
    match result {
        Ok(()) => {}
        // sysfs needs a network namespace owned by the container's user namespace, and mqueue
        // an IPC one; like runc, fall back to binding the host's.
        Err(Errno::EPERM) if typ == "sysfs" || typ == "mqueue" => {
            let host = if typ == "sysfs" {
                "/sys"
            } else {
                "/dev/mqueue"
            };
            mount(
                Some(host),
                &proc_fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::sys(format!("bind {host} (fallback for {typ})"), e))?;
            let mounted = root.resolve_follow(dest)?;
            remount_bind(&mounted, &opts)?;
        }
        Err(e) => {
            return Err(RuntimeError::sys(
                format!("{typ} from {}", source.display()),
                e,
            ))
        }
    }
    let mounted = root.resolve_follow(dest)?;
    if opts.tmpcopyup {
        // `target` was opened before the mount, so it still names the covered directory.
        copy_up(&proc_fd_path(&target), &proc_fd_path(&mounted))?;
    }
    finish(&mounted, &opts)
}

fn bind_source(m: &Mount, env: &MountEnv) -> Result<PathBuf> {
    let source = m
        .source()
        .clone()
        .ok_or_else(|| RuntimeError::InvalidSpec {
            field: "mounts[].source",
            reason: format!("bind mount on {} has no source", m.destination().display()),
        })?;
    Ok(if source.is_absolute() {
        source
    } else {
        env.bundle.join(source)
    })
}

/// Applies the flags a bind mount cannot take at creation (ro, nosuid, …). In a user namespace
/// the kernel refuses to drop flags the original mount had locked (nodev, nosuid, noexec, ro,
/// atime), so they are carried over, as runc does.
fn remount_bind(target: &OwnedFd, opts: &MountOptions) -> Result<()> {
    let path = proc_fd_path(target);
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | opts.remount_flags();
    match mount(None::<&str>, &path, None::<&str>, flags, None::<&str>) {
        Err(Errno::EPERM) => {
            let locked = statvfs(&path)
                .map(|st| locked_flags(st.flags()))
                .map_err(|e| RuntimeError::sys("statvfs for a remount", e))?;
            mount(
                None::<&str>,
                &path,
                None::<&str>,
                flags | locked,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::sys("remount with the flags requested", e))
        }
        other => other.map_err(|e| RuntimeError::sys("remount with the flags requested", e)),
    }
}

/// nosuid/nodev/noexec of the mount at `path`, which a read-only remount must keep (in a user
/// namespace the kernel refuses to drop them); none if it cannot be read.
pub(super) fn security_flags_of(path: &(impl nix::NixPath + ?Sized)) -> MsFlags {
    statvfs(path)
        .map(|st| {
            locked_flags(st.flags()) & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)
        })
        .unwrap_or(MsFlags::empty())
}

fn locked_flags(st: FsFlags) -> MsFlags {
    let mut f = MsFlags::empty();
    for (s, m) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.contains(s) {
            f |= m;
        }
    }
    f
}

/// Recursive attributes, then propagation.
fn finish(target: &OwnedFd, opts: &MountOptions) -> Result<()> {
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        let attr = MountAttr {
            attr_set: opts.rec_set,
            attr_clr: opts.rec_clear,
            ..Default::default()
        };
        sys::mount_setattr(target, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr)
            .map_err(|e| RuntimeError::sys("mount_setattr (recursive options)", e))?;
    }
    for p in &opts.propagation {
        mount(
            None::<&str>,
            &proc_fd_path(target),
            None::<&str>,
            *p,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys(format!("set propagation {p:?}"), e))?;
    }
    Ok(())
}

/// `tmpcopyup`: copies what the directory held before the tmpfs covered it.
fn copy_up(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).map_err(|e| RuntimeError::io("read", from, e))? {
        let entry = entry.map_err(|e| RuntimeError::io("read", from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).map_err(|e| RuntimeError::io("stat", &src, e))?;
        if meta.is_dir() {
            fs::create_dir(&dst).map_err(|e| RuntimeError::io("create", &dst, e))?;
            copy_up(&src, &dst)?;
        } else if meta.file_type().is_symlink() {
            let link = fs::read_link(&src).map_err(|e| RuntimeError::io("readlink", &src, e))?;
            std::os::unix::fs::symlink(link, &dst)
                .map_err(|e| RuntimeError::io("symlink", &dst, e))?;
        } else {
            fs::copy(&src, &dst).map_err(|e| RuntimeError::io("copy", &src, e))?;
        }
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()));
        if !meta.file_type().is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode()));
        }
    }
    Ok(())
}

/// cgroup mounts. With a cgroup namespace a fresh cgroup2 (or per-controller cgroup v1)
/// filesystem shows exactly the container's cgroup; without one, the container's own cgroup
/// directories are bound, as runc does: on v1 a tmpfs at the destination holds one bind per
/// hierarchy (named like the hierarchy's mount point, with symlinks for co-mounted controllers).
fn mount_cgroups(root: &RootDir, dest: &Path, opts: &MountOptions, env: &MountEnv) -> Result<()> {
    let target = root.resolve_or_create(dest, Create::Dir)?;
    let unified_only = env.cgroup_dirs.len() == 1 && is_cgroup2(&env.cgroup_dirs[0]);
    let ro = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if unified_only {
        if env.cgroupns {
            let flags = opts.flags & !MsFlags::MS_BIND;
            if mount(
                Some("cgroup2"),
                &proc_fd_path(&target),
                Some("cgroup2"),
                flags,
                None::<&str>,
            )
            .is_ok()
            {
                return finish(&root.resolve_follow(dest)?, opts);
            }
        }
        bind_ro(root, &env.cgroup_dirs[0], dest, ro)?;
        return finish(&root.resolve_follow(dest)?, opts);
    }
    mount(
        Some("tmpfs"),
        &proc_fd_path(&target),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(|e| RuntimeError::sys("tmpfs for the cgroup hierarchies", e))?;
    for dir in &env.cgroup_dirs {
        let Some(mount_point) = hierarchy_mount_point(dir, &env.cgroup_path) else {
            continue;
        };
        let Some(name) = mount_point.file_name() else {
            continue;
        };
        bind_ro(root, dir, &dest.join(name), ro)?;
        let name = name.to_string_lossy();
        if name.contains(',') {
            for ctrl in name.split(',') {
                let link = root.resolve(dest)?;
                let _ = nix::unistd::symlinkat(name.as_ref() as &str, link, ctrl);
            }
        }
    }
    // The tmpfs itself is read-only like the rest once populated.
    if ro.contains(MsFlags::MS_RDONLY) {
        let t = root.resolve_follow(dest)?;
        mount(
            None::<&str>,
            &proc_fd_path(&t),
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .map_err(|e| RuntimeError::sys("remount the cgroup tmpfs read-only", e))?;
    }
    finish(&root.resolve_follow(dest)?, opts)
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn hierarchy_mount_point(dir: &Path, cgroup_path: &Path) -> Option<PathBuf> {
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    let s = dir.to_string_lossy();
    let r = rel.to_string_lossy();
    if r.is_empty() {
        return Some(dir.to_owned());
    }
    s.strip_suffix(r.as_ref())
        .map(|p| PathBuf::from(p.trim_end_matches('/')))
}

/// Binds `source` on `dest` (inside `root`) and remounts it with `flags`.
fn bind_ro(root: &RootDir, source: &Path, dest: &Path, flags: MsFlags) -> Result<()> {
    let target = root.resolve_or_create(dest, Create::Dir)?;
    mount(
        Some(source),
        &proc_fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RuntimeError::sys(format!("bind cgroup {}", source.display()), e))?;
    if !flags.is_empty() {
        // Remount the new mount, not the directory it covers.
        let mounted = root.resolve_follow(dest)?;
        mount(
            None::<&str>,
            &proc_fd_path(&mounted),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .map_err(|e| RuntimeError::sys(format!("remount cgroup {}", source.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_point_of_a_hierarchy() {
        assert_eq!(
            hierarchy_mount_point(
                Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c1"),
                Path::new("/berth/c1")
            ),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            hierarchy_mount_point(Path::new("/sys/fs/cgroup/memory/x"), Path::new("/y")),
            None
        );
    }
}
