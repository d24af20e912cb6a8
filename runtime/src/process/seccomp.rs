//! Seccomp: turn the spec's `linux.seccomp` into a libseccomp filter and load it, the way runc's
//! `libcontainer/seccomp` does.
//!
//! - Syscall names unknown to libseccomp (newer than it, or absent on this arch) are skipped with
//!   a debug log, like runc: profiles list syscalls of every kernel and arch.
//! - Unknown actions, operators, architectures and flags cannot get here: `oci-spec` rejects them
//!   while parsing `config.json` (its types are enums), with an error naming the value.
//! - A rule whose conditions share an argument index is split into one rule per condition (what
//!   runc does): libseccomp cannot express two comparisons of one argument in one rule.
//! - The filter never sets `no_new_privs` itself (runc does the same): the caller applies
//!   `process.noNewPrivileges`. Without it, loading needs CAP_SYS_ADMIN, so load before dropping
//!   capabilities in that case.
//! - `SCMP_ACT_NOTIFY`: [`load_with_notify`] returns the listener fd, and [`send_listener_fd`]
//!   hands it with the container state to the agent at `listenerPath` (`SCM_RIGHTS`). [`load`]
//!   refuses notify filters since it cannot send the state.
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use libseccomp::error::SeccompError as LibError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::{
    Arch, ContainerProcessState, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};

/// The name of the fd in [`ContainerProcessState::fds`] sent to a seccomp agent.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// Syscalls have at most six arguments.
const MAX_ARGS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {action} cannot be the default action")]
    InvalidDefaultAction { action: LinuxSeccompAction },
    #[error("seccomp: errno return {value} of {action} is out of range (0..=65535)")]
    ErrnoOutOfRange {
        action: LinuxSeccompAction,
        value: u32,
    },
    #[error("seccomp: create a filter with default action {action}: {source}")]
    NewFilter {
        action: LinuxSeccompAction,
        source: LibError,
    },
    #[error("seccomp: add architecture {arch}: {source}")]
    AddArch { arch: Arch, source: LibError },
    #[error("seccomp: set filter flag {flag}: {source}")]
    SetFlag { flag: String, source: LibError },
    #[error("seccomp: syscall {syscall}: argument index {index} out of range (0..=5)")]
    ArgIndex { syscall: String, index: usize },
    #[error("seccomp: syscall {syscall}: add rule with action {action}: {source}")]
    AddRule {
        syscall: String,
        action: LinuxSeccompAction,
        source: LibError,
    },
    #[error("seccomp: syscall {syscall}: SCMP_ACT_NOTIFY cannot be used for it (the runtime needs it to hand the listener over)")]
    NotifyForbidden { syscall: String },
    #[error("seccomp: SCMP_ACT_NOTIFY is used but linux.seccomp.listenerPath is not set")]
    NotifyWithoutListener,
    #[error("seccomp: the filter uses SCMP_ACT_NOTIFY: the listener fd must be sent with the container state; use load_with_notify and send_listener_fd")]
    NotifyNeedsState,
    #[error("seccomp: load the filter: {source}")]
    Load { source: LibError },
    #[error("seccomp: get the notify listener fd: {source}")]
    NotifyFd { source: LibError },
    #[error("seccomp: serialize the container state for {path}: {source}")]
    EncodeState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("seccomp: send the listener fd to {path}: {source}")]
    SendListener {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that `seccomp` compiles into a filter (actions, arches, flags, rules), without loading.
pub fn validate(seccomp: &LinuxSeccomp) -> Result<(), SeccompError> {
    build_filter(seccomp).map(drop)
}

/// Compiles and loads the filter into the calling thread (and, with TSYNC, all its threads).
///
/// Fails with [`SeccompError::NotifyNeedsState`] before loading if a rule uses
/// `SCMP_ACT_NOTIFY`; use [`load_with_notify`] for those.
pub fn load(seccomp: &LinuxSeccomp) -> Result<(), SeccompError> {
    if uses_notify(seccomp) {
        return Err(SeccompError::NotifyNeedsState);
    }
    build_filter(seccomp)?
        .load()
        .map_err(|source| SeccompError::Load { source })
}

/// Compiles and loads the filter; if it uses `SCMP_ACT_NOTIFY`, returns the listener fd, to be
/// passed to the agent with [`send_listener_fd`] (by the runtime's parent if the listener path is
/// not reachable from inside the container).
pub fn load_with_notify(seccomp: &LinuxSeccomp) -> Result<Option<OwnedFd>, SeccompError> {
    let filter = build_filter(seccomp)?;
    filter
        .load()
        .map_err(|source| SeccompError::Load { source })?;
    if !uses_notify(seccomp) {
        return Ok(None);
    }
    let raw = filter
        .get_notify_fd()
        .map_err(|source| SeccompError::NotifyFd { source })?;
    // SAFETY: libseccomp returned a valid open fd that it does not close until the context is
    // released (`seccomp_release` leaves the notify fd open), so we take sole ownership of it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// Connects to the seccomp agent at `listener_path` and sends `state` (JSON) with the listener
/// `fd` attached (`SCM_RIGHTS`), as the runtime spec describes for `listenerPath`.
pub fn send_listener_fd(
    listener_path: &Path,
    fd: BorrowedFd<'_>,
    state: &ContainerProcessState,
) -> Result<(), SeccompError> {
    let path = listener_path.to_path_buf();
    let json = serde_json::to_vec(state).map_err(|source| SeccompError::EncodeState {
        path: path.clone(),
        source,
    })?;
    let send = || -> std::io::Result<()> {
        let stream = UnixStream::connect(listener_path)?;
        let fds = [fd.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&json)];
        let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
        if sent != json.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {sent} of {} bytes", json.len()),
            ));
        }
        Ok(())
    };
    send().map_err(|source| SeccompError::SendListener { path, source })
}

