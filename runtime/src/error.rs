//! The runtime library's error type. Each variant says what failed and on which object.

use std::io;
use std::path::PathBuf;

use crate::container::ContainerStatus;
use crate::process::{capabilities::CapsError, rlimits::RlimitError, seccomp::SeccompError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },

    #[error("container {0} does not exist")]
    NotFound(String),

    #[error("container {0} already exists")]
    AlreadyExists(String),

    #[error("cannot {op} container {id}: it is {status}")]
    WrongStatus {
        id: String,
        op: &'static str,
        status: ContainerStatus,
    },

    /// runc's words ("container not running"), which containerd's shim looks for to take a
    /// kill of a container that already exited as done (ErrNotFound) rather than a failure.
    #[error("cannot {op} container {id}: container not running")]
    NotRunning { id: String, op: &'static str },

    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },

    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },

    #[error("container {id}: {stage}: {message}")]
    Init {
        id: String,
        stage: String,
        message: String,
    },

    #[error("{kind} hook {path}: {reason}")]
    Hook {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("cgroup: {0}")]
    Cgroup(#[from] berth_cgroups::CgroupError),

    #[error("seccomp: {0}")]
    Seccomp(#[from] SeccompError),

    #[error("capabilities: {0}")]
    Caps(#[from] CapsError),

    #[error("rlimits: {0}")]
    Rlimit(#[from] RlimitError),

    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
}

impl RuntimeError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        Self::Sys {
            op: op.into(),
            source,
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
