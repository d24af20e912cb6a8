//! Stage 1: the first forked process. It enters the namespaces (joining, then creating the
//! user namespace while the runtime writes its maps, then the rest) and forks the process
//! that really lives in them, because a new PID (or time) namespace only applies to children.

use nix::unistd::{setresgid, setresuid, ForkResult, Gid, Uid};

use super::namespaces::NamespacePlan;
use super::sync::{SyncSocket, ToChild, ToParent};
use crate::error::{Result, RuntimeError};
use crate::sys;

/// Reports `err` to the runtime and ends the calling child.
pub fn fail(sync: &SyncSocket, stage: &str, err: &RuntimeError) -> ! {
    let _ = sync.send(&ToParent::Error {
        stage: stage.to_owned(),
        message: err.to_string(),
    });
    sys::exit_child(1)
}

fn expect(sync: &SyncSocket, what: &str, pred: fn(&ToChild) -> bool) -> Result<()> {
    match sync.recv::<ToChild>()? {
        Some(msg) if pred(&msg) => Ok(()),
        other => Err(RuntimeError::Init {
            id: String::new(),
            stage: what.to_owned(),
            message: format!("unexpected message from the runtime: {other:?}"),
        }),
    }
}

/// Runs stage 1 and forks `child`, which must not return. Never returns itself.
pub fn run(
    sync: SyncSocket,
    ns: &NamespacePlan,
    child: impl FnOnce(SyncSocket) -> std::convert::Infallible,
) -> ! {
    let result = (|| -> Result<ForkResult> {
        expect(&sync, "wait for the cgroup", |m| matches!(m, ToChild::Go))?;
        ns.join_all()?;
        ns.enter_root()?;
        if ns.joins(nix::sched::CloneFlags::CLONE_NEWUSER) {
            // The host's root is not mapped in a joined user namespace (a pod's): as it, init
            // could not create files on the filesystems mounted there (EOVERFLOW). Become the
            // namespace's root, when it has one, as runc does.
            let _ = setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
            let _ = setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
        }
        if ns.new_user {
            ns.unshare_user()?;
            sync.send(&ToParent::UsernsCreated)?;
            expect(&sync, "wait for the user namespace maps", |m| {
                matches!(m, ToChild::UsernsMapped)
            })?;
            // Become root of the new namespace (mapped by now) for everything that follows.
            setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(|e| RuntimeError::sys("setgid 0 in the new user namespace", e))?;
            setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(|e| RuntimeError::sys("setuid 0 in the new user namespace", e))?;
        }
        ns.unshare_rest()?;
        sys::fork().map_err(|e| RuntimeError::sys("fork the container process", e))
    })();
    match result {
        Ok(ForkResult::Child) => match child(sync) {},
        Ok(ForkResult::Parent { child }) => {
            let _ = sync.send(&ToParent::ChildPid {
                pid: child.as_raw(),
            });
            sys::exit_child(0)
        }
        Err(e) => fail(&sync, "namespaces", &e),
    }
}
