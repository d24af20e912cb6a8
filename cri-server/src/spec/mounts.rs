//! Mounts: containerd's default set, the sandbox's files (/etc/hostname, /etc/hosts,
//! /etc/resolv.conf, /dev/shm) and the CRI mounts with their propagation, read-only (`ro` or
//! recursive `rro`) and id mappings (containerd's `WithMounts` and `linuxContainerMounts`).

use std::path::{Component, Path, PathBuf};

use cri_api::v1 as cri;
use oci_spec::runtime::{LinuxIdMapping, Mount};

use super::namespaces::PodUserns;
use super::{SandboxFiles, SpecError};

pub fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// containerd's default mounts (its default spec without /run, plus the cgroup mount its CRI
/// plugin adds). `writable`: sysfs and cgroupfs read-write, for privileged containers.
pub fn defaults(writable: bool) -> Vec<Mount> {
    let mode = if writable { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", mode],
        ),
    ]
}

/// In a pod with its own user namespace, /sys is the host's sysfs bound recursively read-only
/// instead of a new sysfs: the pod's network namespace, pinned on the host by berthd, belongs to
/// the host's user namespace, and only a user namespace owning the network namespace may mount
/// sysfs (EPERM from runc and crun otherwise). This is runc's rule for rootless containers and
/// what berth-runtime falls back to by itself.
pub fn sysfs_for_userns(mounts: &mut [Mount]) {
    for m in mounts
        .iter_mut()
        .filter(|m| m.typ().as_deref() == Some("sysfs"))
    {
        let dest = m.destination().to_string_lossy().into_owned();
        *m = mount(
            &dest,
            "bind",
            "/sys",
            &["rbind", "rro", "nosuid", "noexec", "nodev"],
        );
    }
}

/// The pause's mounts: the defaults without the cgroup mount, /dev/shm bound from the pod's shm
/// (or the host's with host IPC) and its resolv.conf, both read-only.
pub fn sandbox(files: &SandboxFiles, host_ipc: bool) -> Vec<Mount> {
    let mut mounts = defaults(false);
    mounts.retain(|m| m.destination() != Path::new("/sys/fs/cgroup"));
    let opts = ["rbind", "ro", "nosuid", "nodev", "noexec"];
    let shm = if host_ipc {
        Some(PathBuf::from("/dev/shm"))
    } else {
        files.shm.clone()
    };
    if let Some(shm) = shm {
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(mount("/dev/shm", "bind", &shm.to_string_lossy(), &opts));
    }
    if let Some(resolv) = &files.resolv_conf {
        mounts.push(mount(
            "/etc/resolv.conf",
            "bind",
            &resolv.to_string_lossy(),
            &opts,
        ));
    }
    mounts
}

/// What a container's mounts are built from.
pub struct ContainerMounts<'a> {
    pub config: &'a [cri::Mount],
    pub files: &'a SandboxFiles,
    pub readonly_rootfs: bool,
    pub host_ipc: bool,
    pub privileged: bool,
    pub userns: Option<&'a PodUserns>,
}

/// The result: the mounts and the rootfs propagation the CRI mounts need.
pub struct Mounts {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<&'static str>,
}

