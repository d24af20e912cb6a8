//! SPDY/3.1 as Kubernetes uses it (moby/spdystream): client-created streams, compressed header
//! blocks, flow control, ping, goaway and reset.

pub mod frame;
pub mod headers;
pub(crate) mod session;
pub(crate) mod stream;
mod window;

pub use headers::Headers;
