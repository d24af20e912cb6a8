//! The scenario's security contexts, as the kubelet sends them: a restricted container (a
//! user, groups, read-only rootfs, no_new_privs, all capabilities dropped but one, seccomp
//! RuntimeDefault, the kubelet's masked and read-only paths) and what it sees of itself; a
//! privileged container in a pod that is not.

use crate::observe::*;
use crate::side::*;
use crate::*;

/// The kubelet's default masked paths (pkg/securitycontext).
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The kubelet's default read-only paths.
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs the restricted container and records what it sees (leaving it running: the pod's
/// stop takes it), then asks for a privileged one.
pub async fn security(side: &mut Side<'_>, pod: &str) {
    let mut restricted = container_config(side, "restricted", "exec sleep 300");
    if let Some(sc) = restricted
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.run_as_group = Some(cri::Int64Value { value: 3000 });
        sc.supplemental_groups = vec![4000];
        sc.readonly_rootfs = true;
        sc.no_new_privs = true;
        sc.capabilities = Some(cri::Capability {
            drop_capabilities: vec!["ALL".into()],
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        });
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        sc.masked_paths = strings(MASKED);
        sc.readonly_paths = strings(READONLY);
    }
    let restricted = create(side, pod, restricted).await;
    start(side, &restricted).await;
    let s = status(side, &restricted).await;
    side.rec("restricted.state", state_name(s.state));
    sees(side, "restricted", &restricted).await;
    exec(
        side,
        "restricted.write rootfs",
        &restricted,
        &["sh", "-c", "echo x > /x"],
        10,
    )
    .await;
    exec(
        side,
        "restricted.read /proc/kcore",
        &restricted,
        &["cat", "/proc/kcore"],
        10,
    )
    .await;
    exec(
        side,
        "restricted.write /proc/sys",
        &restricted,
        &["sh", "-c", "echo x > /proc/sys/kernel/hostname"],
        10,
    )
    .await;

    let mut privileged = container_config(side, "privileged", "exec sleep 300");
    if let Some(sc) = privileged
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.privileged = true;
    }
    // The kubelet marks the sandbox privileged when a container is; this one is not.
    let r = side
        .rt()
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_owned(),
            config: Some(privileged),
            sandbox_config: Some(pod_config(side)),
        })
        .await;
    side.rec("privileged.create in an unprivileged pod", code(&r));
}

/// Records `id`, the security lines of /proc/self/status and the mounts.
async fn sees(side: &mut Side<'_>, name: &str, id: &str) {
    exec(side, &format!("{name}.id"), id, &["id"], 10).await;
    let st = exec(side, "raw", id, &["cat", "/proc/self/status"], 10).await;
    side.rec(&format!("{name}.security"), proc_status_security(&st));
    let m = exec(side, "raw", id, &["cat", "/proc/self/mounts"], 10).await;
    side.obs.remove("raw");
    for (point, view) in mounts_view(&m) {
        side.rec(&format!("{name}.mount {point}"), view);
    }
}
