//! The CRI services. One file per RPC family, as containerd's CRI plugin; what berth does not
//! serve answers UNIMPLEMENTED with the reason, never a fake success.

pub mod admin;
pub mod container;
mod cpu_rate;
pub mod crash_point;
pub mod handler_features;
pub mod image;
pub mod list_stream;
pub mod metrics;
pub mod runtime;
pub mod sandbox;
pub mod streaming;
