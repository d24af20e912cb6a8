//! berth's OCI runtime library: everything `berth-runtime` (runc's command line) does, split into
//! small modules the way youki's libcontainer is.
//!
//! - [`container`]: the container record on disk, its status, and one module per operation
//!   (`create`, `start`, `kill`, `delete`, `exec`, `pause`, `update`, `ps`).
//! - [`process`]: what happens inside the processes the runtime forks: namespaces, the parent ↔
//!   child sync channel, capabilities, rlimits, user switch, seccomp, console, fd hygiene, and the
//!   sealed copy of the runtime binary (CVE-2019-5736).
//! - [`rootfs`]: mounts, devices, pivot_root, masked and readonly paths, idmapped mounts.
//! - [`hooks`]: OCI lifecycle hooks.
//! - [`spec_default`] and [`features`]: `berth-runtime spec` and `berth-runtime features`.

pub mod container;
pub mod cri_log;
pub mod features;
pub mod hooks;
pub mod process;
pub mod rootfs;
pub mod shim_protocol;
pub mod spec_default;

pub mod atomic_file;
pub mod error;
pub mod sys;

pub use container::{Container, ContainerId, ContainerStatus, Root};
pub use error::{Result, RuntimeError};