/// A container's mounts, in containerd's order: the defaults not overridden (nothing under /dev
/// when /dev itself is mounted), then the CRI mounts and the sandbox files they do not
/// override, sorted by depth so that a parent is mounted before its children.
pub fn container(c: &ContainerMounts<'_>) -> Result<Mounts, SpecError> {
    let mut requested: Vec<cri::Mount> = c.config.to_vec();
    for extra in sandbox_files(c) {
        if !requested
            .iter()
            .any(|m| clean(&m.container_path) == clean(&extra.container_path))
        {
            requested.push(extra);
        }
    }
    requested.sort_by_key(|m| clean(&m.container_path).matches('/').count());

    let mut mounts: Vec<Mount> = defaults(c.privileged)
        .into_iter()
        .filter(|d| {
            let dest = d.destination().to_string_lossy().into_owned();
            let overridden =
                |path: &str| requested.iter().any(|m| clean(&m.container_path) == path);
            // Overridden, or under a /dev that is itself mounted: dropped.
            !(overridden(&dest) || (dest.starts_with("/dev/") && overridden("/dev")))
        })
        .collect();

    let mut propagation = None;
    for m in &requested {
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            return Err(SpecError::NotYet {
                what: "mounts whose source is an image (image volumes)",
            });
        }
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(SpecError::Invalid {
                field: "mounts.container_path",
                reason: format!("{:?} is not an absolute path", m.container_path),
            });
        }
        let source = host_source(&m.host_path)?;
        let mut options = vec!["rbind".to_string()];
        match m.propagation() {
            cri::MountPropagation::PropagationPrivate => options.push("rprivate".into()),
            cri::MountPropagation::PropagationBidirectional => {
                options.push("rshared".into());
                propagation = Some("rshared");
            }
            cri::MountPropagation::PropagationHostToContainer => {
                options.push("rslave".into());
                if propagation != Some("rshared") {
                    propagation = Some("rslave");
                }
            }
        }
        options.extend(bind_options(m)?);
        if m.recursive_read_only {
            if !m.readonly {
                return Err(SpecError::Invalid {
                    field: "mounts.recursive_read_only",
                    reason: format!("{:?}: conflicts with a read-write mount", m.host_path),
                });
            }
            if m.propagation() != cri::MountPropagation::PropagationPrivate {
                return Err(SpecError::Invalid {
                    field: "mounts.recursive_read_only",
                    reason: format!(
                        "{:?}: needs private propagation, got {}",
                        m.host_path,
                        m.propagation().as_str_name()
                    ),
                });
            }
            options.push("rro".into());
        } else {
            options.push(if m.readonly { "ro" } else { "rw" }.into());
        }
        let mut out = Mount::default();
        out.set_destination(m.container_path.clone().into());
        out.set_typ(Some("bind".into()));
        out.set_source(Some(source));
        out.set_options(Some(options));
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            let map = |ids: &[cri::IdMapping], field| -> Result<Vec<LinuxIdMapping>, SpecError> {
                super::namespaces::mappings(ids, field)
            };
            out.set_uid_mappings(Some(map(&m.uid_mappings, "mounts.uidMappings")?));
            out.set_gid_mappings(Some(map(&m.gid_mappings, "mounts.gidMappings")?));
        }
        mounts.push(out);
    }
    Ok(Mounts {
        mounts,
        rootfs_propagation: propagation,
    })
}

/// The bind options KEP-5855 lets a volume mount ask for (`Mount.mount_options`); each takes a
/// right away from the mount, so a runtime that remounts the bind with them (every OCI runtime
/// does) honours them. Anything else is refused, naming it, rather than passed to the runtime.
pub const BIND_OPTIONS: [&str; 3] = ["noexec", "nodev", "nosuid"];

/// `m.mount_options`, checked against [`BIND_OPTIONS`], without repeats, in request order.
fn bind_options(m: &cri::Mount) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    for o in &m.mount_options {
        if !BIND_OPTIONS.contains(&o.as_str()) {
            return Err(SpecError::Invalid {
                field: "mounts.mount_options",
                reason: format!(
                    "{:?}: mount option {o:?} is not supported (supported: {})",
                    m.container_path,
                    BIND_OPTIONS.join(", ")
                ),
            });
        }
        if !out.contains(o) {
            out.push(o.clone());
        }
    }
    Ok(out)
}

