//! Container RPC errors and the one place they become gRPC status codes. Every message names
//! the container (or the request) and the cause.

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::shim_client::ShimError;
use crate::spec::SpecError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{rpc}: {what} is required")]
    Missing {
        rpc: &'static str,
        what: &'static str,
    },
    #[error("{rpc}: {reason}")]
    Invalid { rpc: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pod sandbox {id} not found")]
    SandboxNotFound { id: String },
    #[error("pod sandbox {id} is not ready")]
    SandboxNotReady { id: String },
    #[error("create container {name}: image {image:?} not found (not pulled)")]
    ImageNotFound { name: String, image: String },
    #[error("create container {name}: image {image}: {reason}")]
    Image {
        name: String,
        image: String,
        reason: String,
    },
    #[error("create container {name}: runtime handler {handler:?} is not configured")]
    UnknownHandler { name: String, handler: String },
    #[error("create container {name}: spec: {source}")]
    Spec {
        name: String,
        #[source]
        source: SpecError,
    },
    #[error("container {id}: {op} {path}: {source}")]
    Io {
        id: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: rootfs snapshot: {source}")]
    Snapshot {
        id: String,
        #[source]
        source: image_store::SnapshotError,
    },
    #[error("container {id}: rootfs mount: {source}")]
    Mount {
        id: String,
        #[source]
        source: image_store::MountError,
    },
    #[error("container {id}: idmap the {what} for the pod's user namespace: {source}")]
    Idmap {
        id: String,
        what: &'static str,
        #[source]
        source: Box<berth_runtime::RuntimeError>,
    },
    #[error(
        "container {id}: bind the volume {host_path} (at {container_path}) idmapped for the pod's user namespace: {source}"
    )]
    IdmapVolume {
        id: String,
        host_path: String,
        container_path: String,
        #[source]
        source: Box<berth_runtime::RuntimeError>,
    },
    #[error("container {id}: {source}")]
    Shim {
        id: String,
        #[source]
        source: ShimError,
    },
    #[error("container {id}: {runtime} {op}: {message}")]
    Runtime {
        id: String,
        runtime: String,
        op: &'static str,
        message: String,
    },
    #[error("container {id} is {state}: cannot {op}")]
    WrongState {
        id: String,
        state: &'static str,
        op: &'static str,
    },
    #[error("container {id} is being removed")]
    Removing { id: String },
    #[error("container {id}: did not exit within {secs} s after SIGKILL")]
    StopTimeout { id: String, secs: u64 },
    #[error("container {id}: exec {cmd:?}: timeout {secs} s exceeded: context deadline exceeded")]
    ExecTimeout { id: String, cmd: String, secs: i64 },
    #[error("container {id}: cgroup: {source}")]
    Cgroup {
        id: String,
        #[source]
        source: berth_cgroups::CgroupError,
    },
    #[error("{what}: worker task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl ContainerError {
    pub fn code(&self) -> Code {
        use ContainerError as E;
        match self {
            // What berth cannot do yet is Unimplemented, as for sandboxes.
            E::Spec {
                source: SpecError::NotYet { .. },
                ..
            } => Code::Unimplemented,
            E::Missing { .. } | E::Invalid { .. } | E::UnknownHandler { .. } | E::Spec { .. } => {
                Code::InvalidArgument
            }
            E::Store(StoreError::NotFound { .. }) => Code::NotFound,
            E::Store(StoreError::Ambiguous { .. }) => Code::InvalidArgument,
            E::Store(StoreError::NameTaken { .. }) => Code::AlreadyExists,
            E::Store(_) => Code::Internal,
            E::SandboxNotFound { .. } | E::ImageNotFound { .. } => Code::NotFound,
            E::SandboxNotReady { .. } | E::WrongState { .. } | E::Removing { .. } => {
                Code::FailedPrecondition
            }
            E::StopTimeout { .. } | E::ExecTimeout { .. } => Code::DeadlineExceeded,
            E::Image { .. }
            | E::Io { .. }
            | E::Snapshot { .. }
            | E::Mount { .. }
            | E::Idmap { .. }
            | E::IdmapVolume { .. }
            | E::Shim { .. }
            | E::Runtime { .. }
            | E::Cgroup { .. }
            | E::Task { .. } => Code::Internal,
        }
    }
}

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Status {
        let code = e.code();
        // The whole chain: the top message plus the causes it does not already show.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        if code == Code::Internal {
            tracing::warn!(error = %message, "container rpc failed");
        }
        Status::new(code, message)
    }
}

/// Runs blocking work (files, mounts, the OCI runtime, the shim) off the async threads.
pub(super) async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, ContainerError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ContainerError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ContainerError::Task { what, source })?
}
