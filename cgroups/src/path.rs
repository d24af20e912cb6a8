//! The cgroup of a container, from the OCI `linux.cgroupsPath`, as a path relative to the roots
//! of the cgroup hierarchies.
//!
//! Accepted forms (runc's):
//! - `/berth/ID`: absolute, under the root of every hierarchy;
//! - `relative/path`: under the caller's own cgroup in each hierarchy;
//! - `slice:prefix:name` with the systemd driver: the cgroupfs path systemd would give the scope
//!   `prefix-name.scope` in `slice`, e.g. `kubepods-besteffort.slice:cri:abc` →
//!   `/kubepods.slice/kubepods-besteffort.slice/cri-abc.scope` ([`SystemdUnit`]; the unit itself
//!   is started by [`crate::systemd::SystemdManager`]).

use std::path::{Component, Path, PathBuf};

use crate::CgroupError;

/// Where a container's cgroup lives, relative to the hierarchy roots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPath {
    path: PathBuf,
    relative_to_own: bool,
}

impl CgroupPath {
    /// Builds the path from an OCI `cgroupsPath`. Without one, the default is `/berth/<id>` (or
    /// `system.slice:berth:<id>` with `systemd`). Paths with `..` are rejected.
    pub fn from_spec(
        spec_path: Option<&str>,
        container_id: &str,
        systemd: bool,
    ) -> Result<Self, CgroupError> {
        let spec_path = spec_path.filter(|p| !p.is_empty());
        if systemd {
            let default;
            let spec = match spec_path {
                Some(p) => p,
                None => {
                    check_id(container_id)?;
                    default = format!("system.slice:berth:{container_id}");
                    &default
                }
            };
            return Self::from_systemd(spec);
        }
        match spec_path {
            Some(p) => {
                let relative_to_own = !p.starts_with('/');
                let path = normalize(p)?;
                if relative_to_own && path.as_os_str().is_empty() {
                    return Err(invalid(p, "relative path names no cgroup"));
                }
                Ok(Self {
                    path,
                    relative_to_own,
                })
            }
            None => {
                check_id(container_id)?;
                Ok(Self {
                    path: normalize(&format!("/berth/{container_id}"))?,
                    relative_to_own: false,
                })
            }
        }
    }

    /// Converts `slice:prefix:name` to the cgroupfs path of the unit.
    fn from_systemd(spec: &str) -> Result<Self, CgroupError> {
        Ok(Self {
            path: SystemdUnit::parse(spec)?.cgroup_path()?,
            relative_to_own: false,
        })
    }

    /// The path as the OCI spec meant it: `/berth/ID` for absolute paths, `relative/path` for
    /// paths under the caller's own cgroup.
    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// True for a path under the caller's own cgroup (an OCI cgroupsPath without leading '/').
    pub fn is_relative_to_own(&self) -> bool {
        self.relative_to_own
    }

    /// The directory of this cgroup in a hierarchy mounted at `mount_point` whose mount shows
    /// cgroup `mount_root`; `own` is the caller's cgroup in that hierarchy (for relative paths).
    pub(crate) fn in_hierarchy(
        &self,
        mount_point: &Path,
        mount_root: &Path,
        own: Option<&Path>,
    ) -> PathBuf {
        let strip_root = |p: &Path| -> PathBuf {
            let p = p.strip_prefix(mount_root).unwrap_or(p);
            p.strip_prefix("/").unwrap_or(p).to_owned()
        };
        let mut dir = mount_point.to_owned();
        if self.relative_to_own {
            if let Some(own) = own {
                dir.push(strip_root(own));
            }
            dir.push(&self.path);
        } else {
            dir.push(self.path.strip_prefix("/").unwrap_or(&self.path));
        }
        dir
    }
}

/// The systemd unit of a container under the systemd cgroup driver, from its OCI cgroupsPath
/// `slice:prefix:name`: the scope `prefix-name.scope` (or `name.scope` without a prefix) in
/// `slice` (`system.slice` when empty), or the slice `name` itself when `name` ends in `.slice`
/// (runc's rule: then `slice` is ignored and the new slice's parent comes from its name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SystemdUnit {
    /// The unit: `prefix-name.scope`, or `name` when that is a slice.
    pub name: String,
    /// The slice it is placed in.
    pub slice: String,
}

