//! Where berth and containerd legitimately differ, and the comparison of the two runtimes'
//! observations.

use crate::Obs;

/// Why berth's value differs from containerd's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Both are right (the reason is in the text).
    Legit(&'static str),
}

/// Observations where berth and containerd differ: (key, berth's value, containerd's value,
/// why); a key `*x` stands for every key ending in `x`. Everything else must be equal.
pub const DIFFERENCES: &[(&str, &str, &str, Why)] = &[
    (
        "exec.exited container",
        "error FailedPrecondition",
        "error Unknown",
        Why::Legit("ExecSync in a container that is not running is a failed precondition; containerd wraps it in a plain error (Unknown)"),
    ),
    (
        "exec.missing binary",
        "error Internal",
        "error Unknown",
        Why::Legit("both fail the call (the runtime could not start the process); containerd does not map the OCI runtime's error to a code"),
    ),
    (
        "out.reopen log of an exited container",
        "FailedPrecondition",
        "Unknown",
        Why::Legit("there is no running container to reopen the log of; containerd answers with a plain error (Unknown)"),
    ),
    (
        "privileged.create in an unprivileged pod",
        "InvalidArgument",
        "Unknown",
        Why::Legit("both refuse a privileged container in a sandbox that is not privileged; berth says it is an invalid argument, containerd answers with a plain error"),
    ),
    (
        "pod.runtime_handler",
        "berth",
        "",
        Why::Legit("berth names the handler it used for the default (as CRI-O does); containerd echoes the requested, empty, name"),
    ),
    (
        "*.mount /sys/fs/cgroup",
        "tmpfs ro,nosuid,nodev,noexec",
        "tmpfs rw,nosuid,nodev,noexec",
        Why::Legit("the spec asks for a read-only cgroup mount; runc leaves the tmpfs that holds the hierarchies writable, berth makes it read-only too"),
    ),
    (
        "*.mount /sys/fs/cgroup/unified",
        "cgroup2 ro,nosuid,nodev,noexec",
        "<missing>",
        Why::Legit("on a v1-hybrid host berth also shows the (read-only) cgroup2 hierarchy, as the host has it; runc 1.1 mounts only the v1 controllers"),
    ),
    (
        "stats.list for the pod",
        "1 entries",
        "4 entries",
        Why::Legit("the CRI documents ListContainerStats as the stats of running containers; containerd also lists exited ones (the kubelet drops those itself)"),
    ),
    (
        "stats.pod",
        "cpu=true memory=true network=true process=true containers=1",
        "cpu=true memory=true network=true process=true containers=4",
        Why::Legit("as for ListContainerStats: berth reports the pod's running containers, containerd also its exited ones"),
    ),
    (
        "unknown.StopPodSandbox",
        "OK",
        "NotFound",
        Why::Legit("the CRI documents StopPodSandbox as idempotent; berth treats an unknown sandbox as already stopped, containerd answers NotFound (which the kubelet also takes as done)"),
    ),
    (
        "unknown.StopContainer",
        "OK",
        "NotFound",
        Why::Legit("StopContainer is idempotent (the CRI; critest expects success): berth and containerd 2.x answer OK for an unknown container, the containerd 1.6 these machines have NotFound"),
    ),
];

/// Prints both maps side by side and asserts they agree, except for [`DIFFERENCES`], where
/// each side must show its own documented value.
pub fn compare(berth: &Obs, ctrd: &Obs) {
    let mut keys: Vec<&String> = berth.keys().chain(ctrd.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut problems = Vec::new();
    for k in keys {
        let b = berth.get(k).map_or("<missing>", String::as_str);
        let c = ctrd.get(k).map_or("<missing>", String::as_str);
        if let Some((_, eb, ec, why)) = DIFFERENCES.iter().find(|d| {
            d.0 == k.as_str()
                || d.0
                    .strip_prefix('*')
                    .is_some_and(|suffix| k.ends_with(suffix))
        }) {
            let (berth_ok, containerd_ok) = match why {
                Why::Legit(_) => (b == *eb, c == *ec),
            };
            eprintln!("~ {k}: berth {b:?} | containerd {c:?} ({why:?})");
            if !berth_ok || !containerd_ok {
                problems.push(format!(
                    "{k}: expected berth {eb:?} and containerd {ec:?} ({why:?}), got {b:?} and {c:?}"
                ));
            }
        } else if b == c {
            eprintln!("= {k}: {b:?}");
        } else {
            eprintln!("! {k}: berth {b:?} | containerd {c:?}");
            problems.push(format!("{k}: berth {b:?} != containerd {c:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "berth and containerd differ:\n{}",
        problems.join("\n")
    );
}
