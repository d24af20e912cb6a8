//! Fault injection for restart-safety tests: with `BERTHD_CRASH_AT=<point>` in its
//! environment, berthd kills itself with SIGKILL when it reaches that named point of a
//! multi-step RPC — as `kill -9` would at the worst moment — so a test can check that the next
//! berthd sweeps (or completes) what was half done. Without the variable it does nothing.

use std::sync::OnceLock;

/// The environment variable naming the point.
pub const ENV: &str = "BERTHD_CRASH_AT";

/// RunPodSandbox: the pod is attached to its network (netns pinned, CNI ADD done); its pause
/// already runs (its shim starts it beside the ADD).
pub const SANDBOX_NETWORK_ATTACHED: &str = "sandbox-network-attached";
/// RunPodSandbox: the pause runs; its record is not written yet.
pub const SANDBOX_PAUSE_STARTED: &str = "sandbox-pause-started";
/// CreateContainer: the rootfs snapshot is mounted.
pub const CONTAINER_ROOTFS_MOUNTED: &str = "container-rootfs-mounted";
/// CreateContainer, in a pod with a user namespace: the image's layers are bound idmapped on the
/// container's scratch dir; the overlay is not mounted yet.
pub const CONTAINER_LAYERS_IDMAPPED: &str = "container-layers-idmapped";
/// CreateContainer, in a pod with a user namespace under a runtime that cannot idmap mounts:
/// berthd bound the volumes idmapped; the spec is not written yet.
pub const CONTAINER_VOLUMES_IDMAPPED: &str = "container-volumes-idmapped";
/// CreateContainer: the shim created the container; its record is not written yet.
pub const CONTAINER_SHIM_CREATED: &str = "container-shim-created";

/// Dies here if told to.
pub fn reached(point: &'static str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if wanted.as_deref() == Some(point) {
        tracing::error!(point, "{ENV}: crashing on purpose");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