/// True if any rule (or the default action) is `SCMP_ACT_NOTIFY`.
pub fn uses_notify(seccomp: &LinuxSeccomp) -> bool {
    seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || syscalls(seccomp)
            .iter()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Builds the libseccomp filter for `seccomp` (not loaded).
pub fn build_filter(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let default = seccomp.default_action();
    if default == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::InvalidDefaultAction { action: default });
    }
    if uses_notify(seccomp) && seccomp.listener_path().is_none() {
        return Err(SeccompError::NotifyWithoutListener);
    }
    let default_action = to_action(default, seccomp.default_errno_ret())?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|source| SeccompError::NewFilter {
            action: default,
            source,
        })?;
    let flag_err = |flag: &str| {
        let flag = flag.to_string();
        move |source| SeccompError::SetFlag { flag, source }
    };
    ctx.set_ctl_nnp(false).map_err(flag_err("no_new_privs"))?;
    for &arch in seccomp.architectures().iter().flatten() {
        ctx.add_arch(to_arch(arch))
            .map_err(|source| SeccompError::AddArch { arch, source })?;
    }
    for &flag in seccomp.flags().iter().flatten() {
        let name = flag.to_string();
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(flag_err(&name))?;
    }
    if syscalls(seccomp).len() > 8 {
        // A binary tree instead of a linear list, as runc does for long profiles.
        ctx.set_ctl_optimize(2).map_err(flag_err("optimize"))?;
    }
    for rule in syscalls(seccomp) {
        add_rule(&mut ctx, rule, default_action)?;
    }
    Ok(ctx)
}

fn syscalls(seccomp: &LinuxSeccomp) -> &[LinuxSyscall] {
    seccomp.syscalls().as_deref().unwrap_or_default()
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
) -> Result<(), SeccompError> {
    let action = to_action(rule.action(), rule.errno_ret())?;
    let args: &[LinuxSeccompArg] = rule.args().as_deref().unwrap_or_default();
    for name in rule.names() {
        if let Some(arg) = args.iter().find(|a| a.index() >= MAX_ARGS) {
            return Err(SeccompError::ArgIndex {
                syscall: name.clone(),
                index: arg.index(),
            });
        }
        if action == ScmpAction::Notify && name == "write" {
            return Err(SeccompError::NotifyForbidden {
                syscall: name.clone(),
            });
        }
        if action == default_action {
            // Redundant, and libseccomp refuses it.
            continue;
        }
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            tracing::debug!(syscall = %name, "seccomp: unknown syscall, rule skipped");
            continue;
        };
        let err = |source| SeccompError::AddRule {
            syscall: name.clone(),
            action: rule.action(),
            source,
        };
        let conds: Vec<ScmpArgCompare> = args.iter().map(to_condition).collect();
        let mut per_index = [0usize; MAX_ARGS];
        args.iter().for_each(|a| per_index[a.index()] += 1);
        if conds.is_empty() {
            ctx.add_rule(action, syscall).map_err(err)?;
        } else if per_index.iter().any(|&n| n > 1) {
            // libseccomp cannot AND two comparisons of one argument: one rule per condition.
            for cond in &conds {
                ctx.add_rule_conditional(action, syscall, std::slice::from_ref(cond))
                    .map_err(err)?;
            }
        } else {
            ctx.add_rule_conditional(action, syscall, &conds)
                .map_err(err)?;
        }
    }
    Ok(())
}

