//! Building OCI runtime specs from CRI requests, the way containerd's CRI plugin does: one for
//! a sandbox's pause container, one for each container.
//!
//! Nearly pure functions of their inputs, so every rule is unit-tested. What containerd reads
//! from the host is either passed in ([`HostInfo`], filled by [`HostInfo::probe`]) or done in
//! one clearly named place: a CRI mount's missing host directory is created and its symlinks
//! resolved (`mounts.rs`), a CRI device is stat'ed and a privileged container gets every
//! device under /dev (`devices.rs`), a Localhost seccomp profile is read (`seccomp.rs`), and the
//! CDI spec files of the CDI devices a container asks for are read (`cdi.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use cri_api::v1 as cri;

mod annotations;
mod base;
mod cdi;
mod container;
mod devices;
pub mod lsm;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod sandbox;
mod seccomp;
mod seccomp_default;
mod security;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_runtime;

pub use cdi::DEFAULT_SPEC_DIRS as CDI_DEFAULT_SPEC_DIRS;
pub use container::container_spec;
pub use namespaces::{container_userns, mappings as id_mappings, PodUserns};
pub use process::env_bytes;
pub use resources::apply as apply_resources;
pub use sandbox::sandbox_spec;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A CRI field holds a value that cannot be turned into a spec.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A user or group named by the config or the image is not in the image's files.
    #[error("{field} {name:?}: not found in the image's {file}")]
    UnknownName {
        field: &'static str,
        name: String,
        file: &'static str,
    },
    /// A host file the spec refers to could not be read (seccomp profile, device, mount source).
    #[error("{field} {path:?}: {source}")]
    Host {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A Localhost seccomp profile that is not valid JSON of the docker/OCI format.
    #[error("security_context.seccomp localhost {path:?}: {source}")]
    SeccompProfile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is not supported yet")]
    NotYet { what: &'static str },
}

/// Facts about the node that containerd looks up while building a spec.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// The node's hostname: the HOSTNAME env of containers whose pod config has none.
    pub hostname: String,
    /// The memory controller accounts swap (memory.memsw.* / memory.swap.max): only then is
    /// swap limited (to the memory limit unless memory_swap_limit_in_bytes says otherwise).
    pub swap_controller: bool,
    /// The hugetlb controller exists: hugepage limits are dropped (with no error) otherwise.
    pub hugetlb_controller: bool,
    /// cgroup v2 unified mode: non-privileged containers get a cgroup namespace.
    pub cgroup2_unified: bool,
    /// containerd's `restrict_oom_score_adj`: never ask for an oom_score_adj below this (the
    /// daemon's own), since lowering it needs CAP_SYS_RESOURCE.
    pub min_oom_score_adj: Option<i32>,
    /// The capabilities berthd holds (effective and in its bounding set): what privileged
    /// containers and "ALL" get, as containerd grants its own (`cap.Current()`). A host
    /// without one (these VMs lack CAP_SYS_RESOURCE; so do nested and kind nodes) would
    /// otherwise fail every such create with "capset: Operation not permitted".
    pub held_caps: oci_spec::runtime::Capabilities,
    /// AppArmor is enabled: profiles can be applied (else any but unconfined is refused).
    pub apparmor: bool,
    /// SELinux is enabled: labels would have to be applied (else they are ignored, logged).
    pub selinux: bool,
    /// Where the node's CDI spec files are (`[cdi] spec_dirs`), in increasing priority; read
    /// only for a container that asks for CDI devices.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Default for HostInfo {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            swap_controller: true,
            hugetlb_controller: true,
            cgroup2_unified: false,
            min_oom_score_adj: None,
            held_caps: security::ALL_CAPS.into_iter().collect(),
            apparmor: false,
            selinux: false,
            cdi_spec_dirs: cdi::DEFAULT_SPEC_DIRS.map(PathBuf::from).to_vec(),
        }
    }
}

