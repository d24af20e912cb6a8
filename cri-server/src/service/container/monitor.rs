//! Observing exits: the shim writes `exit.json` (temp file + rename) when a container's init
//! exits. A watcher thread holds an inotify watch on the shim directory of every live
//! container and turns the rename into the Exited state at once (with OOMKilled when the
//! container's cgroup saw an OOM kill), publishes the event and wakes StopContainer's waiters;
//! a slow poll of every running container backs it up. The RPCs that care (stop, status,
//! remove) also observe exits themselves. At startup, [`recover`] re-adopts every shim left
//! by a previous berthd. The same watcher follows `memory.events` of running systemd-driver
//! containers, whose cgroup may be gone by their exit ([`super::oom_watch`]).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_runtime::shim_protocol::{ExitRecord, EXIT_FILE};
use chrono::Utc;
use cri_api::v1 as cri;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::error::ContainerError;
use super::Containers;
use crate::store::container::{Container, ExitReason, State};

/// The backstop: how often every running container is checked even without an event.
const BACKSTOP: Duration = Duration::from_secs(2);

/// Wakes the watcher (a new container to watch) and lets waiters learn of exits.
pub(crate) struct ExitEvents {
    wake_tx: OwnedFd,
    wake_rx: OwnedFd,
    /// Notified whenever an exit was recorded.
    pub exited: tokio::sync::Notify,
}

impl ExitEvents {
    pub(crate) fn new() -> std::io::Result<Self> {
        let (rx, tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        Ok(Self {
            wake_tx: tx,
            wake_rx: rx,
            exited: tokio::sync::Notify::new(),
        })
    }

    /// Asks the watcher to look for new containers to watch (after a create or start).
    pub(crate) fn wake(&self) {
        // A full pipe already holds a wake-up.
        let _ = nix::unistd::write(&self.wake_tx, &[1]);
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&self.wake_rx, &mut buf), Ok(n) if n > 0) {}
    }
}

/// Starts the watcher thread; it ends once the service is dropped.
pub(super) fn spawn(inner: Weak<Containers>) {
    let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "no inotify: container exits are polled");
            return spawn_poll_only(inner);
        }
    };
    let spawned = std::thread::Builder::new()
        .name("berthd-exits".into())
        .spawn(move || watch(inner, inotify));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the exit watcher");
    }
}

fn spawn_poll_only(inner: Weak<Containers>) {
    let _ = std::thread::Builder::new()
        .name("berthd-exits".into())
        .spawn(move || loop {
            std::thread::sleep(BACKSTOP / 4);
            let Some(inner) = inner.upgrade() else { break };
            check_running(&inner);
        });
}

/// What a watched shim directory (or file) belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Watched {
    Container(String),
    /// A Ready sandbox: its pause's shim.
    Sandbox(String),
    /// A running systemd-driver container's `memory.events`.
    MemoryEvents(String),
}

impl Watched {
    fn flags(&self) -> AddWatchFlags {
        match self {
            Watched::MemoryEvents(_) => AddWatchFlags::IN_MODIFY,
            _ => AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        }
    }
}

/// What to watch: every live container's and every Ready sandbox's shim directory, and the
/// memory.events of the running containers that need it.
fn live_dirs(inner: &Containers) -> HashMap<Watched, PathBuf> {
    let all = inner.store.list();
    let memory_events = all
        .iter()
        .filter(|c| c.status().state.is_running())
        .filter_map(|c| {
            super::oom_watch::events_file(c)
                .map(|file| (Watched::MemoryEvents(c.id().to_owned()), file))
        })
        .collect::<Vec<_>>();
    let containers = all
        .into_iter()
        .filter(|c| !matches!(c.status().state, State::Exited { .. }))
        .map(|c| {
            (
                Watched::Container(c.id().to_owned()),
                c.meta.shim_dir.clone(),
            )
        })
        .chain(memory_events);
    let sandboxes = inner
        .sandboxes
        .get()
        .map(|s| s.sandboxes())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.state().is_ready())
        .map(|s| (Watched::Sandbox(s.meta.id.clone()), s.meta.shim_dir()));
    containers.chain(sandboxes).collect()
}

