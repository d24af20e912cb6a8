//! berth's streaming server: the HTTP endpoint behind CRI Exec, Attach and PortForward.
//!
//! berthd asks [`StreamingServer`] for a one-time URL ([`StreamingServer::exec_url`] …) and
//! returns it to kubelet or crictl, which connect with SPDY/3.1 (remotecommand
//! `channel.k8s.io` v1–v4, `portforward.k8s.io`) or WebSocket (`v4`/`v5.channel.k8s.io`,
//! `v2.portforward.k8s.io`). The server then calls back into berthd through [`Backend`].
//!
//! ```text
//!  client ──HTTP upgrade──► server.rs ──► spdy::session / websocket.rs (framing, flow control)
//!                                          └► remotecommand.rs / portforward.rs ──► Backend
//! ```

mod backend;
mod error;
mod portforward;
mod remotecommand;
mod server;
pub mod spdy;
mod status;
mod tls;
mod tokens;
mod websocket;

pub use backend::{
    Backend, BackendError, ExitStatus, Output, PortForwardStream, Stdin, StreamIo, TerminalSize,
};
pub use error::{RequestError, ServeError};
pub use server::{Config, StreamingServer};
pub use tls::{server_config_from_pem, TlsError};
