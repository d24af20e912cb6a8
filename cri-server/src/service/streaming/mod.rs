//! The streaming server's backend in berthd: exec through the handler's OCI runtime
//! (`exec --process`, a pty over `--console-socket` for TTYs), attach through the container's
//! shim, port-forward inside the sandbox's network namespace. Every call cleans up when its
//! future is dropped (the client went away): exec'd processes are killed by PID, attach
//! sockets and forwarded connections closed.

mod attach;
mod detached;
mod exec;
mod port_forward;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use berth_streaming::{
    Backend, BackendError, ExitStatus, PortForwardStream, StreamIo, StreamingServer,
};
use tonic::{Code, Status};

use super::container::ContainerService;
use super::sandbox::SandboxService;
use crate::config::StreamingConfig;

/// The streaming server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming address {0:?} is not host:port")]
    Address(String),
    #[error("[streaming] tls_cert_file and tls_key_file go together: set both or neither")]
    HalfTls,
    #[error(transparent)]
    Tls(#[from] berth_streaming::TlsError),
    #[error(transparent)]
    Serve(#[from] berth_streaming::ServeError),
}

/// The streaming server's settings from berthd's `[streaming]` table.
pub fn server_config(config: &StreamingConfig) -> Result<berth_streaming::Config, StreamingError> {
    let addr: SocketAddr = config
        .address
        .parse()
        .map_err(|_| StreamingError::Address(config.address.clone()))?;
    let tls = match (
        config.tls_cert_file.as_os_str().is_empty(),
        config.tls_key_file.as_os_str().is_empty(),
    ) {
        (true, true) => None,
        (false, false) => Some(berth_streaming::server_config_from_pem(
            &config.tls_cert_file,
            &config.tls_key_file,
        )?),
        _ => return Err(StreamingError::HalfTls),
    };
    Ok(berth_streaming::Config {
        addr,
        tls,
        ..Default::default()
    })
}

/// Binds the streaming server with berthd's backend.
pub async fn start(
    config: &StreamingConfig,
    backend: StreamingBackend,
) -> Result<StreamingServer, StreamingError> {
    let config = server_config(config)?;
    Ok(StreamingServer::bind(config, Arc::new(backend)).await?)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_a_free_loopback_port_with_one_minute_urls() {
        let c = server_config(&StreamingConfig::default()).unwrap();
        assert_eq!(c.addr, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert!(c.tls.is_none());
        assert_eq!(c.token_ttl, std::time::Duration::from_secs(60));
    }

    #[test]
    fn tls_needs_both_files_and_bad_addresses_are_named() {
        let half = StreamingConfig {
            tls_cert_file: "/nonexistent/cert.pem".into(),
            ..Default::default()
        };
        assert!(matches!(server_config(&half), Err(StreamingError::HalfTls)));
        let missing = StreamingConfig {
            tls_cert_file: "/nonexistent/cert.pem".into(),
            tls_key_file: "/nonexistent/key.pem".into(),
            ..Default::default()
        };
        let e = server_config(&missing).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
        let bad = StreamingConfig {
            address: "localhost".into(),
            ..Default::default()
        };
        assert!(matches!(
            server_config(&bad),
            Err(StreamingError::Address(_))
        ));
    }
}
