//! The container store: every container berthd created, as immutable metadata plus a status
//! that changes only through [`Container::update`], which writes an atomic, versioned checkpoint
//! (`<root>/cri/containers/<id>.json`) before the new status becomes visible.
//!
//! ```text
//!            CreateContainer
//!                  │
//!                  ▼
//!             ┌─────────┐  StartContainer   ┌─────────┐  exit observed   ┌────────┐
//!             │ Created │ ────────────────▶ │ Running │ ───────────────▶ │ Exited │
//!             └─────────┘                   └─────────┘  (exit.json)     └────────┘
//!                  │  start failed / shim gone                               │
//!                  └────────────────────────────────────────────────────────▶│
//!                                                                    RemoveContainer
//!                                                                    (record deleted)
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};

use super::objects::{Object, ObjectStore};
use super::{CheckpointDir, StoreError};

const KIND: &str = "container";
/// Layout version of the container checkpoints.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Why a container exited, as the CRI reports it in `ContainerStatus.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// A non-zero exit code.
    Error,
    /// The OOM killer killed a process of the container's cgroup.
    OomKilled,
    /// The runtime could not start the container.
    StartError,
    /// The shim vanished without recording the exit.
    Unknown,
}

impl ExitReason {
    pub fn as_cri(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OomKilled => "OOMKilled",
            ExitReason::StartError => "StartError",
            ExitReason::Unknown => "Unknown",
        }
    }

    /// The reason for an exit with `code`, given whether the OOM killer struck.
    pub fn of_exit(code: i32, oom_killed: bool) -> Self {
        match (oom_killed, code) {
            (true, _) => ExitReason::OomKilled,
            (false, 0) => ExitReason::Completed,
            (false, _) => ExitReason::Error,
        }
    }
}

/// The state machine of a container; each state carries its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Created,
    Running {
        pid: i32,
        started_at: DateTime<Utc>,
    },
    Exited {
        /// None when it never ran.
        started_at: Option<DateTime<Utc>>,
        finished_at: DateTime<Utc>,
        code: i32,
        reason: ExitReason,
        message: String,
    },
}

impl State {
    pub fn cri(&self) -> cri::ContainerState {
        match self {
            State::Created => cri::ContainerState::ContainerCreated,
            State::Running { .. } => cri::ContainerState::ContainerRunning,
            State::Exited { .. } => cri::ContainerState::ContainerExited,
        }
    }

    pub fn can_start(&self) -> bool {
        matches!(self, State::Created)
    }

    pub fn is_running(&self) -> bool {
        matches!(self, State::Running { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running { .. } => "running",
            State::Exited { .. } => "exited",
        }
    }
}

/// The mutable part of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    /// The resources last applied (CreateContainer, then UpdateContainerResources).
    pub resources: Option<cri::LinuxContainerResources>,
    /// Set while RemoveContainer runs: no start, no second removal. Not persisted.
    #[serde(skip)]
    pub removing: bool,
}

/// A read-only view of an image mounted for an image volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageVolume {
    /// The image's ID.
    pub image: String,
    /// The view snapshot's key.
    pub key: String,
    /// Where the view is mounted on the host (the spec bind-mounts it).
    pub path: PathBuf,
}

/// What never changes after CreateContainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// 64 hex digits.
    pub id: String,
    /// The reserved name `name_sandboxname_namespace_uid_attempt`.
    pub name: String,
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    /// The image as the request named it, its ID (config digest) and a `repo@digest` reference.
    pub image_name: String,
    pub image_id: String,
    pub image_ref: String,
    /// The CRI log file (None when the sandbox has no log directory).
    pub log_path: Option<PathBuf>,
    /// The writable snapshot of the rootfs, and where it is mounted.
    pub snapshot_key: String,
    pub rootfs: PathBuf,
    /// `<state>/containers/<id>`: bundle, rootfs mount point, shim state.
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub shim_dir: PathBuf,
    pub runtime_handler: String,
    /// The OCI `linux.cgroupsPath` (stats, OOM kills; its form says the cgroup driver).
    pub cgroups_path: String,
    /// The image's StopSignal (None: SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Image volumes, released by RemoveContainer.
    #[serde(default)]
    pub image_volumes: Vec<ImageVolume>,
}

impl ContainerMeta {
    /// The cgroup driver the container was made under (its cgroupsPath says), which its
    /// runtime commands and cgroup paths keep whatever berthd is configured with now.
    pub fn cgroup_driver(&self) -> crate::config::CgroupDriver {
        crate::config::CgroupDriver::of_cgroups_path(&self.cgroups_path)
    }
}

#[derive(Serialize)]
struct CheckpointRef<'a> {
    meta: &'a ContainerMeta,
    status: &'a Status,
}

#[derive(Deserialize)]
pub struct Checkpoint {
    meta: ContainerMeta,
    status: Status,
}

