//! Pod sandbox records: immutable metadata ([`SandboxMeta`]) plus a state ([`SandboxState`])
//! changed only through [`Sandbox::update`], which writes the checkpoint before the new state
//! becomes visible.
//!
//! ```text
//!  RunPodSandbox: netns + CNI ADD + pause created and started, then the record is written
//!        │
//!        ▼
//!  ┌───────────────┐   StopPodSandbox (pause killed),     ┌─────────────────────────────────┐
//!  │ Ready { pid } │ ──────────────────────────────────►  │ NotReady { exit, released }     │
//!  └───────────────┘   or the pause exited on its own     │  released: network, netns and   │
//!                      (seen by status/list/restart)      │  /dev/shm torn down (Stop done) │
//!                                                         └─────────────────────────────────┘
//!                                                                   │ RemovePodSandbox
//!                                                                   ▼
//!                                                          record and files deleted
//! ```
//!
//! A restarted berthd loads every record; a Ready sandbox whose shim left an exit record (or
//! whose pause process is gone) becomes NotReady.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_runtime::shim_protocol::ExitRecord;
use chrono::{DateTime, Utc};
use cri_api::v1 as cri;
use serde::{Deserialize, Serialize};

use super::objects::{Object, ObjectStore};
use super::{CheckpointDir, StoreError};

const KIND: &str = "sandbox";
/// Layout version of sandbox checkpoints.
pub const CHECKPOINT_VERSION: u32 = 1;

/// The OCI runtime a sandbox was created with (the handler's binary and `--root` then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRef {
    pub handler: String,
    pub path: PathBuf,
    pub root: PathBuf,
}

/// Files berthd made for the pod (bind-mounted into its containers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// The pod's /dev/shm, a tmpfs mounted here (none with host IPC).
    pub shm: Option<PathBuf>,
}

/// What never changes after RunPodSandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub id: String,
    /// `name_namespace_uid_attempt`, unique among sandboxes.
    pub name: String,
    pub config: cri::PodSandboxConfig,
    pub runtime: RuntimeRef,
    /// The pinned network namespace; none with host network.
    pub netns: Option<PathBuf>,
    /// The CNI network the pod is attached to (none with host network).
    pub network: Option<String>,
    /// The pause process.
    pub pid: i32,
    /// `<state>/sandboxes/<id>`: files, bundle, shim state.
    pub state_dir: PathBuf,
    pub created_at: DateTime<Utc>,
    /// The pod's IPs, the primary first.
    pub ips: Vec<IpAddr>,
    /// The pod's cgroup: the kubelet's cgroup_parent (with the systemd driver its last
    /// component, the pod's slice), or berth's own (`/berth/<id>`, `berth-pod<id>.slice`).
    pub cgroup_parent: String,
    /// Whether berth made `cgroup_parent` (and so removes it).
    pub owns_cgroup_parent: bool,
    /// The pause container's cgroupsPath.
    pub cgroups_path: String,
    pub files: PodFiles,
    /// The configured sandbox image the pause runs from (on a snapshot keyed by the sandbox
    /// ID, mounted on [`SandboxMeta::rootfs`]); None: the built-in pause.
    #[serde(default)]
    pub image: Option<String>,
}

impl SandboxMeta {
    /// Where the sandbox image's snapshot is mounted (with a configured sandbox image).
    pub fn rootfs(&self) -> PathBuf {
        self.state_dir.join("rootfs")
    }
    /// The sandbox image as statuses and metrics name it.
    pub fn image_name(&self) -> &str {
        self.image.as_deref().unwrap_or(crate::pause::BUILTIN_IMAGE)
    }
    pub fn bundle(&self) -> PathBuf {
        self.state_dir.join("bundle")
    }
    pub fn shim_dir(&self) -> PathBuf {
        self.state_dir.join("shim")
    }
    /// `namespace/name` of the pod, for messages and logs.
    pub fn pod(&self) -> String {
        let m = self.config.metadata.clone().unwrap_or_default();
        format!("{}/{}", m.namespace, m.name)
    }
    pub fn host_network(&self) -> bool {
        self.netns.is_none()
    }
    /// The cgroup driver the pod was made under (its pause's cgroupsPath says), which its
    /// runtime commands and cgroup paths keep whatever berthd is configured with now.
    pub fn cgroup_driver(&self) -> crate::config::CgroupDriver {
        crate::config::CgroupDriver::of_cgroups_path(&self.cgroups_path)
    }
}