fn to_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
) -> Result<ScmpAction, SeccompError> {
    let ret = || -> Result<u16, SeccompError> {
        match errno_ret {
            None => Ok(libc::EPERM as u16),
            Some(v) => {
                u16::try_from(v).map_err(|_| SeccompError::ErrnoOutOfRange { action, value: v })
            }
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(ret()?)),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    })
}

fn to_condition(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // The spec's `value` is the mask and `valueTwo` the value compared (runc, libseccomp).
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let datum = arg.value_two().unwrap_or(0);
            return ScmpArgCompare::new(
                arg.index() as u32,
                ScmpCompareOp::MaskedEqual(arg.value()),
                datum,
            );
        }
    };
    ScmpArgCompare::new(arg.index() as u32, op, arg.value())
}

fn to_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// The architectures the linked libseccomp accepts in a filter (for `features`).
pub fn supported_archs() -> Vec<Arch> {
    use Arch::*;
    let all = [
        ScmpArchAarch64,
        ScmpArchArm,
        ScmpArchLoongarch64,
        ScmpArchM68k,
        ScmpArchMips,
        ScmpArchMips64,
        ScmpArchMips64n32,
        ScmpArchMipsel,
        ScmpArchMipsel64,
        ScmpArchMipsel64n32,
        ScmpArchParisc,
        ScmpArchParisc64,
        ScmpArchPpc,
        ScmpArchPpc64,
        ScmpArchPpc64le,
        ScmpArchRiscv64,
        ScmpArchS390,
        ScmpArchS390x,
        ScmpArchSh,
        ScmpArchSheb,
        ScmpArchX32,
        ScmpArchX86,
        ScmpArchX86_64,
    ];
    all.into_iter()
        .filter(|&a| {
            ScmpFilterContext::new(ScmpAction::Allow)
                .and_then(|mut ctx| ctx.add_arch(to_arch(a)).map(drop))
                .is_ok()
        })
        .collect()
}

/// The actions [`build_filter`] understands (for `features`).
pub fn supported_actions() -> Vec<LinuxSeccompAction> {
    use LinuxSeccompAction::*;
    vec![
        ScmpActAllow,
        ScmpActErrno,
        ScmpActKill,
        ScmpActKillProcess,
        ScmpActKillThread,
        ScmpActLog,
        ScmpActNotify,
        ScmpActTrace,
        ScmpActTrap,
    ]
}

/// The argument operators [`build_filter`] understands (for `features`).
pub fn supported_operators() -> Vec<LinuxSeccompOperator> {
    use LinuxSeccompOperator::*;
    vec![
        ScmpCmpEq,
        ScmpCmpGe,
        ScmpCmpGt,
        ScmpCmpLe,
        ScmpCmpLt,
        ScmpCmpMaskedEq,
        ScmpCmpNe,
    ]
}