fn watch(weak: Weak<Containers>, inotify: Inotify) {
    let mut watched: HashMap<Watched, WatchDescriptor> = HashMap::new();
    let mut by_wd: HashMap<WatchDescriptor, Watched> = HashMap::new();
    loop {
        let Some(inner) = weak.upgrade() else { break };
        // Watch every live shim dir not watched yet; forget the others.
        let live = live_dirs(&inner);
        watched.retain(|what, wd| {
            let keep = live.contains_key(what);
            if !keep {
                let _ = inotify.rm_watch(*wd);
                by_wd.remove(wd);
            }
            keep
        });
        for (what, dir) in &live {
            if watched.contains_key(what) {
                continue;
            }
            match inotify.add_watch(dir, what.flags()) {
                Ok(wd) => {
                    watched.insert(what.clone(), wd);
                    by_wd.insert(wd, what.clone());
                    // An OOM kill before the watch existed.
                    if let Watched::MemoryEvents(id) = what {
                        oom_sample(&inner, id);
                    }
                }
                Err(e) => {
                    tracing::debug!(watched = ?what, error = %e, "cannot watch the shim dir");
                }
            }
        }
        // An exit recorded before its watch existed is found by this check.
        check_running(&inner);
        let events = inner.exit_events.clone();
        drop(inner);

        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(events.wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        let timeout = PollTimeout::try_from(BACKSTOP).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "exit watcher poll");
                std::thread::sleep(BACKSTOP);
            }
        }
        events.drain();
        let (mut exited, mut memory_events) = (Vec::new(), Vec::new());
        while let Ok(batch) = inotify.read_events() {
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if e.mask.contains(AddWatchFlags::IN_MODIFY) {
                    if let Some(Watched::MemoryEvents(id)) = by_wd.get(&e.wd) {
                        memory_events.push(id.clone());
                    }
                }
                if e.name.as_deref().is_some_and(|n| n == EXIT_FILE) {
                    if let Some(what) = by_wd.get(&e.wd) {
                        exited.push(what.clone());
                    }
                }
                if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                    if let Some(what) = by_wd.remove(&e.wd) {
                        watched.remove(&what);
                    }
                }
            }
        }
        if exited.is_empty() && memory_events.is_empty() {
            continue;
        }
        let Some(inner) = weak.upgrade() else { break };
        // Before the exits: the OOM kill that ended a container is read while its cgroup
        // may still be there.
        memory_events.dedup();
        for id in memory_events {
            oom_sample(&inner, &id);
        }
        for what in exited {
            match what {
                Watched::Container(id) => container_exited(&inner, &id),
                Watched::Sandbox(id) => sandbox_exited(&inner, &id),
                Watched::MemoryEvents(_) => {}
            }
        }
    }
}

fn oom_sample(inner: &Containers, id: &str) {
    if let Ok(c) = inner.store.get(id) {
        inner.oom_kills.sample(&c);
    }
}

fn container_exited(inner: &Containers, id: &str) {
    // A created container's exit is StartContainer's to record (it may be starting right
    // now).
    if let Some(c) = inner
        .store
        .get(id)
        .ok()
        .filter(|c| c.status().state.is_running())
    {
        if let Err(e) = observe_exit(inner, &c) {
            tracing::warn!(container = %id, error = %e, "cannot record the container's exit");
        }
    }
}

/// A pause that exited: the sandbox becomes NotReady and its Stopped event goes out
/// (unless StopPodSandbox, which killed it, recorded that first).
fn sandbox_exited(inner: &Containers, id: &str) {
    let Some(service) = inner.sandboxes.get() else {
        return;
    };
    if let Ok(sandbox) = service.sandbox(id) {
        if let Err(e) = service.refresh(&sandbox) {
            tracing::warn!(sandbox = %id, error = %e, "cannot record the pause's exit");
        }
    }
}

