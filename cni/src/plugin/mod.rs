//! berth's own CNI plugins (the `berth-cni-*` binaries are thin mains over these): bridge
//! (with ipMasq over nftables), host-local IPAM, loopback, portmap (hostPort DNAT over
//! nftables), and the plugin skeleton they share.

pub mod bridge;
mod bridge_check;
pub mod host_local;
mod ip_masq;
mod ip_range;
pub mod loopback;
mod netlink;
mod netlink_query;
pub mod nft;
pub mod portmap;
mod portmap_rules;
pub mod skel;

pub use skel::{run, Plugin, PluginArgs, PluginConf};
