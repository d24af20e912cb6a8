//! The result a plugin prints on ADD: interfaces, IP configs, routes and DNS.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::version::CniVersion;

/// A plugin's successful ADD result (spec section "Success"), in the 1.x shape; 0.3/0.4 results
/// parse too (their per-IP `version` is kept and written back for those versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The version the plugin answered in.
    pub cni_version: CniVersion,
    /// Interfaces the chain created or configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings for the sandbox.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// An empty result of the given version.
    pub fn new(cni_version: CniVersion) -> Self {
        CniResult {
            cni_version,
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: Dns::default(),
        }
    }

    /// The result as JSON in the shape of `version`: 0.x results carry a `version` on every
    /// IP config, 1.x ones do not.
    pub fn to_json_for(&self, version: CniVersion) -> Value {
        let mut r = self.clone();
        r.cni_version = version;
        for ip in &mut r.ips {
            ip.version = if version < CniVersion::V1_0_0 {
                Some(
                    if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }
                    .to_owned(),
                )
            } else {
                None
            };
        }
        serde_json::to_value(&r).expect("a CNI result always serializes")
    }

    /// The first address of the sandbox interface (the one with a `sandbox` path), or the first
    /// address of all if no interface says where it lives.
    pub fn sandbox_ip(&self) -> Option<IpAddr> {
        self.ips
            .iter()
            .find(|ip| {
                ip.interface
                    .and_then(|i| self.interfaces.get(i))
                    .is_some_and(|i| !i.sandbox.is_empty())
            })
            .or_else(|| self.ips.first())
            .map(|ip| ip.address.addr())
    }
}

/// An interface in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU, if the plugin reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the sandbox; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// Socket path, for userspace interfaces (1.1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// PCI ID of the device (1.1).
    #[serde(rename = "pciID", default, skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"` in 0.3/0.4 results; absent from 1.x.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length, e.g. `10.88.0.5/16`.
    pub address: IpNet,
    /// Default gateway for this subnet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route the chain installed in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; absent means the default gateway of the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Priority / metric (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    /// A route to `dst`, via `gw` if given.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings in a result or a config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_1_0_result_and_converts_to_0_4() {
        let r: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},
                              {"name":"eth0","mac":"aa:bb:cc:dd:ee:01","sandbox":"/run/netns/x"}],
                "ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":1}],
                "routes":[{"dst":"0.0.0.0/0"}],
                "dns":{}}"#,
        )
        .unwrap();
        assert_eq!(r.sandbox_ip(), Some("10.88.0.5".parse().unwrap()));
        assert_eq!(r.ips[0].address.prefix_len(), 16);
        let old = r.to_json_for(CniVersion::V0_4_0);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        assert!(old.get("dns").is_none());
        let new = r.to_json_for(CniVersion::V1_0_0);
        assert!(new["ips"][0].get("version").is_none());
    }

    #[test]
    fn parses_0_4_result() {
        let r: CniResult = serde_json::from_str(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"6","address":"fd00::5/64"}]}"#,
        )
        .unwrap();
        assert_eq!(r.cni_version, CniVersion::V0_4_0);
        assert!(r.ips[0].address.addr().is_ipv6());
    }
}