fn check_running(inner: &Containers) {
    for c in inner.store.list() {
        if c.status().state.is_running() && ExitRecord::path(&c.meta.shim_dir).exists() {
            if let Err(e) = observe_exit(inner, &c) {
                tracing::warn!(container = %c.id(), error = %e, "cannot record the container's exit");
            }
        }
    }
    // Pauses too: one that exited, or whose shim vanished with it, makes its sandbox
    // NotReady (a stat of the exit record and of /proc/<pid> each).
    if let Some(service) = inner.sandboxes.get() {
        for sandbox in service.sandboxes() {
            if sandbox.state().is_ready() {
                if let Err(e) = service.refresh(&sandbox) {
                    tracing::warn!(sandbox = %sandbox.meta.id, error = %e, "cannot record the pause's exit");
                }
            }
        }
    }
}

/// Moves a Created or Running container whose init exited to Exited (once; later calls see
/// Exited and return true). False while it runs. Blocking.
pub(super) fn observe_exit(inner: &Containers, c: &Container) -> Result<bool, ContainerError> {
    if matches!(c.status().state, State::Exited { .. }) {
        return Ok(true);
    }
    let record = ExitRecord::load(&c.meta.shim_dir).map_err(|source| ContainerError::Io {
        id: c.id().to_owned(),
        op: "read exit record in",
        path: c.meta.shim_dir.clone(),
        source,
    })?;
    let Some(record) = record else {
        return Ok(false);
    };
    // Before the runtime's delete removes the cgroup: did the OOM killer strike?
    let oom = inner.oom_kills.killed(c);
    let changed = c.update(|s| {
        let started_at = match &s.state {
            State::Exited { .. } => return Ok::<_, ContainerError>(false),
            State::Created => None,
            State::Running { started_at, .. } => Some(*started_at),
        };
        s.state = State::Exited {
            started_at,
            finished_at: record.exited_at,
            code: record.exit_code,
            reason: ExitReason::of_exit(record.exit_code, oom),
            message: String::new(),
        };
        Ok(true)
    })?;
    inner.exit_events.exited.notify_waiters();
    if changed {
        tracing::info!(container = %c.id(), pod = %c.meta.sandbox_id, exit_code = record.exit_code, oom, "container exited");
        super::events::publish(inner, c, cri::ContainerEventType::ContainerStoppedEvent);
    }
    Ok(true)
}

/// Marks a container whose shim vanished without an exit record.
fn mark_lost(inner: &Containers, c: &Container, why: String) -> Result<(), ContainerError> {
    c.update(|s| {
        let started_at = match &s.state {
            State::Exited { .. } => return Ok::<_, ContainerError>(()),
            State::Created => None,
            State::Running { started_at, .. } => Some(*started_at),
        };
        s.state = State::Exited {
            started_at,
            finished_at: Utc::now(),
            code: 255,
            reason: ExitReason::Unknown,
            message: why,
        };
        Ok(())
    })?;
    super::events::publish(inner, c, cri::ContainerEventType::ContainerStoppedEvent);
    Ok(())
}

/// Re-adopts the containers of a previous berthd: an exit recorded while berthd was down
/// becomes Exited with its real code; a container whose shim is gone without a record is
/// Exited with reason Unknown. Blocking.
pub(super) fn recover(inner: &Arc<Containers>) {
    for c in inner.store.list() {
        let state = c.status().state;
        let pid = match state {
            State::Exited { .. } => continue,
            State::Created => 0,
            State::Running { pid, .. } => pid,
        };
        let result = match observe_exit(inner, &c) {
            Ok(true) => Ok(()),
            Ok(false) => match inner.shim(&c, pid).state() {
                Ok(_) => {
                    tracing::info!(container = %c.id(), state = state.name(), "re-adopted container");
                    Ok(())
                }
                // The shim may have written its record between the two checks.
                Err(e) => match observe_exit(inner, &c) {
                    Ok(true) => Ok(()),
                    Ok(false) => mark_lost(inner, &c, format!("berth-shim is gone: {e}")),
                    Err(e) => Err(e),
                },
            },
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(container = %c.id(), error = %e, "cannot re-adopt container");
        }
    }
}
