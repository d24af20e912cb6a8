//! `create`: set the container up and leave its init waiting for `start`.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use berth_cgroups::systemd::SystemdManager;
use berth_cgroups::{CgroupManager, CgroupPath, SystemdUnit};
use chrono::Utc;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{mkfifo, ForkResult, Pid};
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, Spec,
};

use super::state::{self, ContainerRecord, HostMountNs, OciState, Root, CONFIG_FILE, EXEC_FIFO};
use super::{spec_support, ContainerId, ContainerStatus};
use crate::atomic_file;
use crate::error::{Result, RuntimeError};
use crate::hooks::{self, HookKind};
use crate::process::init::{self, InitConfig};
use crate::process::namespaces::{write_id_maps, NamespacePlan};
use crate::process::sync::{self, SyncSocket, ToChild, ToParent};
use crate::process::{apparmor, procfs, seccomp, selinux, stage1};
use crate::rootfs::{self, host_mount_ns, MountEnv};
use crate::sys;

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    pub systemd_cgroup: bool,
}

/// What `create` leaves behind for the caller.
#[derive(Debug)]
pub struct Created {
    pub pid: Pid,
    pub record: ContainerRecord,
}

/// Loads `config.json` from a bundle.
pub fn load_bundle(bundle: &Path) -> Result<(PathBuf, Spec)> {
    let bundle = fs::canonicalize(bundle).map_err(|e| RuntimeError::Bundle {
        path: bundle.to_owned(),
        reason: e.to_string(),
    })?;
    let config = bundle.join(CONFIG_FILE);
    let spec = Spec::load(&config).map_err(|e| RuntimeError::Bundle {
        path: config.clone(),
        reason: e.to_string(),
    })?;
    Ok((bundle, spec))
}

