//! The nftables rules of one attachment's port mappings (pure: config in, rules out).
//!
//! For each mapping and each pod address of the same family:
//! - `prerouting` and `output`: traffic to a local address of the host (or to `hostIP` only)
//!   on the host port is DNATed to the pod's address and container port; `output` covers
//!   connections from the host itself, including to 127.0.0.1.
//! - `postrouting`: DNATed traffic from the pod subnet to the pod (hairpin: a pod reaching
//!   itself or a neighbour through the host port) and from 127.0.0.0/8 (which cannot leave
//!   the host as such) is masqueraded, so replies come back through the host.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::nft::{Rule, OUTPUT, POSTROUTING, PREROUTING};
use crate::error::CniError;

/// One `portMappings` entry as a plugin reads it (kubelet may send `"hostIP": ""`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".to_owned()
}

fn invalid(msg: String) -> CniError {
    CniError::new(CniError::INVALID_NETWORK_CONFIG, msg, "")
}

impl Mapping {
    /// The protocol, lower-case, if nft knows it.
    fn proto(&self) -> Result<String, CniError> {
        let p = self.protocol.to_ascii_lowercase();
        match p.as_str() {
            "tcp" | "udp" | "sctp" => Ok(p),
            _ => Err(invalid(format!(
                "portmap: protocol {:?} of hostPort {} is not tcp, udp or sctp",
                self.protocol, self.host_port
            ))),
        }
    }

    /// The host address the mapping is limited to (none for "", 0.0.0.0 and ::).
    fn host_ip(&self) -> Result<Option<IpAddr>, CniError> {
        if self.host_ip.is_empty() {
            return Ok(None);
        }
        let ip: IpAddr = self.host_ip.parse().map_err(|_| {
            invalid(format!(
                "portmap: hostIP {:?} of hostPort {} is not an address",
                self.host_ip, self.host_port
            ))
        })?;
        Ok((!ip.is_unspecified()).then_some(ip))
    }
}

/// The rules for `mappings` to the pod addresses `pod_ips` (with their prefixes).
pub(crate) fn rules(mappings: &[Mapping], pod_ips: &[IpNet]) -> Result<Vec<Rule>, CniError> {
    let mut out = Vec::new();
    for m in mappings {
        if m.host_port == 0 || m.container_port == 0 {
            return Err(invalid(format!(
                "portmap: hostPort {} -> containerPort {}: ports must not be 0",
                m.host_port, m.container_port
            )));
        }
        let proto = m.proto()?;
        let host_ip = m.host_ip()?;
        for pod in pod_ips {
            let addr = pod.addr();
            if host_ip.is_some_and(|h| h.is_ipv4() != addr.is_ipv4()) {
                continue;
            }
            let (fam, ipk, dest) = if addr.is_ipv4() {
                ("ipv4", "ip", format!("{addr}:{}", m.container_port))
            } else {
                ("ipv6", "ip6", format!("[{addr}]:{}", m.container_port))
            };
            let daddr = host_ip
                .map(|h| format!("{ipk} daddr {h} "))
                .unwrap_or_default();
            let dnat = format!(
                "meta nfproto {fam} {daddr}fib daddr type local {proto} dport {} dnat {ipk} to {dest}",
                m.host_port
            );
            for chain in [PREROUTING, OUTPUT] {
                out.push(Rule {
                    chain,
                    body: dnat.clone(),
                });
            }
            let to_pod = format!("{ipk} daddr {addr} {proto} dport {}", m.container_port);
            out.push(Rule {
                chain: POSTROUTING,
                body: format!(
                    "{ipk} saddr {} {to_pod} ct status dnat masquerade",
                    pod.trunc()
                ),
            });
            if addr.is_ipv4() {
                out.push(Rule {
                    chain: POSTROUTING,
                    body: format!("ip saddr 127.0.0.0/8 {to_pod} ct status dnat masquerade"),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: serde_json::Value) -> Mapping {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn dnat_from_host_and_localhost_with_hairpin_masquerade() {
        let maps = [m(
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": ""}),
        )];
        let pods: [IpNet; 2] = [
            "10.211.4.5/24".parse().unwrap(),
            "fd00:211:4::5/64".parse().unwrap(),
        ];
        let r = rules(&maps, &pods).unwrap();
        let bodies: Vec<(&str, &str)> = r.iter().map(|r| (r.chain.name, r.body.as_str())).collect();
        assert_eq!(
            bodies,
            [
                ("prerouting", "meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.211.4.5:80"),
                ("output", "meta nfproto ipv4 fib daddr type local tcp dport 8080 dnat ip to 10.211.4.5:80"),
                ("postrouting", "ip saddr 10.211.4.0/24 ip daddr 10.211.4.5 tcp dport 80 ct status dnat masquerade"),
                ("postrouting", "ip saddr 127.0.0.0/8 ip daddr 10.211.4.5 tcp dport 80 ct status dnat masquerade"),
                ("prerouting", "meta nfproto ipv6 fib daddr type local tcp dport 8080 dnat ip6 to [fd00:211:4::5]:80"),
                ("output", "meta nfproto ipv6 fib daddr type local tcp dport 8080 dnat ip6 to [fd00:211:4::5]:80"),
                ("postrouting", "ip6 saddr fd00:211:4::/64 ip6 daddr fd00:211:4::5 tcp dport 80 ct status dnat masquerade"),
            ]
        );
    }

    #[test]
    fn host_ip_limits_family_and_destination() {
        let maps = [m(
            serde_json::json!({"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "127.0.0.1"}),
        )];
        let pods: [IpNet; 2] = [
            "10.211.4.5/24".parse().unwrap(),
            "fd00:211:4::5/64".parse().unwrap(),
        ];
        let r = rules(&maps, &pods).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0].body,
            "meta nfproto ipv4 ip daddr 127.0.0.1 fib daddr type local udp dport 53 dnat ip to 10.211.4.5:5353"
        );
    }

    #[test]
    fn bad_mappings_are_refused() {
        let pods: [IpNet; 1] = ["10.211.4.5/24".parse().unwrap()];
        for (j, want) in [
            (
                serde_json::json!({"hostPort": 0, "containerPort": 80}),
                "ports must not be 0",
            ),
            (
                serde_json::json!({"hostPort": 1, "containerPort": 80, "protocol": "icmp"}),
                "is not tcp, udp or sctp",
            ),
            (
                serde_json::json!({"hostPort": 1, "containerPort": 80, "hostIP": "x"}),
                "is not an address",
            ),
        ] {
            let e = rules(&[m(j)], &pods).unwrap_err();
            assert_eq!(e.code, CniError::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains(want), "{e}");
        }
    }
}