/// The filter flags berth knows, and whether the running kernel (and libseccomp) accepts them.
pub fn filter_flags() -> Vec<(LinuxSeccompFilterFlag, bool)> {
    use LinuxSeccompFilterFlag::*;
    // Kernel values from linux/seccomp.h.
    let flags = [
        (SeccompFilterFlagTsync, 1u32 << 0),
        (SeccompFilterFlagLog, 1 << 1),
        (SeccompFilterFlagSpecAllow, 1 << 2),
        (SeccompFilterFlagWaitKillableRecv, 1 << 5),
    ];
    flags
        .into_iter()
        .map(|(flag, bits)| {
            let libseccomp_ok = ScmpFilterContext::new(ScmpAction::Allow)
                .and_then(|mut ctx| match flag {
                    SeccompFilterFlagTsync => ctx.set_ctl_tsync(true).map(drop),
                    SeccompFilterFlagLog => ctx.set_ctl_log(true).map(drop),
                    SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true).map(drop),
                    SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true).map(drop),
                })
                .is_ok();
            (flag, libseccomp_ok && kernel_accepts_flag(bits))
        })
        .collect()
}

/// Probes `seccomp(SECCOMP_SET_MODE_FILTER, flag, NULL)`: the kernel checks the flags before it
/// reads the (null) program, so EFAULT means "flag known", EINVAL "unknown". Nothing is loaded.
fn kernel_accepts_flag(flag: u32) -> bool {
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: a null filter pointer is never dereferenced by the kernel successfully: the call
    // fails with EFAULT (flag known) or EINVAL (flag unknown) and changes no state.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flag),
            std::ptr::null::<libc::c_void>(),
        )
    };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::process::Command;
    use std::time::{Duration, Instant};

    const HELPER_ENV: &str = "BERTH_SECCOMP_TEST_HELPER";
    const SOCK_ENV: &str = "BERTH_SECCOMP_TEST_SOCK";

    fn parse(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).expect("seccomp JSON")
    }

    /// Runs `helper_entry` in a fresh copy of this test binary with `case` set, so the filter is
    /// loaded into a process of its own (filters cannot be removed).
    fn spawn_helper(case: &str, extra_env: &[(&str, &str)]) -> std::process::Child {
        let module = module_path!().split_once("::").expect("crate::module").1;
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                &format!("{module}::helper_entry"),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, case)
            .envs(extra_env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn helper")
    }

    fn assert_helper_ok(child: std::process::Child) {
        let out = child.wait_with_output().expect("wait helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "helper failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A syscall with integer arguments only; returns the result or the errno.
    fn raw_syscall(nr: libc::c_long, a0: u64, a1: u64) -> Result<i64, i32> {
        // SAFETY: only used with syscalls whose arguments are integers (no pointers).
        let rc = unsafe { libc::syscall(nr, a0, a1) };
        if rc < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(rc)
        }
    }

    #[test]
    fn helper_entry() {
        let Ok(case) = std::env::var(HELPER_ENV) else {
            return;
        };
        nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
        match case.as_str() {
            "mkdir" => helper_mkdir(),
            "args" => helper_args(),
            "notify" => helper_notify(),
            other => panic!("unknown helper case {other}"),
        }
    }

    fn helper_mkdir() {
        let dir = tempfile::tempdir().unwrap();
        load(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{"names":["mkdir","mkdirat","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        ))
        .expect("load");
        let err = std::fs::create_dir(dir.path().join("d")).expect_err("mkdir must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        std::fs::write(dir.path().join("f"), b"x").expect("other syscalls still work");
    }

    fn helper_args() {
        load(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getpgid"],"action":"SCMP_ACT_ERRNO","errnoRet":18,"args":[{"index":0,"value":7777,"op":"SCMP_CMP_EQ"}]},
                {"names":["getsid"],"action":"SCMP_ACT_ERRNO","errnoRet":33,"args":[{"index":0,"value":100000000,"op":"SCMP_CMP_GT"}]},
                {"names":["sched_getscheduler"],"action":"SCMP_ACT_ERRNO","errnoRet":15,
                 "args":[{"index":0,"value":983040,"valueTwo":196608,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["sched_get_priority_max"],"action":"SCMP_ACT_ERRNO","errnoRet":40,"args":[{"index":0,"value":1000,"op":"SCMP_CMP_GE"}]},
                {"names":["sched_get_priority_min"],"action":"SCMP_ACT_ERRNO","errnoRet":41,"args":[{"index":0,"value":0,"op":"SCMP_CMP_NE"}]},
                {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":45,"args":[
                    {"index":1,"value":4444,"op":"SCMP_CMP_EQ"},{"index":1,"value":4445,"op":"SCMP_CMP_EQ"}]}
            ]}"#,
        ))
        .expect("load");
        use libc::{SYS_getpgid, SYS_getpriority, SYS_getsid, SYS_sched_get_priority_max};
        use libc::{SYS_sched_get_priority_min, SYS_sched_getscheduler};
        assert_eq!(raw_syscall(SYS_getpgid, 7777, 0), Err(18));
        assert!(raw_syscall(SYS_getpgid, 0, 0).is_ok());
        assert_eq!(raw_syscall(SYS_getsid, 200_000_000, 0), Err(33));
        assert!(raw_syscall(SYS_getsid, 0, 0).is_ok());
        assert_eq!(raw_syscall(SYS_sched_getscheduler, 0x3_1234, 0), Err(15));
        assert!(raw_syscall(SYS_sched_getscheduler, 0, 0).is_ok());
        assert_eq!(raw_syscall(SYS_sched_get_priority_max, 1000, 0), Err(40));
        assert!(raw_syscall(SYS_sched_get_priority_max, 0, 0).is_ok());
        assert_eq!(raw_syscall(SYS_sched_get_priority_min, 1, 0), Err(41));
        assert!(raw_syscall(SYS_sched_get_priority_min, 0, 0).is_ok());
        // Two conditions on one index became two rules: either value matches.
        assert_eq!(raw_syscall(SYS_getpriority, 0, 4444), Err(45));
        assert_eq!(raw_syscall(SYS_getpriority, 0, 4445), Err(45));
        assert!(raw_syscall(SYS_getpriority, 0, 0).is_ok());
    }

    fn helper_notify() {
        let sock = std::env::var(SOCK_ENV).expect("socket path");
        let dir = tempfile::tempdir().unwrap();
        let seccomp = parse(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"{sock}","listenerMetadata":"berth-test",
                "syscalls":[{{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_NOTIFY"}}]}}"#
        ));
        assert!(matches!(
            load(&seccomp),
            Err(SeccompError::NotifyNeedsState)
        ));
        let fd = load_with_notify(&seccomp)
            .expect("load")
            .expect("listener fd");
        let mut state = ContainerProcessState::default();
        state.set_version("1.0.2".into());
        state.set_fds(vec![SECCOMP_FD_NAME.into()]);
        state.set_pid(std::process::id() as i32);
        state.set_metadata(seccomp.listener_metadata().clone());
        send_listener_fd(Path::new(&sock), std::os::fd::AsFd::as_fd(&fd), &state).expect("send");
        drop(fd);
        // The agent answers EXDEV for us.
        let err = std::fs::create_dir(dir.path().join("d")).expect_err("agent refuses mkdir");
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    }

    #[test]
    fn mkdir_returns_errno_ret() {
        assert_helper_ok(spawn_helper("mkdir", &[]));
    }

    #[test]
    fn argument_conditions() {
        assert_helper_ok(spawn_helper("args", &[]));
    }

    #[test]
    fn notify_sends_listener_fd_to_agent() {
        use nix::cmsg_space;
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        use std::io::IoSliceMut;

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut child = spawn_helper("notify", &[(SOCK_ENV, sock.to_str().unwrap())]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline && child.try_wait().unwrap().is_none() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    let _ = child.kill();
                    assert_helper_ok(child);
                    panic!("agent got no connection: {e}");
                }
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = cmsg_space!([std::os::fd::RawFd; 1]);
        let (len, notify_fd) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .expect("recvmsg");
            let fd = msg.cmsgs().unwrap().find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            });
            (msg.bytes, fd.expect("an fd in SCM_RIGHTS"))
        };
        // SAFETY: the fd was just received through SCM_RIGHTS and nothing else owns it.
        let notify_fd = unsafe { OwnedFd::from_raw_fd(notify_fd) };
        let state: ContainerProcessState = serde_json::from_slice(&buf[..len]).expect("state JSON");
        assert_eq!(state.fds(), &vec![SECCOMP_FD_NAME.to_string()]);
        assert_eq!(state.metadata().as_deref(), Some("berth-test"));
        assert_eq!(*state.pid(), child.id() as i32);

        let mut pfd = [PollFd::new(
            std::os::fd::AsFd::as_fd(&notify_fd),
            PollFlags::POLLIN,
        )];
        let ready = poll(&mut pfd, PollTimeout::from(20_000u16)).expect("poll");
        if ready == 0 {
            let _ = child.kill();
        }
        assert_eq!(ready, 1, "no seccomp notification within 20s");
        let req = libseccomp::ScmpNotifReq::receive(notify_fd.as_raw_fd()).expect("receive");
        let name = req.data.syscall.get_name().unwrap();
        assert!(name.starts_with("mkdir"), "notified for {name}");
        libseccomp::ScmpNotifResp::new_error(
            req.id,
            -libc::EXDEV,
            libseccomp::ScmpNotifRespFlags::empty(),
        )
        .respond(notify_fd.as_raw_fd())
        .expect("respond");
        assert_helper_ok(child);
    }

    #[test]
    fn builds_a_docker_like_profile() {
        let seccomp = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls":[
                  {"names":["read","write","openat","close","exit_group","futex","brk","mmap","munmap",
                            "rt_sigaction","definitely_not_a_syscall"],"action":"SCMP_ACT_ALLOW"},
                  {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                  {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"op":"SCMP_CMP_MASKED_EQ"}]},
                  {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[
                      {"index":0,"value":16,"op":"SCMP_CMP_EQ"},{"index":2,"value":9,"op":"SCMP_CMP_EQ"}]},
                  {"names":["ptrace"],"action":"SCMP_ACT_KILL"},
                  {"names":["reboot"],"action":"SCMP_ACT_KILL_PROCESS"},
                  {"names":["kexec_load"],"action":"SCMP_ACT_TRAP"},
                  {"names":["acct"],"action":"SCMP_ACT_LOG"},
                  {"names":["swapon"],"action":"SCMP_ACT_TRACE"},
                  {"names":["uselib"],"action":"SCMP_ACT_ERRNO","errnoRet":38}
                ]}"#,
        );
        validate(&seccomp).expect("valid");
        let filter = build_filter(&seccomp).unwrap();
        assert!(filter.get_ctl_tsync().unwrap());
        assert!(filter.get_ctl_log().unwrap());
        assert!(!filter.get_ctl_nnp().unwrap(), "nnp is the caller's job");
        assert!(filter.is_arch_present(ScmpArch::X86).unwrap());
    }

    #[test]
    fn rejects_bad_profiles() {
        let bad_index = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO",
                "args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let err = validate(&bad_index).unwrap_err();
        assert!(
            matches!(&err, SeccompError::ArgIndex { syscall, index: 6 } if syscall == "read"),
            "{err}"
        );

        let notify_default = parse(r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/x"}"#);
        assert!(matches!(
            validate(&notify_default),
            Err(SeccompError::InvalidDefaultAction { .. })
        ));

        let no_listener = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(
            validate(&no_listener),
            Err(SeccompError::NotifyWithoutListener)
        ));

        let notify_write = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x","syscalls":[{"names":["write"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(
            validate(&notify_write),
            Err(SeccompError::NotifyForbidden { .. })
        ));

        let big_errno = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#,
        );
        let err = validate(&big_errno).unwrap_err();
        assert!(err.to_string().contains("70000"), "{err}");

        // Unknown actions and operators are refused while parsing, naming the value.
        let err = serde_json::from_str::<LinuxSeccomp>(r#"{"defaultAction":"SCMP_ACT_BOGUS"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_BOGUS"), "{err}");
        let err = serde_json::from_str::<LinuxSeccomp>(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO",
                "args":[{"index":0,"value":0,"op":"SCMP_CMP_SOMETIMES"}]}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_CMP_SOMETIMES"), "{err}");
    }

    #[test]
    fn feature_lists() {
        let archs = supported_archs();
        assert!(archs.contains(&Arch::ScmpArchX86_64) && archs.contains(&Arch::ScmpArchAarch64));
        assert_eq!(supported_actions().len(), 9);
        assert_eq!(supported_operators().len(), 7);
        let flags = filter_flags();
        assert!(flags.contains(&(LinuxSeccompFilterFlag::SeccompFilterFlagTsync, true)));
    }
}