pub fn create(root: &Root, id: &ContainerId, opts: &CreateOptions) -> Result<Created> {
    let (bundle, spec) = load_bundle(&opts.bundle)?;
    validate(&spec)?;
    let root_path = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    let rootfs_raw = if root_path.is_absolute() {
        root_path
    } else {
        bundle.join(root_path)
    };
    let rootfs = fs::canonicalize(&rootfs_raw).map_err(|e| RuntimeError::Bundle {
        path: rootfs_raw.clone(),
        reason: format!("rootfs: {e}"),
    })?;

    let dir = root.reserve(id)?;
    let mut cleanup = Cleanup {
        dir: dir.clone(),
        cgroup: None,
        pids: Vec::new(),
        host_mount_ns: None,
        armed: true,
    };
    let json = serde_json::to_vec(&spec).expect("spec serializes");
    atomic_file::replace(&dir.join(CONFIG_FILE), &json, 0o600)
        .map_err(|e| RuntimeError::io("write", dir.join(CONFIG_FILE), e))?;

    // The FIFO init blocks on until `start`; writable by anyone so that init can open it after
    // switching to the container's user.
    let fifo_path = dir.join(EXEC_FIFO);
    mkfifo(&fifo_path, Mode::from_bits_truncate(0o622))
        .map_err(|e| RuntimeError::sys(format!("mkfifo {}", fifo_path.display()), e))?;
    fs::set_permissions(&fifo_path, fs::Permissions::from_mode(0o622))
        .map_err(|e| RuntimeError::io("chmod", &fifo_path, e))?;
    let fifo = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| RuntimeError::sys(format!("open {}", fifo_path.display()), e))?;

    let ns = NamespacePlan::from_spec(&spec)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let spec_cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let cg_path = absolute_cgroup_path(&CgroupPath::from_spec(
        spec_cgroups_path.as_deref(),
        id.as_str(),
        opts.systemd_cgroup,
    )?)?;
    // With --systemd-cgroup the cgroup is a transient unit systemd starts with the container's
    // first process; without, a directory berth makes.
    let systemd_unit = if opts.systemd_cgroup {
        let spec_path = spec_cgroups_path
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("system.slice:berth:{id}"));
        Some(SystemdUnit::parse(&spec_path)?)
    } else {
        None
    };
    let cgroup: Box<dyn CgroupManager> = match &systemd_unit {
        Some(unit) => Box::new(SystemdManager::new(unit.clone())?),
        None => berth_cgroups::manager(&CgroupPath::from_spec(
            Some(&cg_path.to_string_lossy()),
            id.as_str(),
            false,
        )?)?,
    };
    cgroup.create()?;
    let cgroup = cleanup.cgroup.insert(cgroup);
    cgroup.apply(&effective_resources(&spec))?;

    let console_socket = match &opts.console_socket {
        Some(path) => {
            Some(OwnedFd::from(UnixStream::connect(path).map_err(|e| {
                RuntimeError::io("connect to the console socket", path, e)
            })?))
        }
        None => None,
    };
    if spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
        && console_socket.is_none()
    {
        return Err(RuntimeError::InvalidSpec {
            field: "process.terminal",
            reason: "terminal is true but no --console-socket was given".into(),
        });
    }
    if let Some(filter) = linux.seccomp() {
        seccomp::validate(filter)?;
    }
    let mount_env = MountEnv {
        bundle: bundle.clone(),
        cgroup_dirs: cgroup.paths(),
        cgroup_path: cg_path.clone(),
        cgroupns: ns.creates(CloneFlags::CLONE_NEWCGROUP),
        idmapped: rootfs::idmap::create(&rootfs::idmap::plan(&spec, &bundle)?)?,
    };
    // No mount namespace of its own: the container inherits the host's (the runtime spec's
    // rule for an unlisted namespace), and its mounts there are undone by `delete` (or below,
    // if create fails).
    let host_mount_ns = if ns.owns(CloneFlags::CLONE_NEWNS) {
        None
    } else {
        let before = HostMountNs {
            rootfs_mounts_before: host_mount_ns::mounts_at(&rootfs)?,
        };
        cleanup.host_mount_ns = Some((rootfs.clone(), before));
        Some(before)
    };

    let init_cfg = InitConfig {
        id: id.to_string(),
        bundle: bundle.clone(),
        spec: spec.clone(),
        rootfs: rootfs.clone(),
        mount_env,
        no_pivot: opts.no_pivot,
        console_socket,
        fifo,
        preserve_fds: opts.preserve_fds,
        own_uts: ns.owns(CloneFlags::CLONE_NEWUTS),
        own_mount_ns: host_mount_ns.is_none(),
        in_new_userns: ns.new_user || ns.joins(CloneFlags::CLONE_NEWUSER),
    };
    let (parent, child) = sync::pair()?;
    let stage1_pid = match sys::fork().map_err(|e| RuntimeError::sys("fork stage 1", e))? {
        ForkResult::Child => {
            drop(parent);
            if let Some(process) = spec.process() {
                if let Err(e) = init::set_oom_score_adj(process) {
                    stage1::fail(&child, "oom_score_adj", &e);
                }
            }
            stage1::run(child, &ns, |sync| init::run(init_cfg, sync))
        }
        ForkResult::Parent { child: pid } => pid,
    };
    drop(child);
    // The parent's copies of what init inherited (console socket, fifo, idmapped mounts).
    drop(init_cfg);
    cleanup.pids.push(stage1_pid);

    let base_state = OciState {
        oci_version: spec.version().clone(),
        id: id.to_string(),
        status: ContainerStatus::Creating,
        pid: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: Utc::now(),
        owner: String::new(),
        annotations: spec.annotations().clone().unwrap_or_default(),
    };
    let init_pid = drive_children(
        &parent,
        id,
        &spec,
        ns.creates(CloneFlags::CLONE_NEWCGROUP),
        stage1_pid,
        cgroup.as_ref(),
        &base_state,
        &mut cleanup.pids,
    )?;

    let start_time = procfs::stat(init_pid)
        .map_err(|e| RuntimeError::io("read the init's stat", format!("/proc/{init_pid}/stat"), e))?
        .start_time;
    let record = ContainerRecord {
        id: id.to_string(),
        init_pid: init_pid.as_raw(),
        init_start_time: start_time,
        bundle,
        rootfs,
        created: base_state.created,
        owner: String::new(),
        annotations: base_state.annotations,
        cgroup_path: cg_path,
        systemd_unit,
        own_pid_ns: ns.creates(CloneFlags::CLONE_NEWPID),
        host_mount_ns,
    };
    state::write_record(&dir, &record)?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, init_pid)?;
    }
    cleanup.armed = false;
    Ok(Created {
        pid: init_pid,
        record,
    })
}

