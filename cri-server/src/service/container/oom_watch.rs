//! OOM kills of containers whose cgroup goes with their last process. Under the systemd cgroup
//! driver a container's cgroup is its scope unit's, and systemd removes it as soon as the
//! scope is empty — usually before berthd has read the exit record, and with it the scope's
//! `memory.events`. So the exit watcher also watches `memory.events` of every running
//! systemd-driver container (cgroup v2 reports a change of it as a file modification, at the
//! OOM kill, before the victim is gone) and these counts remember what it read; the exit takes
//! the larger of that and what the file still says. A cgroupfs-driver container's cgroup
//! stays until the runtime's delete, after the exit is recorded: its file is read then, as
//! before. Containerd's shim watches memory.events the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::container::Container;

/// Where cgroup v2 is mounted on a systemd host (the systemd driver is cgroup v2 only).
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// The largest OOM kill count seen per running container (ID → count), when above zero.
#[derive(Debug, Default)]
pub(super) struct OomKills(Mutex<HashMap<String, u64>>);

impl OomKills {
    /// Reads the container's OOM kill count now (the watch saw memory.events change, or was
    /// just added) and remembers it. Blocking (one cgroup file).
    pub fn sample(&self, c: &Container) {
        match count(c) {
            Ok(0) => {}
            Ok(n) => {
                let mut counts = self.0.lock().expect("oom kills lock");
                let seen = counts.entry(c.id().to_owned()).or_default();
                *seen = (*seen).max(n);
                tracing::debug!(container = %c.id(), oom_kills = n, "OOM kill seen in memory.events");
            }
            Err(e) => tracing::debug!(container = %c.id(), error = %e, "memory.events unread"),
        }
    }

    /// Whether the OOM killer killed a process of the exited container `c`: its cgroup's
    /// count if the cgroup is still there, else (or if higher) what the watch saw. Forgets
    /// the container.
    pub fn killed(&self, c: &Container) -> bool {
        let seen = self
            .0
            .lock()
            .expect("oom kills lock")
            .remove(c.id())
            .unwrap_or(0);
        let now = count(c).unwrap_or_else(|e| {
            tracing::debug!(container = %c.id(), error = %e, "no OOM kill count");
            0
        });
        seen.max(now) > 0
    }

    /// Forgets a removed container.
    pub fn forget(&self, id: &str) {
        self.0.lock().expect("oom kills lock").remove(id);
    }
}

/// The container's OOM kill count from its cgroup (under systemd, its scope's).
fn count(c: &Container) -> Result<u64, berth_cgroups::CgroupError> {
    super::cgroup_path(c)
        .and_then(|p| berth_cgroups::manager(&p))
        .and_then(|m| m.oom_kill_count())
}

/// The `memory.events` file of a container's cgroup when the exit watcher must watch it: a
/// systemd-driver container's. None for any other.
pub(super) fn events_file(c: &Container) -> Option<PathBuf> {
    if !c.meta.cgroup_driver().is_systemd() {
        return None;
    }
    let path = super::cgroup_path(c).ok()?;
    Some(events_file_of(Path::new(CGROUP2_ROOT), path.as_path()))
}

fn events_file_of(root: &Path, cgroup: &Path) -> PathBuf {
    root.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
        .join("memory.events")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::container::{ContainerMeta, ContainerStore, State, Status};

    /// A container record under `cgroups_path` (no cgroup of that name exists here).
    fn container(
        store: &ContainerStore,
        id: &str,
        cgroups_path: &str,
    ) -> std::sync::Arc<Container> {
        let meta = ContainerMeta {
            cgroups_path: cgroups_path.into(),
            ..crate::store::container::tests::meta(id, id)
        };
        let status = Status {
            state: State::Created,
            resources: None,
            removing: false,
        };
        store.add(meta, status).unwrap()
    }

    #[test]
    fn only_systemd_driver_containers_are_watched_and_what_the_watch_saw_outlives_the_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ContainerStore::open(dir.path());
        let id = "0badc0de";
        let scoped = container(&store, id, &format!("berth-pod1.slice:berth:{id}"));
        assert_eq!(
            events_file(&scoped).unwrap(),
            Path::new(
                "/sys/fs/cgroup/berth.slice/berth-pod1.slice/berth-0badc0de.scope/memory.events"
            )
        );
        let plain = container(&store, "c2", "/berth/p/c2");
        assert_eq!(events_file(&plain), None);

        let kills = OomKills::default();
        // The scope is gone (never made here) and the watch saw nothing: no OOM kill.
        assert!(!kills.killed(&scoped));
        // The watch read one before systemd removed the scope.
        kills.0.lock().unwrap().insert(id.into(), 1);
        assert!(kills.killed(&scoped));
        // Told once: the exit forgot it.
        assert!(!kills.killed(&scoped));
        kills.0.lock().unwrap().insert(id.into(), 1);
        kills.forget(id);
        assert!(!kills.killed(&scoped));
    }

    #[test]
    fn a_scopes_memory_events_under_the_cgroup2_root() {
        let scope = berth_cgroups::CgroupPath::from_spec(
            Some("kubepods-burstable-pod1.slice:berth:c1"),
            "c1",
            true,
        )
        .unwrap();
        assert_eq!(
            events_file_of(Path::new(CGROUP2_ROOT), scope.as_path()),
            Path::new(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod1.slice/berth-c1.scope/memory.events"
            )
        );
    }
}
