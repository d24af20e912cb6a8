//! The container's init process (and the process `exec` starts): everything between the
//! namespaces and execve.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxSeccomp, Process, Spec};

use super::stage1::fail;
use super::sync::{SyncSocket, ToChild, ToParent};
use super::{apparmor, capabilities, console, env_bytes, fds, rlimits, seccomp, user};
use crate::error::{Result, RuntimeError};
use crate::hooks::{self, HookKind};
use crate::rootfs::{self, paths, MountEnv, RootDir};
use crate::sys;

/// Everything init needs, prepared by the runtime before forking.
#[derive(Debug)]
pub struct InitConfig {
    pub id: String,
    /// The bundle directory (for the state the startContainer hooks get).
    pub bundle: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
    pub mount_env: MountEnv,
    pub no_pivot: bool,
    pub console_socket: Option<OwnedFd>,
    /// O_PATH descriptor of the exec FIFO (reopened for writing through /proc/self/fd).
    pub fifo: OwnedFd,
    pub preserve_fds: u32,
    /// The container has a UTS namespace of its own (new or joined), so it may set a hostname.
    pub own_uts: bool,
    /// The container has a mount namespace of its own (new or joined); without one, its
    /// mounts are made in the host's and it is entered with chroot.
    pub own_mount_ns: bool,
    pub in_new_userns: bool,
}

/// A process ready to exec.
struct Prepared {
    exe: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    /// Seccomp still to load right before execve (with no_new_privileges).
    late_seccomp: Option<LinuxSeccomp>,
}

/// Init's body. Never returns: it execs the user process or exits after reporting an error.
pub fn run(mut cfg: InitConfig, sync: SyncSocket) -> Infallible {
    let prepared = match setup(&mut cfg, &sync) {
        Ok(p) => p,
        Err(e) => fail(&sync, "init", &e),
    };
    if let Err(e) = sync.send(&ToParent::Created) {
        fail(&sync, "init", &e);
    }
    // Wait for `start`: opening the FIFO for writing blocks until start opens it for reading.
    let fifo_path = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&cfg.fifo)
    );
    // The write end stays open (O_CLOEXEC) until execve: `start` reads the FIFO to EOF, so it
    // returns — and runs poststart — only after the startContainer hooks, as with runc.
    let result = (|| -> Result<OwnedFd> {
        let fifo = open(
            Path::new(&fifo_path),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RuntimeError::sys("open the exec fifo", e))?;
        nix::unistd::write(&fifo, b"0").map_err(|e| RuntimeError::sys("write the exec fifo", e))?;
        drop(cfg.fifo);
        let state = oci_state_for_hooks(&cfg.id, &cfg.bundle, &cfg.spec);
        hooks::run(
            HookKind::StartContainer,
            &HookKind::StartContainer.of(&cfg.spec),
            &state,
        )?;
        Ok(fifo)
    })();
    let _fifo_open_until_exec = match result {
        Ok(fifo) => fifo,
        Err(e) => {
            eprintln!("berth-runtime init: {e}");
            sys::exit_child(1)
        }
    };
    exec(prepared)
}

/// The state hooks inside the container get (the runtime's view of the PID is not known here,
/// so it is the container's own).
fn oci_state_for_hooks(id: &str, bundle: &Path, spec: &Spec) -> String {
    serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": "created",
        "pid": std::process::id(),
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    })
    .to_string()
}

fn wait_for(sync: &SyncSocket) -> Result<ToChild> {
    sync.recv::<ToChild>()?.ok_or_else(|| RuntimeError::Init {
        id: String::new(),
        stage: "init".into(),
        message: "the runtime went away".into(),
    })
}

fn setup(cfg: &mut InitConfig, sync: &SyncSocket) -> Result<Prepared> {
    let spec = cfg.spec.clone();
    let process = spec.process().clone().ok_or(RuntimeError::InvalidSpec {
        field: "process",
        reason: "missing".into(),
    })?;
    if !matches!(wait_for(sync)?, ToChild::Proceed) {
        return Err(RuntimeError::sys(
            "wait for the runtime",
            nix::errno::Errno::EPROTO,
        ));
    }
    nix::unistd::setsid().map_err(|e| RuntimeError::sys("setsid", e))?;

    rootfs::prepare(
        &spec,
        &cfg.rootfs,
        &mut cfg.mount_env,
        cfg.in_new_userns,
        cfg.own_mount_ns,
    )?;

    sync.send(&ToParent::ReadyForHooks)?;
    let state = match wait_for(sync)? {
        ToChild::HooksDone { state } => state,
        other => {
            return Err(RuntimeError::Init {
                id: cfg.id.clone(),
                stage: "hooks".into(),
                message: format!("unexpected {other:?}"),
            })
        }
    };
    hooks::run(
        HookKind::CreateContainer,
        &HookKind::CreateContainer.of(&spec),
        &state,
    )?;

    rootfs::switch_root(&cfg.rootfs, cfg.no_pivot, cfg.own_mount_ns)?;

    if process.terminal().unwrap_or(false) {
        let socket = cfg.console_socket.take().ok_or(RuntimeError::InvalidSpec {
            field: "process.terminal",
            reason: "a terminal needs --console-socket".into(),
        })?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup(&socket, size, true)?;
    }
    set_hostname(&spec, cfg.own_uts)?;
    write_sysctls(&spec)?;
    let root = RootDir::open(Path::new("/"))?;
    if let Some(linux) = spec.linux() {
        paths::make_readonly(&root, linux.readonly_paths().as_deref().unwrap_or_default())?;
        paths::mask(&root, linux.masked_paths().as_deref().unwrap_or_default())?;
    }
    rootfs::finalize(&spec)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let env_bytes = env_bytes::from_spec(&spec)?;
    prepare_process(
        &process,
        seccomp,
        cfg.preserve_fds,
        env_bytes.as_ref(),
        sync,
    )
}

