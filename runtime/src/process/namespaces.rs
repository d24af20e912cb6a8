//! Namespaces: which ones a container creates and which it joins (by path, as pod containers
//! join their sandbox's), and the setns/unshare calls that put a process into them.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Result, RuntimeError};
use crate::sys;

/// `CLONE_NEWTIME`, which nix does not name.
pub const CLONE_NEWTIME: CloneFlags = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);

/// A namespace to join, opened by the runtime before forking so that the path is resolved in
/// the runtime's own mount namespace.
#[derive(Debug)]
pub struct JoinNamespace {
    pub kind: CloneFlags,
    pub path: PathBuf,
    pub file: File,
    /// The path names the runtime's own namespace of that kind (e.g. /proc/1/ns/uts): joining
    /// it is inheriting the host's, not a namespace of the container's own.
    pub own: bool,
}

impl JoinNamespace {
    /// Opens the namespace at `path` and checks that it is one, of kind `kind`.
    pub fn open(kind: CloneFlags, path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| RuntimeError::io("open namespace", path, e))?;
        check_type(&file, kind, path)?;
        let own = match (
            file.metadata(),
            fs::metadata(format!("/proc/self/ns/{}", proc_name(kind))),
        ) {
            (Ok(theirs), Ok(ours)) => theirs.ino() == ours.ino() && theirs.dev() == ours.dev(),
            _ => false,
        };
        Ok(Self {
            kind,
            path: path.to_owned(),
            file,
            own,
        })
    }
}

/// Fails clearly unless `file` is a namespace of kind `kind` (ioctl NS_GET_NSTYPE): joining a
/// path of the wrong kind would otherwise fail later in setns with a bare EINVAL.
fn check_type(file: &File, kind: CloneFlags, path: &Path) -> Result<()> {
    let wrong = |what: String| RuntimeError::InvalidSpec {
        field: "linux.namespaces",
        reason: format!(
            "{} is {what}, not a {} namespace",
            path.display(),
            proc_name(kind)
        ),
    };
    match sys::ns_type(file) {
        Ok(t) if t == kind.bits() => Ok(()),
        Ok(t) => Err(wrong(format!(
            "a {} namespace",
            proc_name(CloneFlags::from_bits_retain(t))
        ))),
        Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL) => {
            Err(wrong("not a namespace file".into()))
        }
        Err(e) => Err(RuntimeError::sys(
            format!("read the namespace type of {}", path.display()),
            e,
        )),
    }
}

/// What to do about namespaces for one process.
#[derive(Debug)]
pub struct NamespacePlan {
    /// Namespaces to join, user namespace first.
    pub join: Vec<JoinNamespace>,
    /// Create a new user namespace (after joining the others; before creating the others).
    pub new_user: bool,
    /// Other namespaces to create with unshare (PID and time take effect for the children).
    pub create: CloneFlags,
    /// `linux.timeOffsets` as /proc/self/timens_offsets lines, for a new time namespace.
    pub time_offsets: String,
    /// For `exec` into a container that shares the runtime's mount namespace (and so is not
    /// entered by joining one): its init's root directory (/proc/PID/root), to chroot into.
    pub chroot: Option<File>,
}

fn flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => CLONE_NEWTIME,
    }
}

/// The /proc/PID/ns file name of a namespace kind.
fn proc_name(kind: CloneFlags) -> &'static str {
    match kind {
        k if k == CloneFlags::CLONE_NEWUSER => "user",
        k if k == CloneFlags::CLONE_NEWPID => "pid",
        k if k == CloneFlags::CLONE_NEWNET => "net",
        k if k == CloneFlags::CLONE_NEWNS => "mnt",
        k if k == CloneFlags::CLONE_NEWIPC => "ipc",
        k if k == CloneFlags::CLONE_NEWUTS => "uts",
        k if k == CloneFlags::CLONE_NEWCGROUP => "cgroup",
        _ => "time",
    }
}

fn join_error(ns: &JoinNamespace, e: nix::errno::Errno) -> RuntimeError {
    RuntimeError::sys(
        format!(
            "join {} namespace {}",
            proc_name(ns.kind),
            ns.path.display()
        ),
        e,
    )
}