impl SystemdUnit {
    /// Parses `slice:prefix:name`.
    pub fn parse(spec: &str) -> Result<Self, CgroupError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(invalid(
                spec,
                "systemd cgroupsPath must be \"slice:prefix:name\"",
            ));
        };
        if [slice, prefix, name].iter().any(|p| p.contains('/')) {
            return Err(invalid(spec, "systemd unit names cannot contain '/'"));
        }
        if name.is_empty() {
            return Err(invalid(spec, "systemd cgroupsPath has an empty name"));
        }
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        expand_slice(slice).ok_or_else(|| invalid(spec, "invalid systemd slice name"))?;
        let unit = if name.ends_with(".slice") {
            expand_slice(name).ok_or_else(|| invalid(spec, "invalid systemd slice name"))?;
            let parent = parent_slice(name);
            return Ok(Self {
                name: name.to_owned(),
                slice: parent,
            });
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        if unit.len() > 255 || !unit.bytes().all(unit_name_byte) {
            return Err(invalid(spec, "not a valid systemd unit name"));
        }
        Ok(Self {
            name: unit,
            slice: slice.to_owned(),
        })
    }

    /// True when the unit is a slice (the container asked for a slice of its own).
    pub fn is_slice(&self) -> bool {
        self.name.ends_with(".slice")
    }

    /// The unit's cgroup, relative to the cgroup root: `/a.slice/a-b.slice/p-n.scope`.
    pub fn cgroup_path(&self) -> Result<PathBuf, CgroupError> {
        let path = if self.is_slice() {
            expand_slice(&self.name)
        } else {
            expand_slice(&self.slice).map(|p| p.join(&self.name))
        };
        let path = path.ok_or_else(|| invalid(&self.name, "invalid systemd slice name"))?;
        normalize(&path.to_string_lossy())
    }
}

impl std::fmt::Display for SystemdUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// systemd's unit-name characters (unit_name_is_valid): ASCII letters, digits, `:-_.\\@`.
fn unit_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b)
}

/// The parent of slice `a-b-c.slice`: `a-b.slice`; of a top-level slice: `-.slice`.
fn parent_slice(slice: &str) -> String {
    let stem = slice.strip_suffix(".slice").unwrap_or(slice);
    match stem.rsplit_once('-') {
        Some((parent, _)) if !parent.is_empty() => format!("{parent}.slice"),
        _ => "-.slice".to_owned(),
    }
}

impl std::fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

fn invalid(path: &str, reason: &'static str) -> CgroupError {
    CgroupError::InvalidPath {
        path: path.to_owned(),
        reason,
    }
}

fn check_id(id: &str) -> Result<(), CgroupError> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(invalid(id, "container id cannot name a cgroup"));
    }
    Ok(())
}