/// One container.
pub struct Container {
    pub meta: ContainerMeta,
    status: Mutex<Status>,
    checkpoints: CheckpointDir,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("id", &self.meta.id)
            .field("status", &self.status())
            .finish()
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// Changes the status: `f` edits a copy; when it succeeds and changed something, the
    /// copy is checkpointed (atomic write) and only then becomes the status. If `f` or the
    /// write fails nothing changed. Blocking (file I/O).
    pub fn update<T, E>(&self, f: impl FnOnce(&mut Status) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut status = self.status.lock().expect("status lock");
        let mut next = status.clone();
        let out = f(&mut next)?;
        if next.state != status.state || next.resources != status.resources {
            self.checkpoints.save(
                &self.meta.id,
                &CheckpointRef {
                    meta: &self.meta,
                    status: &next,
                },
            )?;
        }
        *status = next;
        Ok(out)
    }

    /// Sets or clears the in-memory `removing` flag; true if this call set it.
    pub fn set_removing(&self, removing: bool) -> bool {
        let mut status = self.status.lock().expect("status lock");
        let was = status.removing;
        status.removing = removing;
        removing && !was
    }
}

impl Object for Container {
    const KIND: &'static str = KIND;
    const VERSION: u32 = CHECKPOINT_VERSION;
    type Checkpoint = Checkpoint;

    fn from_checkpoint(cp: Checkpoint, checkpoints: CheckpointDir) -> Self {
        Container {
            meta: cp.meta,
            status: Mutex::new(cp.status),
            checkpoints,
        }
    }
    fn id(&self) -> &str {
        &self.meta.id
    }
    fn name(&self) -> &str {
        &self.meta.name
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.meta.created_at
    }
    fn save(&self) -> Result<(), StoreError> {
        self.checkpoints.save(
            &self.meta.id,
            &CheckpointRef {
                meta: &self.meta,
                status: &self.status(),
            },
        )
    }
}

/// Every container, by ID, and the reserved names.
pub type ContainerStore = ObjectStore<Container>;

impl ObjectStore<Container> {
    /// Adds a container (its name reserved first), checkpointing it before it becomes
    /// visible. Blocking.
    pub fn add(&self, meta: ContainerMeta, status: Status) -> Result<Arc<Container>, StoreError> {
        self.add_object(Container {
            meta,
            status: Mutex::new(status),
            checkpoints: self.checkpoints().clone(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A container record for unit tests (also `service::container::oom_watch`'s).
    pub(crate) fn meta(id: &str, name: &str) -> ContainerMeta {
        ContainerMeta {
            id: id.into(),
            name: name.into(),
            sandbox_id: "s".into(),
            config: cri::ContainerConfig::default(),
            image_name: "busybox".into(),
            image_id: "sha256:x".into(),
            image_ref: "sha256:x".into(),
            log_path: None,
            snapshot_key: id.into(),
            rootfs: "/r".into(),
            dir: "/d".into(),
            bundle: "/b".into(),
            shim_dir: "/s".into(),
            runtime_handler: "berth".into(),
            cgroups_path: "/berth/x".into(),
            stop_signal: None,
            created_at: Utc::now(),
            image_volumes: Vec::new(),
        }
    }

    fn created() -> Status {
        Status {
            state: State::Created,
            resources: None,
            removing: false,
        }
    }

    #[test]
    fn updates_are_checkpointed_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (store, failures) = ContainerStore::open(dir.path());
        assert!(failures.is_empty());
        store.reserve_name("a_p_ns_uid_0", "abc1").unwrap();
        let c = store.add(meta("abc1", "a_p_ns_uid_0"), created()).unwrap();
        let now = Utc::now();
        c.update(|s| {
            s.state = State::Running {
                pid: 42,
                started_at: now,
            };
            Ok::<_, StoreError>(())
        })
        .unwrap();
        // A failing update changes nothing.
        let r: Result<(), StoreError> = c.update(|s| {
            s.state = State::Created;
            Err(StoreError::Random(std::io::Error::other("x")))
        });
        assert!(r.is_err());
        assert!(c.status().state.is_running());

        let (again, failures) = ContainerStore::open(dir.path());
        assert!(failures.is_empty());
        let c2 = again.get("abc").unwrap();
        assert_eq!(
            c2.status().state,
            State::Running {
                pid: 42,
                started_at: now
            }
        );
        // The name stays reserved across restarts.
        assert!(matches!(
            again.reserve_name("a_p_ns_uid_0", "other"),
            Err(StoreError::NameTaken { .. })
        ));
        again.delete("abc1").unwrap();
        again.reserve_name("a_p_ns_uid_0", "other").unwrap();
        assert!(again.list().is_empty());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn prefixes_must_be_unique() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ContainerStore::open(dir.path());
        store.add(meta("aa11", "n1"), created()).unwrap();
        store.add(meta("aa22", "n2"), created()).unwrap();
        assert!(matches!(
            store.get("aa"),
            Err(StoreError::Ambiguous { count: 2, .. })
        ));
        assert_eq!(store.get("aa2").unwrap().id(), "aa22");
        assert!(matches!(store.get("b"), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn reasons_follow_exit_codes() {
        assert_eq!(ExitReason::of_exit(0, false).as_cri(), "Completed");
        assert_eq!(ExitReason::of_exit(1, false).as_cri(), "Error");
        assert_eq!(ExitReason::of_exit(137, true).as_cri(), "OOMKilled");
    }
}
