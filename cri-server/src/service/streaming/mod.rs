//! The streaming server's backend in berthd: exec through the handler's OCI runtime
//! (`exec --process`, a pty over `--console-socket` for TTYs), attach through the container's
//! shim, port-forward inside the sandbox's network namespace. Every call cleans up when its
//! future is dropped (the client went away): exec'd processes are killed by PID, attach
//! sockets and forwarded connections closed.

mod attach;
mod exec;
mod port_forward;

use async_trait::async_trait;
use berth_streaming::{Backend, BackendError, ExitStatus, PortForwardStream, StreamIo};
use tonic::{Code, Status};

use super::container::ContainerService;
use super::sandbox::SandboxService;

/// berthd's [`Backend`]: the container and sandbox services.
pub struct StreamingBackend {
    containers: ContainerService,
    sandboxes: SandboxService,
}

impl StreamingBackend {
    pub fn new(containers: ContainerService, sandboxes: SandboxService) -> Self {
        Self {
            containers,
            sandboxes,
        }
    }
}

/// A container lookup's failure as the streaming server's error.
fn container_error(id: &str, status: Status) -> BackendError {
    match status.code() {
        Code::NotFound => BackendError::ContainerNotFound(id.to_owned()),
        Code::FailedPrecondition => BackendError::ContainerNotRunning(id.to_owned()),
        _ => BackendError::Runtime(status.message().to_owned().into()),
    }
}

#[async_trait]
impl Backend for StreamingBackend {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        io: StreamIo,
    ) -> Result<ExitStatus, BackendError> {
        let (c, runtime, _) = self
            .containers
            .running(container_id)
            .map_err(|s| container_error(container_id, s))?;
        exec::exec(&c, &runtime, cmd, tty, io).await
    }

    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: StreamIo,
    ) -> Result<(), BackendError> {
        let (_, _, shim) = self
            .containers
            .running(container_id)
            .map_err(|s| container_error(container_id, s))?;
        attach::attach(shim, tty, io).await
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: PortForwardStream,
    ) -> Result<(), BackendError> {
        let sandbox = self
            .sandboxes
            .sandbox(sandbox_id)
            .map_err(|_| BackendError::SandboxNotFound(sandbox_id.to_owned()))?;
        port_forward::forward(&sandbox, port, stream).await
    }
}