fn set_hostname(spec: &Spec, own_uts: bool) -> Result<()> {
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
    if (hostname.is_some() || domainname.is_some()) && !own_uts {
        return Err(RuntimeError::InvalidSpec {
            field: "hostname",
            reason: "setting a hostname or domainname needs a UTS namespace of the container's own"
                .into(),
        });
    }
    if let Some(h) = hostname {
        nix::unistd::sethostname(&h)
            .map_err(|e| RuntimeError::sys(format!("sethostname {h}"), e))?;
    }
    if let Some(d) = domainname {
        fs::write("/proc/sys/kernel/domainname", &d)
            .map_err(|e| RuntimeError::io("set domainname", "/proc/sys/kernel/domainname", e))?;
    }
    Ok(())
}

fn write_sysctls(spec: &Spec) -> Result<()> {
    let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else {
        return Ok(());
    };
    for (key, value) in sysctls {
        if key.contains("..") || key.starts_with('/') {
            return Err(RuntimeError::InvalidSpec {
                field: "linux.sysctl",
                reason: format!("invalid key {key:?}"),
            });
        }
        sysctl_namespace_check(spec, &key)?;
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, value.as_bytes())
            .map_err(|e| RuntimeError::io("write sysctl", path, e))?;
    }
    Ok(())
}

/// A sysctl is written only in a namespace of the container's own (as runc validates): net.*
/// needs a network namespace, IPC keys an IPC one, kernel.{host,domain}name a UTS one; others
/// are not namespaced and would change the host.
fn sysctl_namespace_check(spec: &Spec, key: &str) -> Result<()> {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    ];
    let ipc = ipc.contains(&key) || key.starts_with("kernel.shm") || key.starts_with("fs.mqueue.");
    let needs = if key.starts_with("net.") {
        T::Network
    } else if ipc {
        T::Ipc
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        T::Uts
    } else {
        return Err(RuntimeError::InvalidSpec {
            field: "linux.sysctl",
            reason: format!("sysctl {key:?} is not in a separate kernel namespace"),
        });
    };
    let has = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == needs));
    if !has {
        return Err(RuntimeError::InvalidSpec {
            field: "linux.sysctl",
            reason: format!("sysctl {key:?} is not allowed in the host's {needs:?} namespace"),
        });
    }
    Ok(())
}

/// Sets the process's oom_score_adj (its children inherit it); nothing to do when it already
/// has the value. Stage 1 calls this before it enters any namespace, as runc's nsexec does:
/// inside a new user namespace `/proc/self/oom_score_adj` belongs to the host's root, which is
/// not mapped there, so the write fails with EACCES.
pub fn set_oom_score_adj(process: &Process) -> Result<()> {
    let Some(adj) = process.oom_score_adj() else {
        return Ok(());
    };
    let path = "/proc/self/oom_score_adj";
    if fs::read_to_string(path).is_ok_and(|now| now.trim() == adj.to_string()) {
        return Ok(());
    }
    fs::write(path, adj.to_string()).map_err(|e| RuntimeError::io("set oom_score_adj", path, e))
}