/// Talks the runtime's side of the sync protocol until init reports `Created`.
#[allow(clippy::too_many_arguments)]
fn drive_children(
    sync: &SyncSocket,
    id: &ContainerId,
    spec: &Spec,
    new_cgroupns: bool,
    stage1_pid: Pid,
    cgroup: &dyn CgroupManager,
    base_state: &OciState,
    pids: &mut Vec<Pid>,
) -> Result<Pid> {
    // The first cgroup.procs write of a migration waits for an RCU grace period (milliseconds).
    // A new cgroup namespace must be created inside the cgroup, so then stage 1 joins it before
    // anything else; otherwise init joins it while it sets up its rootfs in parallel — long
    // before `start` lets the user process run.
    if new_cgroupns {
        cgroup.add_task(stage1_pid)?;
    }
    sync.send(&ToChild::Go)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut init_pid = None;
    loop {
        let (msg, fds) = match sync.recv_with_fds::<ToParent>()? {
            Some((msg, fds)) => (Some(msg), fds),
            None => (None, Vec::new()),
        };
        match msg {
            Some(ToParent::UsernsCreated) => {
                write_id_maps(
                    stage1_pid,
                    linux.uid_mappings().as_deref().unwrap_or_default(),
                    linux.gid_mappings().as_deref().unwrap_or_default(),
                )?;
                sync.send(&ToChild::UsernsMapped)?;
            }
            Some(ToParent::ChildPid { pid }) => {
                let pid = Pid::from_raw(pid);
                pids.push(pid);
                init_pid = Some(pid);
                let _ = waitpid(stage1_pid, None);
                sync.send(&ToChild::Proceed)?;
                if !new_cgroupns {
                    cgroup.add_task(pid)?;
                }
            }
            Some(ToParent::SeccompListener) => {
                let pid = init_pid.ok_or_else(|| protocol(id, "seccomp before the init pid"))?;
                let mut state = base_state.clone();
                state.pid = pid.as_raw();
                forward_seccomp_listener(spec, &state, &fds)?;
                sync.send(&ToChild::SeccompListenerSent)?;
            }
            Some(ToParent::ReadyForHooks) => {
                let pid = init_pid.ok_or_else(|| protocol(id, "hooks before the init pid"))?;
                let mut state = base_state.clone();
                state.pid = pid.as_raw();
                let json = serde_json::to_string(&state).expect("state serializes");
                // prestart (deprecated, run where createRuntime runs) hands its hooks the state
                // with status "created", as crun does and runtime-tools' hooks_stdin checks;
                // createRuntime and createContainer get "creating", as with runc.
                let prestart_state = OciState {
                    status: ContainerStatus::Created,
                    ..state.clone()
                };
                let prestart_json =
                    serde_json::to_string(&prestart_state).expect("state serializes");
                hooks::run(
                    HookKind::Prestart,
                    &HookKind::Prestart.of(spec),
                    &prestart_json,
                )?;
                hooks::run(
                    HookKind::CreateRuntime,
                    &HookKind::CreateRuntime.of(spec),
                    &json,
                )?;
                sync.send(&ToChild::HooksDone { state: json })?;
            }
            Some(ToParent::Created) => {
                return init_pid.ok_or_else(|| protocol(id, "created before the init pid"));
            }
            Some(ToParent::Error { stage, message }) => {
                return Err(RuntimeError::Init {
                    id: id.to_string(),
                    stage,
                    message,
                });
            }
            None => {
                return Err(RuntimeError::Init {
                    id: id.to_string(),
                    stage: "init".into(),
                    message: "the container process exited before it was set up".into(),
                })
            }
        }
    }
}

/// Hands the seccomp notify listener a container process sent to the agent listening at the
/// spec's `linux.seccomp.listenerPath`, with the container's state (runtime spec, "seccomp").
pub(crate) fn forward_seccomp_listener(
    spec: &Spec,
    state: &OciState,
    fds: &[OwnedFd],
) -> Result<()> {
    let missing = |reason: &str| RuntimeError::InvalidSpec {
        field: "linux.seccomp.listenerPath",
        reason: reason.into(),
    };
    let filter = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone())
        .ok_or_else(|| missing("no seccomp filter"))?;
    let path = filter
        .listener_path()
        .clone()
        .ok_or_else(|| missing("a notify filter needs a listener path"))?;
    let fd = fds
        .first()
        .ok_or_else(|| missing("the container process sent no listener"))?;
    let process_state: oci_spec::runtime::ContainerProcessState =
        serde_json::from_value(serde_json::json!({
            "ociVersion": state.oci_version,
            "fds": [oci_spec::runtime::SECCOMP_FD_NAME],
            "pid": state.pid,
            "metadata": filter.listener_metadata(),
            "state": {
                "ociVersion": state.oci_version,
                "id": state.id,
                "status": "creating",
                "pid": state.pid,
                "bundle": state.bundle,
                "annotations": state.annotations,
            },
        }))
        .expect("the process state document is well-formed");
    seccomp::send_listener_fd(&path, std::os::fd::AsFd::as_fd(fd), &process_state)?;
    Ok(())
}

