//! The container record on disk: `<root>/<id>/state.json` (written once `create` succeeded),
//! `<root>/<id>/config.json` (the spec as created, so later commands never depend on the bundle)
//! and `<root>/<id>/exec.fifo` (present from `create` until `start`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_cgroups::systemd::SystemdManager;
use berth_cgroups::{CgroupManager, CgroupPath, SystemdUnit};
use chrono::{DateTime, Utc};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::{ContainerId, ContainerStatus};
use crate::atomic_file;
use crate::error::{Result, RuntimeError};
use crate::process::procfs;

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const EXEC_FIFO: &str = "exec.fifo";

/// The runtime's state root (`--root`, default `/run/berth-runtime`).
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Claims `id` by creating its directory; a concurrent `create` of the same ID fails here.
    pub fn reserve(&self, id: &ContainerId) -> Result<PathBuf> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.dir)
            .map_err(|e| RuntimeError::io("create runtime root", &self.dir, e))?;
        let dir = self.container_dir(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::AlreadyExists(id.to_string()))
            }
            Err(e) => Err(RuntimeError::io("create container directory", &dir, e)),
        }
    }

    /// Loads a container record. A directory without `state.json` is a container whose
    /// `create` has not finished (or was killed half-way).
    pub fn load(&self, id: &ContainerId) -> Result<Container> {
        let dir = self.container_dir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let state_path = dir.join(STATE_FILE);
        let state = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice::<ContainerRecord>(&bytes).map_err(|e| {
                RuntimeError::io("parse", &state_path, io::Error::other(e.to_string()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()))
            }
            Err(e) => return Err(RuntimeError::io("read", &state_path, e)),
        };
        let config_path = dir.join(CONFIG_FILE);
        let spec = Spec::load(&config_path).map_err(|e| RuntimeError::Bundle {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Container { dir, state, spec })
    }

    /// IDs of every container directory under the root.
    pub fn list(&self) -> Result<Vec<ContainerId>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RuntimeError::io("list", &self.dir, e)),
        };
        let mut ids: Vec<ContainerId> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// What `create` records about a container; immutable afterwards except through `update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub init_pid: i32,
    /// Start time of the init process in clock ticks since boot (/proc/PID/stat field 22), so a
    /// recycled PID is never mistaken for the container.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: DateTime<Utc>,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The cgroup as an absolute path below the hierarchy roots.
    pub cgroup_path: PathBuf,
    /// Under the systemd cgroup driver (`--systemd-cgroup`), the unit holding the cgroup:
    /// updates go through its properties and `delete` stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<SystemdUnit>,
    /// Whether the container has its own PID namespace (else `kill --all` / `delete --force`
    /// must signal every process of its cgroup).
    pub own_pid_ns: bool,
    /// Set when the container has no mount namespace of its own: how many mounts sat at the
    /// rootfs path before `create` (those above them are the container's, for `delete` to
    /// detach).
    #[serde(default)]
    pub host_mount_ns: Option<HostMountNs>,
}

/// What `delete` needs to undo the mounts of a container in the host's mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMountNs {
    pub rootfs_mounts_before: usize,
}

/// A loaded container: its directory, record and spec.
#[derive(Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub state: ContainerRecord,
    pub spec: Spec,
}

impl Container {
    pub fn id(&self) -> ContainerId {
        // The record was written from a validated ID.
        self.state
            .id
            .parse()
            .expect("state.json holds a validated container id")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.state.init_pid)
    }

    pub fn cgroup(&self) -> Result<Box<dyn CgroupManager>> {
        if let Some(unit) = &self.state.systemd_unit {
            return Ok(Box::new(SystemdManager::existing(unit.clone())?));
        }
        let path = CgroupPath::from_spec(
            Some(&self.state.cgroup_path.to_string_lossy()),
            &self.state.id,
            false,
        )?;
        Ok(berth_cgroups::manager(&path)?)
    }

    /// Whether the init process recorded at create time still runs (not a zombie, not a
    /// recycled PID).
    pub fn init_alive(&self) -> bool {
        match procfs::stat(self.pid()) {
            Ok(stat) => stat.start_time == self.state.init_start_time && !stat.is_dead(),
            Err(_) => false,
        }
    }

    pub fn status(&self) -> ContainerStatus {
        if !self.init_alive() {
            return ContainerStatus::Stopped;
        }
        if self.dir.join(EXEC_FIFO).exists() {
            return ContainerStatus::Created;
        }
        let frozen = self
            .cgroup()
            .and_then(|cg| Ok(cg.freezer_state()?))
            .map(|s| s == berth_cgroups::FreezerState::Frozen)
            .unwrap_or(false);
        if frozen {
            ContainerStatus::Paused
        } else {
            ContainerStatus::Running
        }
    }

    /// Fails with `WrongStatus` unless `allowed(status)`.
    pub fn require(
        &self,
        op: &'static str,
        allowed: fn(ContainerStatus) -> bool,
    ) -> Result<ContainerStatus> {
        let status = self.status();
        if allowed(status) {
            Ok(status)
        } else {
            Err(RuntimeError::WrongStatus {
                id: self.state.id.clone(),
                op,
                status,
            })
        }
    }

    /// The OCI state document (`berth-runtime state`, and stdin of hooks).
    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: self.spec.version().clone(),
            id: self.state.id.clone(),
            status,
            pid: if status == ContainerStatus::Stopped {
                0
            } else {
                self.state.init_pid
            },
            bundle: self.state.bundle.clone(),
            rootfs: self.state.rootfs.clone(),
            created: self.state.created,
            owner: self.state.owner.clone(),
            annotations: self.state.annotations.clone(),
        }
    }

    /// Rewrites `config.json` (after `update` changed the resources).
    pub fn save_spec(&self) -> Result<()> {
        let path = self.dir.join(CONFIG_FILE);
        let json = serde_json::to_vec(&self.spec).expect("a spec serializes");
        atomic_file::replace(&path, &json, 0o600).map_err(|e| RuntimeError::io("write", path, e))
    }
}

/// The state document of the OCI runtime spec, with runc's extra fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: ContainerStatus,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: DateTime<Utc>,
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// Writes the record; called once by `create` when the container is fully set up.
pub fn write_record(dir: &Path, record: &ContainerRecord) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec(record).expect("a record serializes");
    atomic_file::replace(&path, &json, 0o600).map_err(|e| RuntimeError::io("write", path, e))
}
