//! The bridge plugin's `ipMasq`: traffic from a pod's address that leaves the pod subnet is
//! masqueraded (multicast excepted), traffic within the subnet is not. One rule per pod
//! address in the `postrouting` chain of berth's nft table, tagged with the attachment, so
//! DEL removes exactly that attachment's rules and the table goes with the last one.

use std::collections::BTreeSet;

use super::nft::{attachment_tag, network_tag, Rule, Table, POSTROUTING};
use crate::attachment::AttachmentKey;
use crate::error::CniError;
use crate::result::IpConfig;

const KIND: &str = "masq";

/// The rules masquerading what `ips` send out of their subnets.
pub(crate) fn rules(ips: &[IpConfig]) -> Vec<Rule> {
    ips.iter()
        .map(|ip| {
            let addr = ip.address.addr();
            let subnet = ip.address.trunc();
            let body = if addr.is_ipv4() {
                format!("ip saddr {addr} ip daddr != {subnet} ip daddr != 224.0.0.0/4 masquerade")
            } else {
                format!("ip6 saddr {addr} ip6 daddr != {subnet} ip6 daddr != ff00::/8 masquerade")
            };
            Rule {
                chain: POSTROUTING,
                body,
            }
        })
        .collect()
}

/// Installs (or re-installs) the masquerade rules of one attachment.
pub(crate) fn setup(
    table: &Table,
    network: &str,
    key: &AttachmentKey,
    ips: &[IpConfig],
) -> Result<(), CniError> {
    let tag = attachment_tag(KIND, network, &key.container_id, &key.ifname);
    tracing::debug!(network, container = %key.container_id, %tag, "ipMasq rules");
    table.replace(&tag, &rules(ips))
}

/// Removes the masquerade rules of one attachment.
pub(crate) fn teardown(table: &Table, network: &str, key: &AttachmentKey) -> Result<(), CniError> {
    let tag = attachment_tag(KIND, network, &key.container_id, &key.ifname);
    table.remove(&tag).map(|_| ())
}

/// Removes the masquerade rules of `network` that belong to none of `valid`.
pub(crate) fn gc(table: &Table, network: &str, valid: &[AttachmentKey]) -> Result<usize, CniError> {
    let prefix = network_tag(KIND, network);
    let keep: BTreeSet<String> = valid
        .iter()
        .map(|k| attachment_tag(KIND, network, &k.container_id, &k.ifname))
        .collect();
    table.remove_where(|t| t.starts_with(&prefix) && !keep.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_subnet() {
        let ips: Vec<IpConfig> = serde_json::from_value(serde_json::json!([
            { "address": "10.210.3.7/24" }, { "address": "fd00:210:3::7/64" }
        ]))
        .unwrap();
        let r = rules(&ips);
        assert_eq!(
            r[0].body,
            "ip saddr 10.210.3.7 ip daddr != 10.210.3.0/24 ip daddr != 224.0.0.0/4 masquerade"
        );
        assert_eq!(
            r[1].body,
            "ip6 saddr fd00:210:3::7 ip6 daddr != fd00:210:3::/64 ip6 daddr != ff00::/8 masquerade"
        );
        assert!(r.iter().all(|r| r.chain == POSTROUTING));
    }
}
