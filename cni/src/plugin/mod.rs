//! berth's own CNI plugins (the `berth-cni-*` binaries are thin mains over these):
//! loopback, host-local IPAM and the plugin skeleton they share.

pub mod bridge;
pub mod host_local;
mod ip_range;
pub mod loopback;
mod netlink;
pub mod skel;

pub use skel::{run, Plugin, PluginArgs, PluginConf};
