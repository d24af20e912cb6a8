//! berthd's embedded network, used when the CNI config dir holds no config: bridge `berth0`
//! on 10.88.0.0/16 with host-local IPAM, portmap and loopback — all berth's own plugins.

/// Name of the embedded network.
pub const DEFAULT_NETWORK_NAME: &str = "berth";
/// Bridge of the embedded network.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// Pod subnet of the embedded network.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";

/// The embedded conflist (CNI 1.0.0), for berth's own plugin binaries.
pub const fn default_conflist() -> &'static str {
    r#"{
  "cniVersion": "1.0.0",
  "name": "berth",
  "plugins": [
    {
      "type": "berth-cni-bridge",
      "bridge": "berth0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "berth-cni-host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16", "gateway": "10.88.0.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    {
      "type": "berth-cni-portmap",
      "capabilities": { "portMappings": true }
    },
    {
      "type": "berth-cni-loopback"
    }
  ]
}
"#
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CniVersion, NetworkConfigList};

    #[test]
    fn default_conflist_is_valid() {
        let net = NetworkConfigList::from_conflist_bytes(default_conflist().as_bytes()).unwrap();
        assert_eq!(net.name(), DEFAULT_NETWORK_NAME);
        assert_eq!(net.cni_version(), CniVersion::V1_0_0);
        let types: Vec<_> = net.plugins().iter().map(|p| p.plugin_type()).collect();
        assert_eq!(
            types,
            [
                "berth-cni-bridge",
                "berth-cni-portmap",
                "berth-cni-loopback"
            ]
        );
        let bridge = net.plugins()[0].raw();
        assert_eq!(bridge["bridge"], DEFAULT_BRIDGE);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], DEFAULT_SUBNET);
        assert_eq!(net.plugins()[1].capabilities(), ["portMappings"]);
    }
}
