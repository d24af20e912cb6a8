//! What can go wrong with a pod sandbox, and the one place that maps it to a gRPC status.

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::shim_client::ShimError;
use crate::spec::SpecError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("unknown runtime handler {handler:?} (configured: {have})")]
    UnknownHandler { handler: String, have: String },
    #[error("sandbox image {image}: {reason}")]
    SandboxImage { image: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Pause(#[from] crate::pause::PauseError),
    #[error("network config: {0}")]
    NetworkConfig(#[source] Box<cni::ConfigError>),
    #[error("network namespace: {0}")]
    Netns(#[from] cni::NetnsError),
    #[error("the pod's user namespace: {0}")]
    Userns(#[source] Box<berth_runtime::RuntimeError>),
    #[error("CNI {op} on network {network}: {source}")]
    Cni {
        op: &'static str,
        network: String,
        #[source]
        source: Box<cni::ClientError>,
    },
    #[error("port mapping {mapping}: {reason}")]
    PortMapping {
        mapping: String,
        reason: &'static str,
    },
    #[error("pause container spec: {0}")]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Shim(#[from] ShimError),
    #[error("{runtime} {op} {id}: {message}")]
    Runtime {
        runtime: PathBuf,
        op: &'static str,
        id: String,
        message: String,
    },
    #[error("the pause process did not exit within {secs} s of SIGKILL")]
    StopTimeout { secs: u64 },
    #[error("pod cgroup {path}: {source}")]
    Cgroup {
        path: String,
        #[source]
        source: Box<berth_cgroups::CgroupError>,
    },
    #[error("{what}: {}", status.message())]
    Containers {
        what: &'static str,
        status: Box<Status>,
    },
    #[error("a blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl SandboxError {
    pub fn code(&self) -> Code {
        match self {
            SandboxError::InvalidConfig(_)
            | SandboxError::UnknownHandler { .. }
            | SandboxError::PortMapping { .. } => Code::InvalidArgument,
            SandboxError::SandboxImage { .. } => Code::FailedPrecondition,
            SandboxError::Store(StoreError::NotFound { .. }) => Code::NotFound,
            SandboxError::Store(StoreError::NameTaken { .. }) => Code::AlreadyExists,
            SandboxError::Store(StoreError::Ambiguous { .. }) => Code::InvalidArgument,
            SandboxError::Spec(SpecError::Invalid { .. }) => Code::InvalidArgument,
            SandboxError::Spec(SpecError::NotYet { .. }) => Code::Unimplemented,
            SandboxError::NetworkConfig(_) => Code::FailedPrecondition,
            SandboxError::Containers { status, .. } => status.code(),
            _ => Code::Internal,
        }
    }

    /// The gRPC status: the code of the cause, a message naming the pod (or the sandbox ID
    /// the kubelet gave) and every cause in the chain.
    pub fn into_status(self, pod: &str) -> Status {
        let mut message = format!("pod sandbox {pod}: {self}");
        let mut source = std::error::Error::source(&self);
        // `transparent` variants already print their source's message.
        if matches!(self, SandboxError::Store(_) | SandboxError::Shim(_)) {
            source = source.and_then(std::error::Error::source);
        }
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Status::new(self.code(), message)
    }
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// `op path: error` for file system work.
pub fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = SandboxError::Store(StoreError::NameTaken {
            kind: "sandbox",
            name: "a_b_c_0".into(),
            id: "1234".into(),
        });
        let s = e.into_status("default/web");
        assert_eq!(s.code(), Code::AlreadyExists);
        assert!(s.message().contains("default/web"), "{}", s.message());
        assert!(s.message().contains("a_b_c_0"), "{}", s.message());
        let e = SandboxError::UnknownHandler {
            handler: "kata".into(),
            have: "berth, runc".into(),
        };
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = io("write", "/x/hosts")(std::io::Error::from_raw_os_error(28));
        let s = e.into_status("ns/p");
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("/x/hosts"), "{}", s.message());
    }
}
