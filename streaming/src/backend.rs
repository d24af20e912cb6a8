//! The boundary to berthd: what the streaming server calls to exec, attach and port-forward.

use std::io;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// What a client types into the container (EOF when the client closes stdin).
pub type Stdin = Box<dyn AsyncRead + Send + Unpin>;
/// Where the container's output goes (dropping it ends the stream for the client).
pub type Output = Box<dyn AsyncWrite + Send + Unpin>;
/// One forwarded connection: read what the client sends, write what the pod answers; drop (or
/// shut down) to end it.
pub type PortForwardStream = tokio::io::DuplexStream;

/// A terminal size from the client (the JSON of Kubernetes' `TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    /// columns
    #[serde(rename = "Width")]
    pub width: u16,
    /// rows
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of an exec or attach. Streams the client did not ask for are `None`; in
/// TTY mode stderr is always `None` (the terminal merges it into stdout).
pub struct StreamIo {
    /// stdin, if requested
    pub stdin: Option<Stdin>,
    /// stdout, if requested
    pub stdout: Option<Output>,
    /// stderr, if requested and not a TTY
    pub stderr: Option<Output>,
    /// terminal resizes (TTY with a resize-capable protocol only); the first is the initial size
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// How an exec'd process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    code: i32,
}

impl ExitStatus {
    /// From an exit code (128+N for a process killed by signal N).
    pub fn from_code(code: i32) -> Self {
        Self { code }
    }
    /// The exit code.
    pub fn code(&self) -> i32 {
        self.code
    }
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Why the backend could not exec, attach or forward.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No such container.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// The container exists but does not run.
    #[error("container {0} is not running")]
    ContainerNotRunning(String),
    /// No such pod sandbox.
    #[error("pod sandbox {0} not found")]
    SandboxNotFound(String),
    /// Nothing listens on the port inside the pod.
    #[error("connect to port {port} in the pod: {source}")]
    PortUnreachable {
        /// the port
        port: u16,
        /// why
        #[source]
        source: io::Error,
    },
    /// Copying failed.
    #[error("streaming i/o: {0}")]
    Io(#[from] io::Error),
    /// The runtime (shim, OCI runtime) failed.
    #[error("runtime: {0}")]
    Runtime(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What the streaming server needs from the container runtime. The future of a call is dropped
/// if the client goes away before it completes: implementations must clean up on drop (kill an
/// exec'd process, detach an attacher, close a forwarded connection).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in the container; returns once the process exited and its output was written.
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> Result<ExitStatus, BackendError>;

    /// Attaches to the container's main process until it exits or the client detaches.
    async fn attach(&self, container_id: &str, tty: bool, io: StreamIo)
        -> Result<(), BackendError>;

    /// Connects `stream` to `port` inside the sandbox's network namespace until either side ends.
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: PortForwardStream,
    ) -> Result<(), BackendError>;
}
