//! Address ranges of host-local IPAM: a subnet, the first and last usable address, and the
//! gateway, with the arithmetic to walk them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::error::CniError;

/// A range as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RangeConf {
    pub subnet: IpNet,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// A validated range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

pub(crate) fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

fn invalid(msg: String) -> CniError {
    CniError::new(CniError::INVALID_NETWORK_CONFIG, msg, "")
}

impl Range {
    /// Validates a configured range: defaults are network+1 (start and gateway) and the last
    /// address before broadcast (end); start, end and gateway must lie in the subnet.
    pub fn from_conf(c: &RangeConf) -> Result<Self, CniError> {
        let subnet = c.subnet.trunc();
        let net = to_u128(subnet.network());
        let last = to_u128(subnet.broadcast());
        let v4 = subnet.addr().is_ipv4();
        if last - net < 2 {
            return Err(invalid(format!("subnet {} is too small", c.subnet)));
        }
        let first_usable = net + 1;
        let last_usable = if v4 { last - 1 } else { last };
        let start = c
            .range_start
            .unwrap_or(from_u128(subnet.addr(), first_usable));
        let end = c.range_end.unwrap_or(from_u128(subnet.addr(), last_usable));
        let gateway = c.gateway.unwrap_or(from_u128(subnet.addr(), first_usable));
        for (what, ip) in [
            ("rangeStart", start),
            ("rangeEnd", end),
            ("gateway", gateway),
        ] {
            if !subnet.contains(&ip) {
                return Err(invalid(format!("{what} {ip} is not in subnet {subnet}")));
            }
        }
        if to_u128(start) > to_u128(end) {
            return Err(invalid(format!(
                "rangeStart {start} is after rangeEnd {end}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Whether `ip` may be handed out: in range, not the gateway, not network or broadcast.
    pub fn usable(&self, ip: IpAddr) -> bool {
        self.contains(ip)
            && ip != self.gateway
            && ip != self.subnet.network()
            && (ip.is_ipv6() || ip != self.subnet.broadcast())
    }

    /// The address with the subnet's prefix length, as results carry it.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.subnet.prefix_len()).expect("prefix of a valid subnet")
    }
}

/// Walks the addresses of a range set after `last` (wrapping), at most `limit` of them.
pub(crate) fn candidates(
    set: &[Range],
    last: Option<IpAddr>,
    limit: usize,
) -> impl Iterator<Item = IpAddr> + '_ {
    // Start in the range holding `last`, just after it; else at the first range's start.
    let (mut ri, mut next) = last
        .and_then(|l| {
            set.iter()
                .position(|r| r.contains(l))
                .map(|i| (i, to_u128(l) + 1))
        })
        .unwrap_or((0, to_u128(set[0].start)));
    let total: u128 = set
        .iter()
        .map(|r| to_u128(r.end) - to_u128(r.start) + 1)
        .sum();
    let count = total.min(limit as u128) as usize;
    std::iter::from_fn(move || loop {
        let r = &set[ri];
        if next > to_u128(r.end) || next < to_u128(r.start) {
            ri = (ri + 1) % set.len();
            next = to_u128(set[ri].start);
            continue;
        }
        let ip = from_u128(r.start, next);
        next += 1;
        return Some(ip);
    })
    .take(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Range {
        Range::from_conf(&RangeConf {
            subnet: s.parse().unwrap(),
            range_start: None,
            range_end: None,
            gateway: None,
        })
        .unwrap()
    }

    #[test]
    fn defaults_and_usable() {
        let r = range("10.1.2.0/24");
        assert_eq!(r.start.to_string(), "10.1.2.1");
        assert_eq!(r.end.to_string(), "10.1.2.254");
        assert_eq!(r.gateway.to_string(), "10.1.2.1");
        assert!(!r.usable("10.1.2.1".parse().unwrap()));
        assert!(r.usable("10.1.2.2".parse().unwrap()));
        assert!(!r.usable("10.1.2.255".parse().unwrap()));
        let r6 = range("fd00::/120");
        assert!(r6.usable("fd00::ff".parse().unwrap()));
    }

    #[test]
    fn walks_after_last_and_wraps() {
        let set = [range("10.1.2.0/29")];
        let ips: Vec<String> = candidates(&set, Some("10.1.2.5".parse().unwrap()), 100)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(
            ips,
            ["10.1.2.6", "10.1.2.1", "10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5"]
        );
    }

    #[test]
    fn rejects_bad_ranges() {
        let e = Range::from_conf(&RangeConf {
            subnet: "10.1.2.0/24".parse().unwrap(),
            range_start: Some("10.1.3.1".parse().unwrap()),
            range_end: None,
            gateway: None,
        })
        .unwrap_err();
        assert_eq!(e.code, CniError::INVALID_NETWORK_CONFIG);
        assert!(
            e.msg
                .contains("rangeStart 10.1.3.1 is not in subnet 10.1.2.0/24"),
            "{e}"
        );
    }
}
