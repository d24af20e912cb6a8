//! The container state machine, as the OCI runtime spec defines it.
//!
//! ```text
//!   create ──► Creating ──► Created ──start──► Running ──(exit)──► Stopped ──delete──► (gone)
//!                              │                 │   ▲                 ▲
//!                              │            pause│   │resume           │
//!                              │                 ▼   │                 │
//!                              │                Paused                 │
//!                              └──────────(kill / init dies)───────────┘
//! ```
//!
//! The status is never stored: it is derived from the init process (alive? same start time?),
//! the exec FIFO (present until `start`) and the freezer, as runc derives it, so it cannot go
//! stale when a process dies behind the runtime's back.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// `create` is still setting the container up.
    Creating,
    /// Set up; the init process waits on the exec FIFO for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl ContainerStatus {
    pub fn can_start(self) -> bool {
        self == Self::Created
    }

    pub fn can_kill(self) -> bool {
        matches!(self, Self::Created | Self::Running | Self::Paused)
    }

    /// `delete` without `--force` accepts a stopped container, and a created one (whose init
    /// only waits for `start`, as runc allows).
    pub fn can_delete(self) -> bool {
        matches!(self, Self::Stopped | Self::Created)
    }

    pub fn can_exec(self) -> bool {
        matches!(self, Self::Created | Self::Running)
    }

    pub fn can_pause(self) -> bool {
        matches!(self, Self::Running | Self::Created)
    }

    pub fn can_resume(self) -> bool {
        self == Self::Paused
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ContainerStatus::*;

    #[test]
    fn transitions() {
        assert!(Created.can_start());
        assert!(!Running.can_start() && !Stopped.can_start());
        assert!(Running.can_kill() && Paused.can_kill() && Created.can_kill());
        assert!(!Stopped.can_kill());
        assert!(Stopped.can_delete() && !Running.can_delete() && !Paused.can_delete());
        assert!(Paused.can_resume() && !Running.can_resume());
        assert_eq!(serde_json::to_string(&Paused).unwrap(), "\"paused\"");
    }
}
