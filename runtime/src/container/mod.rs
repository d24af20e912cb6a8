//! Containers: the record on disk, the status, and one module per operation.

pub mod create;
pub mod delete;
pub mod exec;
mod id;
pub mod kill;
pub mod lifecycle;
mod spec_support;
pub mod start;
pub mod state;
mod status;

pub use id::ContainerId;
pub use state::{Container, ContainerRecord, OciState, Root};
pub use status::ContainerStatus;