/// The process attributes, in runc's order: AppArmor (from execve on), oom_score_adj and
/// rlimits, no_new_privileges,
/// seccomp (now if it needs privileges, else last), bounding set, user switch keeping
/// capabilities, the capability sets, umask, cwd (checked), environment, executable lookup.
/// First of all, every inherited descriptor beyond stdio and the preserved ones is marked
/// close-on-exec, before a seccomp filter that might deny the calls it takes is loaded
/// (everything opened afterwards is opened close-on-exec).
fn prepare_process(
    process: &Process,
    seccomp: Option<LinuxSeccomp>,
    preserve_fds: u32,
    env_bytes: Option<&env_bytes::EnvBytes>,
    sync: &SyncSocket,
) -> Result<Prepared> {
    fds::cloexec_from(3 + preserve_fds)
        .map_err(|e| RuntimeError::sys("mark inherited descriptors close-on-exec", e))?;
    apparmor::apply_on_exec(process.apparmor_profile().as_deref())?;
    set_oom_score_adj(process)?;
    rlimits::apply(process.rlimits().as_deref().unwrap_or_default())?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    if nnp {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| RuntimeError::sys("set no_new_privs", e))?;
    }
    let mut late_seccomp = None;
    if let Some(filter) = seccomp {
        if seccomp::uses_notify(&filter) {
            // The agent's socket is a host path: the runtime forwards the listener. This needs
            // the runtime still waiting, so a notify filter loads now rather than last.
            let listener =
                seccomp::load_with_notify(&filter)?.ok_or(RuntimeError::InvalidSpec {
                    field: "linux.seccomp",
                    reason: "notify filter returned no listener".into(),
                })?;
            sync.send_with_fds(&ToParent::SeccompListener, &[listener.as_raw_fd()])?;
            drop(listener);
            match wait_for(sync)? {
                ToChild::SeccompListenerSent => {}
                other => {
                    return Err(RuntimeError::Init {
                        id: String::new(),
                        stage: "seccomp".into(),
                        message: format!("unexpected {other:?}"),
                    })
                }
            }
        } else if nnp {
            late_seccomp = Some(filter);
        } else {
            seccomp::load(&filter)?;
        }
    }
    if let Some(caps) = process.capabilities() {
        capabilities::drop_bounding(caps)?;
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| RuntimeError::sys("set keep-caps", e))?;
    user::switch(process.user())?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| RuntimeError::sys("clear keep-caps", e))?;
    if let Some(caps) = process.capabilities() {
        capabilities::apply(caps)?;
    }
    user::set_umask(process.user());
    user::enter_cwd(process.cwd())?;

    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        let home = user::home_dir(process.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or(RuntimeError::InvalidSpec {
        field: "process.args",
        reason: "empty".into(),
    })?;
    let exe = user::find_executable(arg0, &env)?;
    let cstr = |s: String| {
        CString::new(s).map_err(|_| RuntimeError::InvalidSpec {
            field: "process",
            reason: "NUL byte in args or env".into(),
        })
    };
    Ok(Prepared {
        exe,
        args: args.into_iter().map(cstr).collect::<Result<_>>()?,
        env: env_bytes::environ(env, env_bytes)?,
        late_seccomp,
    })
}

/// Loads a late seccomp filter and execs. Never returns.
fn exec(p: Prepared) -> Infallible {
    if let Some(filter) = &p.late_seccomp {
        if let Err(e) = seccomp::load(filter) {
            eprintln!("berth-runtime: seccomp: {e}");
            sys::exit_child(1);
        }
    }
    if let Err(e) = sys::default_sigpipe() {
        eprintln!("berth-runtime: reset SIGPIPE: {e}");
        sys::exit_child(1);
    }
    let err = nix::unistd::execve(&p.exe, &p.args, &p.env).unwrap_err();
    eprintln!("berth-runtime: exec {:?}: {err}", p.exe);
    sys::exit_child(127)
}

/// The body of the process `exec` starts (after stage 1 joined the namespaces): set up the
/// process, report readiness, exec. The sync socket is close-on-exec, so the runtime sees EOF
/// once execve succeeded.
pub fn run_exec(
    process: Process,
    seccomp: Option<LinuxSeccomp>,
    env_bytes: Option<env_bytes::EnvBytes>,
    console_socket: Option<OwnedFd>,
    preserve_fds: u32,
    sync: SyncSocket,
) -> Infallible {
    let result = (|| -> Result<Prepared> {
        if !matches!(wait_for(&sync)?, ToChild::Proceed) {
            return Err(RuntimeError::sys(
                "wait for the runtime",
                nix::errno::Errno::EPROTO,
            ));
        }
        if process.terminal().unwrap_or(false) {
            nix::unistd::setsid().map_err(|e| RuntimeError::sys("setsid", e))?;
            let socket = console_socket.as_ref().ok_or(RuntimeError::InvalidSpec {
                field: "process.terminal",
                reason: "a terminal needs a console socket".into(),
            })?;
            let size = process
                .console_size()
                .as_ref()
                .map(|b| (b.height() as u16, b.width() as u16));
            console::setup(socket, size, false)?;
        }
        prepare_process(&process, seccomp, preserve_fds, env_bytes.as_ref(), &sync)
    })();
    match result {
        Ok(p) => {
            drop(console_socket);
            exec(p)
        }
        Err(e) => fail(&sync, "exec", &e),
    }
}
