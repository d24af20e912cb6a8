//! cri-server: berthd, the CRI v1 server of berth.
//!
//! - [`config`]: `/etc/berth/config.toml` with embedded defaults; [`cgroup_driver`]: which
//!   cgroup driver, chosen at start.
//! - [`server`]: the gRPC server on the CRI unix socket.
//! - [`service`]: RuntimeService and ImageService, one file per RPC family.

pub mod cgroup_driver;
pub mod config;
pub mod file_version;
pub mod pause;
pub mod process_watch;
pub mod sealed_runtime;
pub mod server;
pub mod service;
pub mod shim_client;
pub mod spec;
pub mod store;