/// The sandbox's files as CRI mounts: read-only with a read-only rootfs, id-mapped in a pod
/// user namespace; /dev/shm read-write and never id-mapped (tmpfs idmap needs Linux 6.3).
fn sandbox_files(c: &ContainerMounts<'_>) -> Vec<cri::Mount> {
    let (uids, gids) = match c.userns {
        Some(u) => (to_cri(&u.uids), to_cri(&u.gids)),
        None => (Vec::new(), Vec::new()),
    };
    let mut out = Vec::new();
    for (dest, src) in [
        ("/etc/hostname", &c.files.hostname),
        ("/etc/hosts", &c.files.hosts),
        ("/etc/resolv.conf", &c.files.resolv_conf),
    ] {
        if let Some(src) = src {
            out.push(cri::Mount {
                container_path: dest.into(),
                host_path: src.to_string_lossy().into_owned(),
                readonly: c.readonly_rootfs,
                uid_mappings: uids.clone(),
                gid_mappings: gids.clone(),
                ..Default::default()
            });
        }
    }
    let shm = if c.host_ipc {
        Some(PathBuf::from("/dev/shm"))
    } else {
        c.files.shm.clone()
    };
    if let Some(shm) = shm {
        out.push(cri::Mount {
            container_path: "/dev/shm".into(),
            host_path: shm.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    out
}

fn to_cri(ids: &[LinuxIdMapping]) -> Vec<cri::IdMapping> {
    ids.iter()
        .map(|m| cri::IdMapping {
            host_id: m.host_id(),
            container_id: m.container_id(),
            length: m.size(),
        })
        .collect()
}

/// As containerd: a missing host path becomes a directory (0755), and symlinks are resolved.
fn host_source(host_path: &str) -> Result<PathBuf, SpecError> {
    let err = |source| SpecError::Host {
        field: "mounts.host_path",
        path: host_path.into(),
        source,
    };
    if host_path.is_empty() {
        return Err(SpecError::Invalid {
            field: "mounts.host_path",
            reason: "empty".into(),
        });
    }
    let path = Path::new(host_path);
    if std::fs::symlink_metadata(path).is_err() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(err)?;
    }
    std::fs::canonicalize(path).map_err(err)
}

/// A lexically cleaned absolute path (Go's filepath.Clean for the cases that matter here).
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(mounts: &'a [Mount], dest: &str) -> Option<&'a Mount> {
        mounts.iter().find(|m| m.destination() == Path::new(dest))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn base<'a>(config: &'a [cri::Mount], files: &'a SandboxFiles) -> ContainerMounts<'a> {
        ContainerMounts {
            config,
            files,
            readonly_rootfs: false,
            host_ipc: false,
            privileged: false,
            userns: None,
        }
    }

    fn files(dir: &Path) -> SandboxFiles {
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(dir.join(f), "x\n").unwrap();
        }
        std::fs::create_dir_all(dir.join("shm")).unwrap();
        SandboxFiles {
            hostname: Some(dir.join("hostname")),
            hosts: Some(dir.join("hosts")),
            resolv_conf: Some(dir.join("resolv.conf")),
            shm: Some(dir.join("shm")),
        }
    }

    #[test]
    fn mount_options_reach_the_bind_and_unknown_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = SandboxFiles::default();
        let with = |options: &[&str]| cri::Mount {
            container_path: "/data".into(),
            host_path: dir.path().display().to_string(),
            readonly: true,
            mount_options: options.iter().map(|o| o.to_string()).collect(),
            ..Default::default()
        };
        let ok = container(&base(
            &[with(&["noexec", "nosuid", "nodev", "noexec"])],
            &files,
        ))
        .unwrap();
        let data = opts(find(&ok.mounts, "/data").unwrap());
        assert_eq!(
            data,
            ["rbind", "rprivate", "noexec", "nosuid", "nodev", "ro"]
        );

        let err = container(&base(&[with(&["noexec", "noatime"])], &files))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("mounts.mount_options"), "{err}");
        assert!(err.contains("\"noatime\""), "{err}");
        assert!(err.contains("/data"), "{err}");
    }

    #[test]
    fn defaults_and_sandbox_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let m = container(&base(&[], &files)).unwrap();
        let dests: Vec<String> = m
            .mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        let shm = find(&m.mounts, "/dev/shm").unwrap();
        assert_eq!(
            shm.source().as_deref(),
            Some(dir.path().join("shm").as_path())
        );
        assert_eq!(opts(shm), ["rbind", "rprivate", "rw"]);
        assert_eq!(opts(find(&m.mounts, "/sys").unwrap()).last().unwrap(), "ro");
        assert_eq!(
            opts(find(&m.mounts, "/sys/fs/cgroup").unwrap())
                .last()
                .unwrap(),
            "ro"
        );
        assert_eq!(m.rootfs_propagation, None);

        // Read-only rootfs: the files are read-only too; host IPC: the host's /dev/shm.
        let m = container(&ContainerMounts {
            readonly_rootfs: true,
            host_ipc: true,
            ..base(&[], &files)
        })
        .unwrap();
        assert_eq!(
            opts(find(&m.mounts, "/etc/hosts").unwrap()),
            ["rbind", "rprivate", "ro"]
        );
        assert_eq!(
            find(&m.mounts, "/dev/shm").unwrap().source().as_deref(),
            Some(Path::new("/dev/shm"))
        );

        // Privileged: sysfs and cgroupfs writable.
        let m = container(&ContainerMounts {
            privileged: true,
            ..base(&[], &files)
        })
        .unwrap();
        assert_eq!(opts(find(&m.mounts, "/sys").unwrap()).last().unwrap(), "rw");
    }

    #[test]
    fn cri_mounts_override_and_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let host = dir.path().join("vol");
        std::fs::create_dir(&host).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&host, &link).unwrap();
        let hp = |p: &Path| p.to_string_lossy().into_owned();
        let config = vec![
            cri::Mount {
                container_path: "/data/deep/er".into(),
                host_path: hp(&host),
                propagation: cri::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/data".into(),
                host_path: hp(&link),
                readonly: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/etc/hosts/".into(),
                host_path: hp(&dir.path().join("hosts")),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/shared".into(),
                host_path: hp(&dir.path().join("missing/created")),
                propagation: cri::MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            },
        ];
        let m = container(&base(&config, &files)).unwrap();
        // The container's /etc/hosts replaces the sandbox's.
        let hosts: Vec<_> = m
            .mounts
            .iter()
            .filter(|m| clean(&m.destination().to_string_lossy()) == "/etc/hosts")
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(opts(hosts[0]), ["rbind", "rprivate", "rro"]);
        // Parents before children; symlinks resolved; read-only.
        let pos = |d: &str| {
            m.mounts
                .iter()
                .position(|m| m.destination() == Path::new(d))
        };
        assert!(pos("/data").unwrap() < pos("/data/deep/er").unwrap());
        let data = find(&m.mounts, "/data").unwrap();
        assert_eq!(data.source().as_deref(), Some(host.as_path()));
        assert_eq!(opts(data), ["rbind", "rprivate", "ro"]);
        assert_eq!(
            opts(find(&m.mounts, "/data/deep/er").unwrap()),
            ["rbind", "rslave", "rw"]
        );
        assert_eq!(
            opts(find(&m.mounts, "/shared").unwrap()),
            ["rbind", "rshared", "rw"]
        );
        assert!(dir.path().join("missing/created").is_dir());
        // rshared wins over rslave for the rootfs.
        assert_eq!(m.rootfs_propagation, Some("rshared"));
        let only_slave = container(&base(&config[..1], &files)).unwrap();
        assert_eq!(only_slave.rootfs_propagation, Some("rslave"));
    }

    #[test]
    fn dev_mount_hides_default_dev_children() {
        let dir = tempfile::tempdir().unwrap();
        let files = SandboxFiles::default();
        let config = vec![cri::Mount {
            container_path: "/dev".into(),
            host_path: dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        }];
        let m = container(&base(&config, &files)).unwrap();
        assert!(!m
            .mounts
            .iter()
            .any(|m| m.destination().starts_with("/dev") && m.typ().as_deref() != Some("bind")));
        // Without sandbox files, the default tmpfs /dev/shm stays.
        let m = container(&base(&[], &files)).unwrap();
        assert_eq!(
            find(&m.mounts, "/dev/shm").unwrap().typ().as_deref(),
            Some("tmpfs")
        );
    }

    #[test]
    fn bad_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let files = SandboxFiles::default();
        let hp = dir.path().to_string_lossy().into_owned();
        let one = |m: cri::Mount| container(&base(&[m], &files)).err().unwrap().to_string();
        let err = one(cri::Mount {
            container_path: "/x".into(),
            host_path: hp.clone(),
            recursive_read_only: true,
            ..Default::default()
        });
        assert!(err.contains("conflicts with a read-write mount"), "{err}");
        let err = one(cri::Mount {
            container_path: "/x".into(),
            host_path: hp.clone(),
            readonly: true,
            recursive_read_only: true,
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        });
        assert!(err.contains("needs private propagation"), "{err}");
        let err = one(cri::Mount {
            container_path: "rel".into(),
            host_path: hp.clone(),
            ..Default::default()
        });
        assert!(err.contains("not an absolute path"), "{err}");
        let err = one(cri::Mount {
            container_path: "/img".into(),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(err.contains("image volumes"), "{err}");
    }

    #[test]
    fn idmapped_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let map = |h| cri::IdMapping {
            container_id: 0,
            host_id: h,
            length: 65536,
        };
        let config = vec![cri::Mount {
            container_path: "/vol".into(),
            host_path: dir.path().to_string_lossy().into_owned(),
            uid_mappings: vec![map(100000)],
            gid_mappings: vec![map(200000)],
            ..Default::default()
        }];
        let userns = PodUserns {
            uids: super::super::namespaces::mappings(&[map(300000)], "u").unwrap(),
            gids: super::super::namespaces::mappings(&[map(400000)], "g").unwrap(),
        };
        let m = container(&ContainerMounts {
            userns: Some(&userns),
            ..base(&config, &files)
        })
        .unwrap();
        let vol = find(&m.mounts, "/vol").unwrap();
        assert_eq!(vol.uid_mappings().as_ref().unwrap()[0].host_id(), 100000);
        assert_eq!(vol.gid_mappings().as_ref().unwrap()[0].host_id(), 200000);
        // The sandbox files follow the pod's mappings; /dev/shm is not id-mapped.
        let hosts = find(&m.mounts, "/etc/hosts").unwrap();
        assert_eq!(hosts.uid_mappings().as_ref().unwrap()[0].host_id(), 300000);
        assert!(find(&m.mounts, "/dev/shm")
            .unwrap()
            .uid_mappings()
            .is_none());
    }

    #[test]
    fn sandbox_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let m = sandbox(&files, false);
        let shm = find(&m, "/dev/shm").unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(opts(shm), ["rbind", "ro", "nosuid", "nodev", "noexec"]);
        assert!(find(&m, "/etc/resolv.conf").is_some());
        assert!(find(&m, "/sys/fs/cgroup").is_none());
        let host = sandbox(&files, true);
        assert_eq!(
            find(&host, "/dev/shm").unwrap().source().as_deref(),
            Some(Path::new("/dev/shm"))
        );
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/etc/hosts/"), "/etc/hosts");
        assert_eq!(clean("/a//b/../c"), "/a/c");
        assert_eq!(clean("/"), "/");
    }
}