/// Drops `.` and duplicate slashes; rejects `..`. Keeps a leading '/' if there was one.
fn normalize(p: &str) -> Result<PathBuf, CgroupError> {
    if p.contains('\0') {
        return Err(invalid(p, "contains a NUL byte"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(invalid(p, "\"..\" is not allowed")),
            Component::Prefix(_) => return Err(invalid(p, "not a unix path")),
        }
    }
    Ok(out)
}

/// systemd's slice name to path expansion: `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` → `/`.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let stem = slice.strip_suffix(".slice")?;
    if stem.is_empty() || slice.contains('/') {
        return None;
    }
    if stem == "-" {
        return Some(PathBuf::from("/"));
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for component in stem.split('-') {
        if component.is_empty() {
            return None;
        }
        path.push(format!("{prefix}{component}.slice"));
        prefix.push_str(component);
        prefix.push('-');
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: Option<&str>, systemd: bool) -> Result<CgroupPath, CgroupError> {
        CgroupPath::from_spec(spec, "abc", systemd)
    }

    #[test]
    fn absolute_and_default() {
        let a = p(Some("/berth/abc"), false).unwrap();
        assert_eq!(a.as_path(), Path::new("/berth/abc"));
        assert!(!a.is_relative_to_own());
        assert_eq!(p(None, false).unwrap().as_path(), Path::new("/berth/abc"));
        assert_eq!(
            p(Some(""), false).unwrap().as_path(),
            Path::new("/berth/abc")
        );
        assert_eq!(
            p(Some("//x/./y/"), false).unwrap().as_path(),
            Path::new("/x/y")
        );
        assert!(CgroupPath::from_spec(None, "a/b", false).is_err());
        assert!(CgroupPath::from_spec(None, "..", false).is_err());
    }

    #[test]
    fn relative_to_own() {
        let r = p(Some("pods/abc"), false).unwrap();
        assert!(r.is_relative_to_own());
        assert_eq!(r.as_path(), Path::new("pods/abc"));
        let dir = r.in_hierarchy(
            Path::new("/sys/fs/cgroup/memory"),
            Path::new("/"),
            Some(Path::new("/user.slice/me")),
        );
        assert_eq!(
            dir,
            Path::new("/sys/fs/cgroup/memory/user.slice/me/pods/abc")
        );
        // In a nested container the mount shows /docker/x; our cgroup /docker/x/inner.
        let dir = r.in_hierarchy(
            Path::new("/sys/fs/cgroup/memory"),
            Path::new("/docker/x"),
            Some(Path::new("/docker/x/inner")),
        );
        assert_eq!(dir, Path::new("/sys/fs/cgroup/memory/inner/pods/abc"));
        assert!(p(Some("."), false).is_err());
    }

    #[test]
    fn absolute_in_hierarchy() {
        let a = p(Some("/berth/abc"), false).unwrap();
        let dir = a.in_hierarchy(Path::new("/sys/fs/cgroup/cpu"), Path::new("/"), None);
        assert_eq!(dir, Path::new("/sys/fs/cgroup/cpu/berth/abc"));
    }

    #[test]
    fn rejects_dotdot() {
        for bad in ["/berth/../etc", "../x", "a/../../b", "/.."] {
            let err = p(Some(bad), false).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn systemd_form() {
        let s = p(
            Some("kubepods-besteffort-podx.slice:cri-containerd:abc"),
            true,
        )
        .unwrap();
        assert_eq!(
            s.as_path(),
            Path::new(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/cri-containerd-abc.scope"
            )
        );
        assert!(!s.is_relative_to_own());
        assert_eq!(
            p(None, true).unwrap().as_path(),
            Path::new("/system.slice/berth-abc.scope")
        );
        assert_eq!(
            p(Some(":berth:abc"), true).unwrap().as_path(),
            Path::new("/system.slice/berth-abc.scope")
        );
        assert_eq!(
            p(Some("-.slice:p:abc"), true).unwrap().as_path(),
            Path::new("/p-abc.scope")
        );
        assert_eq!(
            p(Some("system.slice::n"), true).unwrap().as_path(),
            Path::new("/system.slice/n.scope")
        );
        assert_eq!(
            p(Some("ignored.slice:p:my-own.slice"), true)
                .unwrap()
                .as_path(),
            Path::new("/my.slice/my-own.slice")
        );
        for bad in [
            "/berth/abc",
            "a:b",
            "a:b:c:d",
            "notaslice:p:n",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            "x.slice:p:",
            "x.slice:p/q:n",
        ] {
            assert!(p(Some(bad), true).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn systemd_units() {
        let u = SystemdUnit::parse("kubepods-besteffort-podx.slice:berth:abc").unwrap();
        assert_eq!(u.name, "berth-abc.scope");
        assert_eq!(u.slice, "kubepods-besteffort-podx.slice");
        assert!(!u.is_slice());
        let u = SystemdUnit::parse(":berth:abc").unwrap();
        assert_eq!(
            (u.name.as_str(), u.slice.as_str()),
            ("berth-abc.scope", "system.slice")
        );
        let u = SystemdUnit::parse("ignored.slice:p:my-own.slice").unwrap();
        assert_eq!(
            (u.name.as_str(), u.slice.as_str()),
            ("my-own.slice", "my.slice")
        );
        assert!(u.is_slice());
        assert_eq!(
            u.cgroup_path().unwrap(),
            Path::new("/my.slice/my-own.slice")
        );
        let u = SystemdUnit::parse("x.slice::top.slice").unwrap();
        assert_eq!(u.slice, "-.slice");
        for bad in ["x.slice:p:a b", "x.slice:p:a\"x", "x.slice:p:ä"] {
            assert!(SystemdUnit::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(SystemdUnit::parse(&format!("x.slice:p:{}", "a".repeat(250))).is_err());
    }

    #[test]
    fn expand_slice_matches_systemd() {
        assert_eq!(expand_slice("a.slice").unwrap(), Path::new("/a.slice"));
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            Path::new("/a.slice/a-b.slice/a-b-c.slice")
        );
        assert_eq!(expand_slice("-.slice").unwrap(), Path::new("/"));
        assert!(expand_slice(".slice").is_none());
        assert!(expand_slice("a-.slice").is_none());
    }
}
