//! The bridge plugin's CHECK: the sandbox interface is a veth that is up and holds the
//! addresses and routes of the cached result, its host end is on the bridge (with hairpin
//! mode if configured), the ipMasq rules are in place, and IPAM agrees.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::link::InfoKind;

use super::bridge::{conf, host_veth_name};
use super::host_local::exec_ipam;
use super::netlink::{in_netns, Netlink};
use super::netlink_query::{controller_of, kind_of};
use super::nft::attachment_tag;
use super::skel::PluginArgs;
use crate::error::CniError;
use crate::exec::Command;

fn failed(msg: String) -> CniError {
    CniError::new(CniError::IO_FAILURE, msg, "")
}

/// What the sandbox side looks like.
struct Sandbox {
    is_veth: bool,
    up: bool,
    addresses: Vec<IpNet>,
    routes: Vec<(IpNet, Option<IpAddr>)>,
}

pub(crate) fn check(args: &PluginArgs) -> Result<(), CniError> {
    let c = conf(args)?;
    let prev = args.conf.prev()?.ok_or_else(|| {
        CniError::new(
            CniError::INVALID_NETWORK_CONFIG,
            "bridge: CHECK needs the prevResult of ADD",
            "",
        )
    })?;
    let ifname = args.ifname.clone();
    let seen = in_netns(&args.netns, move |nl| {
        let Some(link) = nl.link(&ifname)? else {
            return Ok(None);
        };
        Ok(Some(Sandbox {
            is_veth: kind_of(&link) == Some(InfoKind::Veth),
            up: nl.is_up(&ifname)?,
            addresses: nl.addresses(&ifname)?,
            routes: nl.routes(&ifname)?,
        }))
    })?;
    let where_ = format!("{} in {}", args.ifname, args.netns.display());
    let sb = seen.ok_or_else(|| failed(format!("bridge: interface {where_} is missing")))?;
    if !sb.is_veth {
        return Err(failed(format!("bridge: interface {where_} is not a veth")));
    }
    if !sb.up {
        return Err(failed(format!("bridge: interface {where_} is down")));
    }
    let sandbox_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && !i.sandbox.is_empty());
    for ip in &prev.ips {
        if ip.interface.is_some() && ip.interface != sandbox_idx {
            continue;
        }
        if !sb.addresses.contains(&ip.address) {
            return Err(failed(format!(
                "bridge: address {} missing on {where_} (has {:?})",
                ip.address, sb.addresses
            )));
        }
    }
    for r in &prev.routes {
        let ok = sb
            .routes
            .iter()
            .any(|(dst, gw)| *dst == r.dst && (r.gw.is_none() || *gw == r.gw));
        if !ok {
            return Err(failed(format!(
                "bridge: route to {} missing on {where_}",
                r.dst
            )));
        }
    }
    let host = host_veth_name(&c.name, &args.container_id, &args.ifname);
    let nl = Netlink::open()?;
    let br = nl
        .link(&c.bridge)?
        .ok_or_else(|| failed(format!("bridge: bridge {} is missing", c.bridge)))?;
    let h = nl
        .link(&host)?
        .ok_or_else(|| failed(format!("bridge: host veth {host} is missing")))?;
    if controller_of(&h) != Some(br.header.index) {
        return Err(failed(format!(
            "bridge: host veth {host} is not a port of {}",
            c.bridge
        )));
    }
    if c.hairpin_mode {
        let path = format!("/sys/class/net/{host}/brport/hairpin_mode");
        if !std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "1") {
            return Err(failed(format!("bridge: hairpin mode is off on {host}")));
        }
    }
    if c.ip_masq && !prev.ips.is_empty() {
        let tag = attachment_tag("masq", &c.name, &args.container_id, &args.ifname);
        let n = c.table()?.list()?.iter().filter(|f| f.tag == tag).count();
        if n == 0 {
            return Err(failed(format!(
                "bridge: ipMasq rules of {} missing from nft table inet {}",
                args.container_id, c.nft_table
            )));
        }
    }
    exec_ipam(args, Command::Check).map(|_| ())
}
