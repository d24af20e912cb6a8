//! Building OCI runtime specs from CRI requests, the way containerd's CRI plugin does: one for
//! a sandbox's pause container, one for each container. Pure functions of their inputs (no
//! system calls), so every rule is unit-tested.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1 as cri;

mod container;
mod sandbox;

pub use container::container_spec;
pub use sandbox::sandbox_spec;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{what} is not supported yet")]
    NotYet { what: &'static str },
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
    /// cgroupsPath for the pause container (under the pod's cgroup parent).
    pub cgroups_path: String,
    /// Files berthd wrote for the pod, bind-mounted into every container: hostname, hosts,
    /// resolv.conf; and the pod's /dev/shm (a tmpfs mount point on the host), if not host IPC.
    pub files: SandboxFiles,
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
}
