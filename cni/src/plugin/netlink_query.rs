//! Read-only netlink queries of berth's plugins (what CHECK and GC look at): a link's kind and
//! bridge, its addresses, its routes, a bridge's ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::RouteMessageBuilder;

use super::netlink::Netlink;
use crate::error::CniError;

fn nl_err(what: String) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::new(CniError::IO_FAILURE, what, e.to_string())
}

/// The kind (`veth`, `bridge`, …) of a link, if the kernel reports one.
pub(crate) fn kind_of(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// The index of the bridge (master) a link is enslaved to.
pub(crate) fn controller_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// The name of a link.
pub(crate) fn name_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

impl Netlink {
    /// The addresses (with prefix) on link `name`.
    pub fn addresses(&self, name: &str) -> Result<Vec<IpNet>, CniError> {
        let index = self.require(name)?.header.index;
        let msgs: Vec<_> = self
            .rt
            .block_on(
                self.handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect(),
            )
            .map_err(nl_err(format!("list addresses of {name}")))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })?;
                IpNet::new(ip, m.header.prefix_len).ok()
            })
            .collect())
    }

    /// The routes of the main table that leave through link `name`: destination and gateway.
    pub fn routes(&self, name: &str) -> Result<Vec<(IpNet, Option<IpAddr>)>, CniError> {
        let index = self.require(name)?.header.index;
        let mut all: Vec<RouteMessage> = Vec::new();
        for msg in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let part: Vec<RouteMessage> = self
                .rt
                .block_on(self.handle.route().get(msg).execute().try_collect())
                .map_err(nl_err(format!("list routes of {name}")))?;
            all.extend(part);
        }
        Ok(all
            .iter()
            .filter(|r| r.attributes.contains(&RouteAttribute::Oif(index)))
            .filter_map(|r| {
                let v4 = r.header.address_family == rtnetlink::packet_route::AddressFamily::Inet;
                let dst = r
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Destination(d) => route_ip(d),
                        _ => None,
                    })
                    .unwrap_or(if v4 {
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    });
                let gw = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => route_ip(g),
                    _ => None,
                });
                Some((
                    IpNet::new(dst, r.header.destination_prefix_length).ok()?,
                    gw,
                ))
            })
            .collect())
    }

    /// Every link of this namespace.
    pub fn links(&self) -> Result<Vec<LinkMessage>, CniError> {
        self.rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(nl_err("list links".to_owned()))
    }
}