/// How the pause process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseExit {
    pub exit_code: i32,
    pub exited_at: DateTime<Utc>,
}

impl From<ExitRecord> for PauseExit {
    fn from(r: ExitRecord) -> Self {
        Self {
            exit_code: r.exit_code,
            exited_at: r.exited_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SandboxState {
    Ready {
        pid: i32,
    },
    NotReady {
        /// Known once the shim recorded the pause's exit.
        exit: Option<PauseExit>,
        /// Network, netns and /dev/shm torn down.
        released: bool,
    },
}

impl SandboxState {
    pub fn is_ready(&self) -> bool {
        matches!(self, SandboxState::Ready { .. })
    }
    pub fn is_released(&self) -> bool {
        matches!(self, SandboxState::NotReady { released: true, .. })
    }
    pub fn to_cri(&self) -> cri::PodSandboxState {
        match self {
            SandboxState::Ready { .. } => cri::PodSandboxState::SandboxReady,
            SandboxState::NotReady { .. } => cri::PodSandboxState::SandboxNotready,
        }
    }
}

/// The pod-level resources UpdatePodSandboxResources last gave (in-place pod resize,
/// KEP-1287/KEP-5419): the pod's overhead and the sum of its containers' resources. Until
/// the first update, RunPodSandbox's `linux.overhead` and `linux.resources` hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodResources {
    pub overhead: Option<cri::LinuxContainerResources>,
    pub resources: Option<cri::LinuxContainerResources>,
}

#[derive(Serialize)]
struct CheckpointRef<'a> {
    meta: &'a SandboxMeta,
    state: &'a SandboxState,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a PodResources>,
}

#[derive(Deserialize)]
pub struct Checkpoint {
    meta: SandboxMeta,
    state: SandboxState,
    /// Absent in records written before UpdatePodSandboxResources was served.
    #[serde(default)]
    resources: Option<PodResources>,
}

/// One sandbox: its metadata, its state, and a lock that serializes Stop and Remove.
#[derive(Debug)]
pub struct Sandbox {
    pub meta: SandboxMeta,
    state: Mutex<SandboxState>,
    /// Set by UpdatePodSandboxResources; saved with the state. Lock order: `state`, then this.
    resources: Mutex<Option<PodResources>>,
    checkpoints: CheckpointDir,
    lifecycle: tokio::sync::Mutex<()>,
}

impl Sandbox {
    fn new(
        meta: SandboxMeta,
        state: SandboxState,
        resources: Option<PodResources>,
        checkpoints: CheckpointDir,
    ) -> Self {
        Sandbox {
            meta,
            state: Mutex::new(state),
            resources: Mutex::new(resources),
            checkpoints,
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    pub fn state(&self) -> SandboxState {
        self.state.lock().expect("sandbox state lock").clone()
    }

    /// Changes the state: `change` edits a copy, the checkpoint with the copy is written, and
    /// only then the copy becomes the state. If the write fails nothing changed. Blocking.
    pub fn update<R>(&self, change: impl FnOnce(&mut SandboxState) -> R) -> Result<R, StoreError> {
        let mut state = self.state.lock().expect("sandbox state lock");
        let mut next = state.clone();
        let out = change(&mut next);
        if next != *state {
            let resources = self.resources.lock().expect("sandbox resources lock");
            self.checkpoints.save(
                &self.meta.id,
                &CheckpointRef {
                    meta: &self.meta,
                    state: &next,
                    resources: resources.as_ref(),
                },
            )?;
            tracing::debug!(pod = %self.meta.pod(), sandbox = %self.meta.id, state = ?next, "sandbox state");
            *state = next;
        }
        Ok(out)
    }

    /// The pod-level resources in force: the last UpdatePodSandboxResources', else
    /// RunPodSandbox's.
    pub fn resources(&self) -> PodResources {
        if let Some(r) = &*self.resources.lock().expect("sandbox resources lock") {
            return r.clone();
        }
        let linux = self.meta.config.linux.as_ref();
        PodResources {
            overhead: linux.and_then(|l| l.overhead.clone()),
            resources: linux.and_then(|l| l.resources.clone()),
        }
    }

    /// Records the pod-level resources UpdatePodSandboxResources gave: the checkpoint is
    /// written first, then they are in force. The same resources again write nothing.
    /// Blocking.
    pub fn set_resources(&self, resources: PodResources) -> Result<(), StoreError> {
        let state = self.state.lock().expect("sandbox state lock");
        let mut current = self.resources.lock().expect("sandbox resources lock");
        if current.as_ref() == Some(&resources) {
            return Ok(());
        }
        self.checkpoints.save(
            &self.meta.id,
            &CheckpointRef {
                meta: &self.meta,
                state: &state,
                resources: Some(&resources),
            },
        )?;
        *current = Some(resources);
        Ok(())
    }

    /// A Ready sandbox whose pause exited (the shim left its exit record, or the process is
    /// gone) becomes NotReady. Returns the state. Blocking (reads a small file). Publishes
    /// nothing: berthd's services go through `SandboxService::refresh`, which publishes the
    /// sandbox's Stopped event when this call is the one that saw the exit.
    pub fn refresh(&self) -> Result<SandboxState, StoreError> {
        self.observe_exit()?;
        Ok(self.state())
    }

    /// Like [`Sandbox::refresh`]; true if this call moved the sandbox to NotReady.
    pub fn observe_exit(&self) -> Result<bool, StoreError> {
        let SandboxState::Ready { pid } = self.state() else {
            return Ok(false);
        };
        let exit = ExitRecord::load(&self.meta.shim_dir()).ok().flatten();
        let gone = !PathBuf::from(format!("/proc/{pid}")).exists();
        if exit.is_none() && !gone {
            return Ok(false);
        }
        tracing::info!(pod = %self.meta.pod(), sandbox = %self.meta.id, pid, "the pause process exited");
        self.mark_exited(exit.map(PauseExit::from))
    }

    /// Ready → NotReady with the pause's exit (if known); true if this call made the change.
    pub fn mark_exited(&self, exit: Option<PauseExit>) -> Result<bool, StoreError> {
        self.update(|s| {
            let ready = s.is_ready();
            if ready {
                *s = SandboxState::NotReady {
                    exit,
                    released: false,
                };
            }
            ready
        })
    }

    /// Held by Stop and Remove for their whole run, so that they never interleave.
    pub fn lifecycle(&self) -> &tokio::sync::Mutex<()> {
        &self.lifecycle
    }
}

impl Object for Sandbox {
    const KIND: &'static str = KIND;
    const VERSION: u32 = CHECKPOINT_VERSION;
    type Checkpoint = Checkpoint;

    fn from_checkpoint(cp: Checkpoint, checkpoints: CheckpointDir) -> Self {
        Sandbox::new(cp.meta, cp.state, cp.resources, checkpoints)
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
        let state = self.state.lock().expect("sandbox state lock");
        let resources = self.resources.lock().expect("sandbox resources lock");
        self.checkpoints.save(
            &self.meta.id,
            &CheckpointRef {
                meta: &self.meta,
                state: &state,
                resources: resources.as_ref(),
            },
        )
    }
}

/// Every sandbox, by ID, and the reserved names.
pub type SandboxStore = ObjectStore<Sandbox>;

impl ObjectStore<Sandbox> {
    /// Opens the store and re-adopts every sandbox: a Ready one whose pause exited while
    /// berthd was down becomes NotReady. Blocking.
    pub fn open_sandboxes(dir: impl Into<PathBuf>) -> (Self, Vec<StoreError>) {
        let (store, mut errors) = Self::open(dir);
        for sandbox in store.list() {
            if let Err(e) = sandbox.refresh() {
                errors.push(e);
            }
            tracing::info!(pod = %sandbox.meta.pod(), sandbox = %sandbox.meta.id, state = ?sandbox.state(), "sandbox re-adopted");
        }
        (store, errors)
    }

    /// Adds a sandbox (its name reserved first): writes its checkpoint, then makes it
    /// visible. Blocking.
    pub fn add(&self, meta: SandboxMeta, state: SandboxState) -> Result<Arc<Sandbox>, StoreError> {
        self.add_object(Sandbox::new(meta, state, None, self.checkpoints().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, name: &str, state_dir: PathBuf) -> SandboxMeta {
        SandboxMeta {
            id: id.into(),
            name: name.into(),
            config: cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u1".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            runtime: RuntimeRef {
                handler: "berth".into(),
                path: "/bin/true".into(),
                root: "/tmp/r".into(),
            },
            netns: None,
            network: None,
            pid: std::process::id() as i32,
            state_dir,
            created_at: Utc::now(),
            ips: vec!["10.1.2.3".parse().unwrap()],
            cgroup_parent: "/berth/x".into(),
            owns_cgroup_parent: true,
            cgroups_path: "/berth/x/x".into(),
            files: PodFiles::default(),
            image: None,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_exits_make_them_not_ready() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandboxes");
        let (store, errors) = SandboxStore::open_sandboxes(&dir);
        assert!(errors.is_empty());
        let pid = std::process::id() as i32;
        let a = store
            .add(
                meta("aaa1", "n1", tmp.path().join("a")),
                SandboxState::Ready { pid },
            )
            .unwrap();
        store
            .add(
                meta("bbb1", "n2", tmp.path().join("b")),
                SandboxState::Ready { pid },
            )
            .unwrap();
        assert!(matches!(
            store.add(
                meta("ccc1", "n1", tmp.path().join("c")),
                SandboxState::Ready { pid }
            ),
            Err(StoreError::NameTaken { .. })
        ));
        assert_eq!(store.get("aa").unwrap().meta.id, "aaa1");
        // b's pause "exited": its shim left an exit record.
        let shim = tmp.path().join("b/shim");
        std::fs::create_dir_all(&shim).unwrap();
        std::fs::write(
            shim.join("exit.json"),
            br#"{"exit_code":137,"signal":9,"exited_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        a.update(|s| *s = SandboxState::Ready { pid }).unwrap();
        drop(store);

        let (store, errors) = SandboxStore::open_sandboxes(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.list().len(), 2);
        assert_eq!(
            store.get("aaa1").unwrap().state(),
            SandboxState::Ready { pid }
        );
        let b = store.get("bbb1").unwrap();
        assert!(matches!(
            b.state(),
            SandboxState::NotReady {
                exit: Some(PauseExit { exit_code: 137, .. }),
                released: false
            }
        ));
        assert_eq!(b.meta.config.metadata.as_ref().unwrap().uid, "u1");
        assert!(store.reserve_name("n2", "other").is_err());
        store.delete("bbb1").unwrap();
        store.delete("bbb1").unwrap();
        store.reserve_name("n2", "other").unwrap();
        assert!(matches!(
            store.get("bbb1"),
            Err(StoreError::NotFound { .. })
        ));
        let (store, _) = SandboxStore::open_sandboxes(&dir);
        assert_eq!(store.list().len(), 1);
    }

    #[test]
    fn pod_resources_come_from_the_config_until_updated_and_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandboxes");
        let (store, _) = SandboxStore::open_sandboxes(&dir);
        let mut m = meta("aaa1", "n1", tmp.path().join("a"));
        let cpu = |quota| cri::LinuxContainerResources {
            cpu_quota: quota,
            cpu_period: 100000,
            ..Default::default()
        };
        m.config.linux = Some(cri::LinuxPodSandboxConfig {
            resources: Some(cpu(10000)),
            ..Default::default()
        });
        let pid = std::process::id() as i32;
        let a = store.add(m, SandboxState::Ready { pid }).unwrap();
        assert_eq!(a.resources().resources, Some(cpu(10000)));
        assert_eq!(a.resources().overhead, None);
        let updated = PodResources {
            overhead: Some(cpu(5000)),
            resources: Some(cpu(20000)),
        };
        a.set_resources(updated.clone()).unwrap();
        a.set_resources(updated.clone()).unwrap();
        assert_eq!(a.resources(), updated);
        // A state change keeps them in the checkpoint.
        a.mark_exited(None).unwrap();
        drop((a, store));
        let (store, errors) = SandboxStore::open_sandboxes(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        let a = store.get("aaa1").unwrap();
        assert_eq!(a.resources(), updated);
        assert!(!a.state().is_ready());
    }
}