fn protocol(id: &ContainerId, what: &str) -> RuntimeError {
    RuntimeError::Init {
        id: id.to_string(),
        stage: "sync".into(),
        message: format!("protocol error: {what}"),
    }
}

/// Checks what must hold before anything is set up.
fn validate(spec: &Spec) -> Result<()> {
    spec_support::check_version(spec.version())?;
    spec_support::check_unsupported(spec)?;
    crate::process::env_bytes::from_spec(spec)?;
    apparmor::check(
        spec.process()
            .as_ref()
            .and_then(|p| p.apparmor_profile().as_deref()),
    )?;
    selinux::check(spec)?;
    let process = spec.process().as_ref().ok_or(RuntimeError::InvalidSpec {
        field: "process",
        reason: "missing".into(),
    })?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(RuntimeError::InvalidSpec {
            field: "process.args",
            reason: "empty".into(),
        });
    }
    if !process.cwd().is_absolute() {
        return Err(RuntimeError::InvalidSpec {
            field: "process.cwd",
            reason: format!("{} is not absolute", process.cwd().display()),
        });
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(RuntimeError::InvalidSpec {
                field: "mounts[].destination",
                reason: format!("{} is not absolute", m.destination().display()),
            });
        }
    }
    Ok(())
}

/// A relative cgroupsPath is relative to the runtime's own cgroup at create time; later
/// commands (from other cgroups) must find the same directory, so the record keeps it absolute.
fn absolute_cgroup_path(path: &CgroupPath) -> Result<PathBuf> {
    if !path.is_relative_to_own() {
        return Ok(path.as_path().to_owned());
    }
    let own = berth_cgroups::setup::own_cgroups()?;
    let base = own
        .iter()
        .find(|c| c.controllers.iter().any(|x| x == "memory"))
        .or_else(|| own.first())
        .map(|c| c.path.clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(base.join(path.as_path()))
}

/// The spec's device rules plus the devices every container may use (its /dev nodes and
/// ptys), appended after them as runc appends its allowed devices. `linux.devices` entries get
/// no rule of their own.
pub fn effective_resources(spec: &Spec) -> LinuxResources {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules: Vec<LinuxDeviceCgroup> = res.devices().clone().unwrap_or_default();
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("device rule is valid")
    };
    rules.push(rule(LinuxDeviceType::C, None, None, "m"));
    rules.push(rule(LinuxDeviceType::B, None, None, "m"));
    for (_, major, minor) in rootfs::devices::DEFAULT_DEVICES {
        rules.push(rule(LinuxDeviceType::C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(LinuxDeviceType::C, Some(136), None, "rwm")); // /dev/pts/*
    rules.push(rule(LinuxDeviceType::C, Some(5), Some(2), "rwm")); // /dev/ptmx
                                                                   // The nodes of `linux.devices` are made in the container, but what it may do with them is
                                                                   // the spec's rules' to say (runc's rule): an allow rule here would make a device the spec
                                                                   // allows read-only (a CRI device with permissions "r") writable.
    res.set_devices(Some(rules));
    res
}

pub fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    atomic_file::replace(path, pid.to_string().as_bytes(), 0o644)
        .map_err(|e| RuntimeError::io("write pid file", path, e))
}

/// Undoes a half-done `create`: kills the processes it forked, removes the cgroup and the
/// container directory.
struct Cleanup {
    dir: PathBuf,
    cgroup: Option<Box<dyn CgroupManager>>,
    pids: Vec<Pid>,
    /// The rootfs of a container in the host's mount namespace, and what was mounted there.
    host_mount_ns: Option<(PathBuf, HostMountNs)>,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in self.pids.iter().rev() {
            let _ = kill(*pid, Signal::SIGKILL);
            // Only stage 1 is our child; waiting on init (a grandchild) fails harmlessly.
            let _ = waitpid(*pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(Signal::SIGKILL);
            let _ = cg.remove();
        }
        if let Some((rootfs, before)) = &self.host_mount_ns {
            let _ = host_mount_ns::unmount_rootfs(rootfs, before.rootfs_mounts_before);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
