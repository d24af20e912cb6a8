//! berth's own CNI plugins (the `berth-cni-*` binaries are thin mains over these): bridge,
//! host-local IPAM, loopback, portmap (pass-through for now), and the plugin skeleton they
//! share. Not yet: ipMasq (nftables masquerade) in bridge, port forwarding in portmap.

pub mod bridge;
pub mod host_local;
mod ip_range;
pub mod loopback;
mod netlink;
pub mod portmap;
pub mod skel;

pub use skel::{run, Plugin, PluginArgs, PluginConf};
