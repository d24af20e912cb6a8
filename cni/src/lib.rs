//! cni: the CNI client berthd uses for every sandbox, and berth's own plugins.
//!
//! - [`NetworkConfigList`]: a validated `.conflist`/`.conf`, loaded with
//!   [`NetworkConfigList::load_dir`] (first file by name).
//! - [`CniClient`]: runs a network's plugin chain (ADD, CHECK, DEL, STATUS, GC) for an
//!   [`Attachment`], with a time limit per plugin call and an on-disk attachment cache.
//! - [`NetnsDir`]: network namespaces pinned as files under `/run/berth/netns`.
//! - [`default_conflist`]: berthd's embedded network when the config dir is empty.
//! - [`ConfigWatcher`] / [`network_ready`]: the network in effect (first config file, else the
//!   embedded default), reloaded when the config dir changes; the NetworkReady condition.
//! - [`plugin`]: berth's own plugins (`berth-cni-bridge`, `berth-cni-host-local`,
//!   `berth-cni-loopback`, `berth-cni-portmap`).

mod attachment;
mod cache;
mod client;
mod config;
mod default_network;
mod error;
mod exec;
pub mod netns;
pub mod plugin;
mod result;
mod version;
mod watch;

pub use attachment::{
    Attachment, AttachmentKey, Bandwidth, CapabilityArgs, DnsCapability, PodRef, PortMapping,
    Protocol,
};
pub use cache::{CacheEntry, ResultCache};
pub use client::{
    CniClient, DEFAULT_BIN_DIR, DEFAULT_CACHE_DIR, DEFAULT_CONF_DIR, DEFAULT_PLUGIN_TIMEOUT,
};
pub use config::{config_files, valid_network_name, NetworkConfigList, PluginConfig};
pub use default_network::{default_conflist, DEFAULT_BRIDGE, DEFAULT_NETWORK_NAME, DEFAULT_SUBNET};
pub use error::{CacheError, ClientError, CniError, ConfigError, NetnsError};
pub use exec::{find_plugin, Command};
pub use netns::{NetnsDir, PinnedNetns};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;
pub use watch::{
    load_network, network_ready, ConfigWatcher, NetworkSource, WatchedNetwork,
    DEFAULT_POLL_INTERVAL,
};