impl HostInfo {
    /// Reads the facts from this host (hostname, cgroup controllers, our own oom_score_adj;
    /// `min_oom_score_adj` is set only when we lack CAP_SYS_RESOURCE). `cdi_spec_dirs` are the
    /// defaults: the daemon sets the configured ones.
    pub fn probe() -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let cgroup2_unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let v2_controllers =
            std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let (swap_controller, hugetlb_controller) = if cgroup2_unified {
            (
                v2_controllers.split_whitespace().any(|c| c == "memory"),
                v2_controllers.split_whitespace().any(|c| c == "hugetlb"),
            )
        } else {
            (
                std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
                std::path::Path::new("/sys/fs/cgroup/hugetlb").is_dir(),
            )
        };
        let own_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let held = cap_mask(&status, "CapEff:") & cap_mask(&status, "CapBnd:");
        Self {
            hostname,
            swap_controller,
            hugetlb_controller,
            cgroup2_unified,
            min_oom_score_adj: if held & (1 << CAP_SYS_RESOURCE) != 0 {
                None
            } else {
                own_adj
            },
            held_caps: security::caps_in_mask(held),
            apparmor: lsm::apparmor_enabled(),
            selinux: lsm::selinux_enabled(),
            cdi_spec_dirs: cdi::DEFAULT_SPEC_DIRS.map(PathBuf::from).to_vec(),
        }
    }
}

/// CAP_SYS_RESOURCE's bit: lowering oom_score_adj needs it.
const CAP_SYS_RESOURCE: u32 = 24;

/// A capability mask line of /proc/self/status (`CapEff:`, `CapBnd:`); 0 when absent.
fn cap_mask(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// What the pause container's spec is built from.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpecInput {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    /// The pause rootfs (read-only) and its command.
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// The pinned network namespace (None: host network).
    pub netns: Option<PathBuf>,
    /// The pod's pinned user namespace, which owns `netns`, for the pause to join (None: a
    /// pod without one, or on the host network, where the pause makes a new one).
    pub userns: Option<PathBuf>,
    /// cgroupsPath for the pause container (under the pod's cgroup parent).
    pub cgroups_path: String,
    /// Files berthd wrote for the pod, bind-mounted into every container: hostname, hosts,
    /// resolv.conf; and the pod's /dev/shm (a tmpfs mount point on the host), if not host IPC.
    pub files: SandboxFiles,
    /// The pause image's User (`uid[:gid]`), used unless run_as_user is set.
    pub image_user: Option<String>,
    /// The pause image's Env (on top of the default PATH) and WorkingDir, as containerd
    /// applies its sandbox image's.
    pub image_env: Vec<String>,
    pub image_working_dir: Option<String>,
    /// Facts about the node (see [`HostInfo::probe`]).
    pub host: HostInfo,
}

#[derive(Debug, Clone, Default)]
pub struct SandboxFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// What a container's spec is built from.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpecInput {
    pub id: String,
    pub config: cri::ContainerConfig,
    pub sandbox_id: String,
    pub sandbox_config: cri::PodSandboxConfig,
    /// The pause process: the container joins its namespaces through /proc/<pid>/ns/*.
    pub sandbox_pid: i32,
    /// The image's config (Entrypoint, Cmd, Env, WorkingDir, User, …).
    pub image_config: oci_spec::image::ImageConfiguration,
    /// The image name the kubelet asked for (annotation io.kubernetes.cri.image-name).
    pub image_name: String,
    /// The mounted container rootfs.
    pub rootfs: PathBuf,
    /// /etc/passwd and /etc/group of the image, to resolve run_as_username and the image User.
    pub passwd: Option<String>,
    pub group: Option<String>,
    pub cgroups_path: String,
    pub files: SandboxFiles,
    /// Extra annotations berthd records (container type, sandbox id, names).
    pub annotations: HashMap<String, String>,
    /// For `NamespaceMode::TARGET` pid namespaces: the pid of the target container's process.
    pub target_pid: Option<i32>,
    /// Facts about the node (see [`HostInfo::probe`]).
    pub host: HostInfo,
}
