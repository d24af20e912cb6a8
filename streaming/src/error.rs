//! Errors of the streaming crate's public API.

use std::net::SocketAddr;

/// A CRI Exec/Attach/PortForward request the server will not make a URL for.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `container_id` is empty.
    #[error("missing required container_id")]
    MissingContainerId,
    /// `pod_sandbox_id` is empty.
    #[error("missing required pod_sandbox_id")]
    MissingSandboxId,
    /// TTY and stderr both set (a terminal cannot keep stderr apart).
    #[error("tty and stderr cannot both be true")]
    TtyWithStderr,
    /// None of stdin, stdout, stderr.
    #[error("one of stdin, stdout, or stderr must be set")]
    NoStreams,
    /// A port outside 1..=65535.
    #[error("invalid port {0}: ports are 1..=65535")]
    InvalidPort(i32),
    /// Too many URLs handed out and not yet used.
    #[error("too many streaming requests in flight (at most {max})")]
    TooManyInFlight {
        /// the limit
        max: usize,
    },
    /// The OS random source failed.
    #[error("generate a streaming token: {0}")]
    Entropy(getrandom::Error),
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the listening socket failed.
    #[error("streaming server: bind {addr}: {source}")]
    Bind {
        /// the address
        addr: SocketAddr,
        /// why
        #[source]
        source: std::io::Error,
    },
}