fn join_one(ns: &JoinNamespace) -> Result<()> {
    setns(ns.file.as_fd(), ns.kind).map_err(|e| join_error(ns, e))
}

/// Join order: the user namespace first (it grants the capabilities to join the others), the
/// mount namespace last (after it, host paths no longer resolve).
const ORDER: [CloneFlags; 8] = [
    CloneFlags::CLONE_NEWUSER,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWPID,
    CloneFlags::CLONE_NEWCGROUP,
    CLONE_NEWTIME,
    CloneFlags::CLONE_NEWNS,
];

impl Default for NamespacePlan {
    fn default() -> Self {
        Self {
            join: Vec::new(),
            new_user: false,
            create: CloneFlags::empty(),
            time_offsets: String::new(),
            chroot: None,
        }
    }
}

impl NamespacePlan {
    /// The plan for a container's init, from `linux.namespaces`.
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let mut plan = NamespacePlan::default();
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let mut seen = CloneFlags::empty();
        for ns in &namespaces {
            let kind = flag(ns.typ());
            if seen.contains(kind) {
                return Err(RuntimeError::InvalidSpec {
                    field: "linux.namespaces",
                    reason: format!("namespace {} is listed twice", proc_name(kind)),
                });
            }
            seen |= kind;
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    plan.join.push(JoinNamespace::open(kind, path)?);
                }
                _ if kind == CloneFlags::CLONE_NEWUSER => plan.new_user = true,
                _ => plan.create |= kind,
            }
        }
        let offsets = spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().clone())
            .unwrap_or_default();
        if !offsets.is_empty() && !plan.create.contains(CLONE_NEWTIME) {
            return Err(RuntimeError::InvalidSpec {
                field: "linux.timeOffsets",
                reason: "time offsets need a new time namespace".into(),
            });
        }
        let mut clocks: Vec<_> = offsets.into_iter().collect();
        clocks.sort_by(|a, b| a.0.cmp(&b.0));
        for (clock, off) in clocks {
            if clock != "monotonic" && clock != "boottime" {
                return Err(RuntimeError::InvalidSpec {
                    field: "linux.timeOffsets",
                    reason: format!("unknown clock {clock:?} (monotonic or boottime)"),
                });
            }
            plan.time_offsets.push_str(&format!(
                "{clock} {} {}\n",
                off.secs().unwrap_or(0),
                off.nanosecs().unwrap_or(0)
            ));
        }
        plan.sort();
        Ok(plan)
    }

    /// The plan for `exec`: join every namespace of the container's init that differs from
    /// the runtime's own.
    pub fn for_exec(init: Pid) -> Result<Self> {
        let mut plan = NamespacePlan::default();
        for kind in ORDER {
            let name = proc_name(kind);
            let theirs = PathBuf::from(format!("/proc/{init}/ns/{name}"));
            let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
            let (Ok(their_meta), Ok(our_meta)) = (fs::metadata(&theirs), fs::metadata(&ours))
            else {
                // A kernel without this namespace kind (e.g. time before 5.6).
                continue;
            };
            if their_meta.ino() == our_meta.ino() && their_meta.dev() == our_meta.dev() {
                continue;
            }
            let file =
                File::open(&theirs).map_err(|e| RuntimeError::io("open namespace", &theirs, e))?;
            plan.join.push(JoinNamespace {
                kind,
                path: theirs,
                file,
                own: false,
            });
        }
        if !plan.joins(CloneFlags::CLONE_NEWNS) {
            let root = PathBuf::from(format!("/proc/{init}/root"));
            let (Ok(theirs), Ok(ours)) = (fs::metadata(&root), fs::metadata("/")) else {
                return Err(RuntimeError::io(
                    "stat the container's root",
                    &root,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            };
            if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
                let dir = File::open(&root)
                    .map_err(|e| RuntimeError::io("open the container's root", &root, e))?;
                plan.chroot = Some(dir);
            }
        }
        Ok(plan)
    }

    /// Enters the container's root by chroot when it shares the runtime's mount namespace
    /// (stage 1, after joining the other namespaces).
    pub fn enter_root(&self) -> Result<()> {
        let Some(dir) = &self.chroot else {
            return Ok(());
        };
        nix::unistd::fchdir(dir)
            .map_err(|e| RuntimeError::sys("chdir to the container's root", e))?;
        nix::unistd::chroot(".")
            .map_err(|e| RuntimeError::sys("chroot into the container's root", e))?;
        nix::unistd::chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
    }

    fn sort(&mut self) {
        self.join
            .sort_by_key(|j| ORDER.iter().position(|k| *k == j.kind).unwrap_or(0));
    }

    /// Whether the process will be in a PID namespace other than the runtime's.
    pub fn changes_pid_ns(&self) -> bool {
        self.create.contains(CloneFlags::CLONE_NEWPID)
            || self.join.iter().any(|j| j.kind == CloneFlags::CLONE_NEWPID)
    }

    pub fn joins(&self, kind: CloneFlags) -> bool {
        self.join.iter().any(|j| j.kind == kind)
    }

    /// Whether the process will have a namespace of `kind` other than the runtime's: a new
    /// one, or one joined by a path that is not the runtime's own (runc likewise sets the
    /// hostname in a joined UTS namespace, and sets the rootfs up in a joined mount namespace).
    pub fn owns(&self, kind: CloneFlags) -> bool {
        self.creates(kind) || self.join.iter().any(|j| j.kind == kind && !j.own)
    }

    pub fn creates(&self, kind: CloneFlags) -> bool {
        self.create.contains(kind) || (kind == CloneFlags::CLONE_NEWUSER && self.new_user)
    }

    /// Enters the namespaces to join, in order. Runs in the forked stage-1 process.
    ///
    /// When a user namespace is joined, the other namespaces (but the mount namespace, always
    /// last) are tried before it: one owned by an ancestor of that user namespace — a pod's
    /// network namespace pinned on the host, while the pod has its own user namespace — cannot
    /// be joined from inside it (EPERM). What needs the user namespace's capabilities (a
    /// rootless runtime) is joined right after it, as crun does.
    pub fn join_all(&self) -> Result<()> {
        let Some(user) = self
            .join
            .iter()
            .position(|j| j.kind == CloneFlags::CLONE_NEWUSER)
        else {
            return self.join.iter().try_for_each(join_one);
        };
        let (mount, early): (Vec<&JoinNamespace>, Vec<&JoinNamespace>) = self
            .join
            .iter()
            .filter(|j| j.kind != CloneFlags::CLONE_NEWUSER)
            .partition(|j| j.kind == CloneFlags::CLONE_NEWNS);
        let mut deferred = Vec::new();
        for ns in early {
            match setns(ns.file.as_fd(), ns.kind) {
                Ok(()) => {}
                Err(nix::errno::Errno::EPERM) => deferred.push(ns),
                Err(e) => return Err(join_error(ns, e)),
            }
        }
        join_one(&self.join[user])?;
        deferred.into_iter().chain(mount).try_for_each(join_one)
    }

    /// Creates the new user namespace (stage 1, after joining).
    pub fn unshare_user(&self) -> Result<()> {
        if self.new_user {
            unshare(CloneFlags::CLONE_NEWUSER)
                .map_err(|e| RuntimeError::sys("unshare the user namespace", e))?;
        }
        Ok(())
    }

    /// Creates every other new namespace (stage 1, after the user namespace is mapped), and
    /// sets the clock offsets of a new time namespace before any process enters it.
    pub fn unshare_rest(&self) -> Result<()> {
        if !self.create.is_empty() {
            unshare(self.create).map_err(|e| {
                RuntimeError::sys(format!("unshare namespaces {:?}", self.create), e)
            })?;
        }
        if !self.time_offsets.is_empty() {
            fs::write("/proc/self/timens_offsets", &self.time_offsets).map_err(|e| {
                RuntimeError::io(
                    "write time namespace offsets",
                    "/proc/self/timens_offsets",
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// Writes `/proc/PID/uid_map` and `gid_map` of a process that just created a user namespace.
pub fn write_id_maps(pid: Pid, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
        if maps.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                field: "linux.uidMappings/gidMappings",
                reason: "a new user namespace needs uid and gid mappings".into(),
            });
        }
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, format_id_map(maps))
            .map_err(|e| RuntimeError::io("write user namespace map", path, e))?;
    }
    Ok(())
}

/// The `ID-inside ID-outside length` lines the kernel expects.
pub fn format_id_map(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, SpecBuilder,
    };

    fn spec_with(namespaces: Vec<(LinuxNamespaceType, Option<&str>)>) -> Spec {
        let ns = namespaces
            .into_iter()
            .map(|(typ, path)| {
                let mut b = LinuxNamespaceBuilder::default().typ(typ);
                if let Some(p) = path {
                    b = b.path(p);
                }
                b.build().unwrap()
            })
            .collect::<Vec<_>>();
        SpecBuilder::default()
            .linux(LinuxBuilder::default().namespaces(ns).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn splits_create_and_join_with_user_first() {
        let spec = spec_with(vec![
            (LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::User, Some("/proc/self/ns/user")),
            (LinuxNamespaceType::Mount, None),
        ]);
        let plan = NamespacePlan::from_spec(&spec).unwrap();
        assert_eq!(plan.join[0].kind, CloneFlags::CLONE_NEWUSER);
        assert_eq!(plan.join[1].kind, CloneFlags::CLONE_NEWNET);
        assert_eq!(
            plan.create,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS
        );
        assert!(!plan.new_user);
        assert!(plan.changes_pid_ns());
    }

    #[test]
    fn refuses_duplicates_and_missing_paths() {
        let dup = spec_with(vec![
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::Pid, None),
        ]);
        assert!(NamespacePlan::from_spec(&dup).is_err());
        let missing = spec_with(vec![(
            LinuxNamespaceType::Network,
            Some("/nonexistent/netns"),
        )]);
        let err = NamespacePlan::from_spec(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/netns"), "{err}");
    }

    #[test]
    fn refuses_a_path_of_the_wrong_kind_or_not_a_namespace() {
        let wrong = spec_with(vec![(
            LinuxNamespaceType::Network,
            Some("/proc/self/ns/uts"),
        )]);
        let err = NamespacePlan::from_spec(&wrong).unwrap_err().to_string();
        assert!(
            err.contains("/proc/self/ns/uts is a uts namespace, not a net namespace"),
            "{err}"
        );
        let not_ns = spec_with(vec![(LinuxNamespaceType::Uts, Some("/dev/null"))]);
        let err = NamespacePlan::from_spec(&not_ns).unwrap_err().to_string();
        assert!(
            err.contains("/dev/null is not a namespace file, not a uts namespace"),
            "{err}"
        );
    }

    #[test]
    fn a_joined_namespace_of_the_runtime_itself_is_not_the_containers_own() {
        let spec = spec_with(vec![
            (LinuxNamespaceType::Uts, Some("/proc/self/ns/uts")),
            (LinuxNamespaceType::Mount, Some("/proc/self/ns/mnt")),
            (LinuxNamespaceType::Ipc, None),
        ]);
        let plan = NamespacePlan::from_spec(&spec).unwrap();
        assert!(plan.joins(CloneFlags::CLONE_NEWUTS));
        assert!(!plan.owns(CloneFlags::CLONE_NEWUTS));
        assert!(!plan.owns(CloneFlags::CLONE_NEWNS));
        assert!(plan.owns(CloneFlags::CLONE_NEWIPC));
    }

    #[test]
    fn exec_plan_of_self_is_empty() {
        let plan = NamespacePlan::for_exec(nix::unistd::getpid()).unwrap();
        assert!(plan.join.is_empty());
    }

    #[test]
    fn id_map_lines() {
        let m = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(100000u32)
            .size(65536u32)
            .build()
            .unwrap();
        assert_eq!(format_id_map(&[m]), "0 100000 65536\n");
    }
}
