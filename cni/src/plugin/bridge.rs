//! The bridge plugin: a host bridge, one veth pair per attachment (host end on the bridge,
//! sandbox end renamed to CNI_IFNAME), IPv4 and IPv6 addresses and routes from the IPAM
//! plugin, the gateway addresses on the bridge, hairpin mode (netlink), and `ipMasq` (nftables,
//! see [`super::ip_masq`]). CHECK is in [`super::bridge_check`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::host_local::exec_ipam;
use super::ip_masq;
use super::netlink::{in_netns, Netlink};
use super::netlink_query::{controller_of, kind_of, name_of};
use super::nft::{Table, DEFAULT_TABLE};
use super::skel::{Plugin, PluginArgs};
use crate::attachment::AttachmentKey;
use crate::error::CniError;
use crate::exec::Command;
use crate::result::{CniResult, Interface, Route};

fn default_bridge() -> String {
    "cni0".to_owned()
}

fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BridgeConf {
    pub name: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    mtu: Option<u32>,
    /// berth's extension: the nft table of the ipMasq rules.
    #[serde(default = "default_table")]
    pub nft_table: String,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Vec<AttachmentKey>,
}

impl BridgeConf {
    pub fn table(&self) -> Result<Table, CniError> {
        Table::new(&self.nft_table)
    }
}

/// The bridge plugin.
#[derive(Debug, Default)]
pub struct Bridge;

/// Host-side veth name: stable per attachment and network (and across builds: FNV) so a
/// retried ADD, a DEL or a GC finds it; 44 bits of hash, all that fits in an interface name.
pub(crate) fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let x = super::nft::fnv64(&[network, container_id, ifname]) & ((1 << 44) - 1);
    format!("veth{x:011x}")
}

pub(crate) fn conf(args: &PluginArgs) -> Result<BridgeConf, CniError> {
    let c: BridgeConf = args.parse()?;
    if c.bridge.is_empty() || c.bridge.len() > 15 || c.bridge.contains('/') {
        return Err(CniError::new(
            CniError::INVALID_NETWORK_CONFIG,
            format!("bridge name {:?} is not a valid interface name", c.bridge),
            "",
        ));
    }
    Ok(c)
}

impl Plugin for Bridge {
    fn add(&self, args: &PluginArgs) -> Result<CniResult, CniError> {
        let c = conf(args)?;
        let table = c.table()?;
        let mut ipam = exec_ipam(args, Command::Add)?.ok_or_else(|| {
            CniError::new(
                CniError::INVALID_NETWORK_CONFIG,
                "ipam returned no result",
                "",
            )
        })?;
        let attached = attach(args, &c, &mut ipam).and_then(|r| {
            if c.ip_masq {
                ip_masq::setup(&table, &c.name, &key(args), &r.ips)?;
            }
            Ok(r)
        });
        match attached {
            Ok(r) => Ok(r),
            Err(e) => {
                if c.ip_masq {
                    let _ = ip_masq::teardown(&table, &c.name, &key(args));
                }
                let _ = exec_ipam(args, Command::Del);
                let _ = detach(args);
                Err(e)
            }
        }
    }

    fn check(&self, args: &PluginArgs) -> Result<(), CniError> {
        super::bridge_check::check(args)
    }

    fn del(&self, args: &PluginArgs) -> Result<(), CniError> {
        let c = conf(args)?;
        if c.ip_masq {
            ip_masq::teardown(&c.table()?, &c.name, &key(args))?;
        }
        exec_ipam(args, Command::Del)?;
        detach(args)
    }

    fn gc(&self, args: &PluginArgs) -> Result<(), CniError> {
        let c = conf(args)?;
        if c.ip_masq {
            let n = ip_masq::gc(&c.table()?, &c.name, &c.valid_attachments)?;
            tracing::info!(network = %c.name, removed = n, "GC: stale ipMasq rules");
        }
        gc_veths(&c)?;
        exec_ipam(args, Command::Gc).map(|_| ())
    }
}

fn key(args: &PluginArgs) -> AttachmentKey {
    AttachmentKey {
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
    }
}

/// Deletes the host ends of berth's veths on the bridge that belong to no valid attachment.
fn gc_veths(c: &BridgeConf) -> Result<(), CniError> {
    let nl = Netlink::open()?;
    let Some(br) = nl.link(&c.bridge)? else {
        return Ok(());
    };
    let mut keep = std::collections::BTreeSet::new();
    for k in &c.valid_attachments {
        keep.insert(host_veth_name(&c.name, &k.container_id, &k.ifname));
    }
    let berths = |n: &str| {
        n.len() == 15 && n.starts_with("veth") && n[4..].chars().all(|c| c.is_ascii_hexdigit())
    };
    for link in nl.links()? {
        let Some(name) = name_of(&link).map(str::to_owned) else {
            continue;
        };
        let on_bridge = controller_of(&link) == Some(br.header.index);
        let is_veth = kind_of(&link) == Some(rtnetlink::packet_route::link::InfoKind::Veth);
        if is_veth && on_bridge && berths(&name) && !keep.contains(&name) {
            tracing::info!(bridge = %c.bridge, veth = %name, "GC: deleting stale veth");
            nl.delete_link(&name)?;
        }
    }
    Ok(())
}

fn detach(args: &PluginArgs) -> Result<(), CniError> {
    let host = host_veth_name(&args.conf.name, &args.container_id, &args.ifname);
    // Deleting either end of a veth pair removes both.
    if !args.netns.as_os_str().is_empty() && crate::netns::is_pinned(&args.netns) {
        let ifname = args.ifname.clone();
        in_netns(&args.netns, move |nl| nl.delete_link(&ifname))?;
    }
    Netlink::open()?.delete_link(&host)
}

fn attach(args: &PluginArgs, c: &BridgeConf, ipam: &mut CniResult) -> Result<CniResult, CniError> {
    let nl = Netlink::open()?;
    let br = nl.ensure_bridge(&c.bridge, c.mtu)?;
    let host = host_veth_name(&args.conf.name, &args.container_id, &args.ifname);
    let ns = std::fs::File::open(&args.netns).map_err(|e| {
        CniError::new(
            CniError::IO_FAILURE,
            format!("open netns {}", args.netns.display()),
            e.to_string(),
        )
    })?;
    // A leftover of an interrupted ADD would make the create fail.
    nl.delete_link(&host)?;
    nl.create_veth(&host, &args.ifname, br.header.index, c.mtu, &ns)?;
    if c.hairpin_mode {
        nl.set_hairpin(&host, true)?;
    }
    if c.is_gateway {
        for ip in &ipam.ips {
            if let Some(gw) = ip.gateway {
                let net =
                    IpNet::new(gw, ip.address.prefix_len()).expect("prefix from a valid address");
                nl.add_address(&c.bridge, net)?;
            }
        }
        enable_forwarding(ipam.ips.iter().map(|i| i.address.addr()))?;
    }
    if c.is_default_gateway {
        for ip in &ipam.ips {
            if let Some(gw) = ip.gateway {
                let dst: IpNet = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }
                    .parse()
                    .expect("constant");
                if !ipam.routes.iter().any(|r| r.dst == dst) {
                    ipam.routes.push(Route::new(dst, Some(gw)));
                }
            }
        }
    }
    let ips = ipam.ips.clone();
    let routes = ipam.routes.clone();
    let ifname = args.ifname.clone();
    let sandbox_mac = in_netns(&args.netns, move |nl| {
        for ip in &ips {
            nl.add_address(&ifname, ip.address)?;
        }
        nl.set_up(&ifname, true)?;
        for r in &routes {
            let gw = r.gw.or_else(|| {
                ips.iter()
                    .find(|i| i.address.addr().is_ipv4() == r.dst.addr().is_ipv4())
                    .and_then(|i| i.gateway)
            });
            nl.add_route(&ifname, r.dst, gw)?;
        }
        nl.mac(&ifname)
    })?;
    let iface = |name: &str, mac: String, sandbox: String| Interface {
        name: name.to_owned(),
        mac,
        mtu: None,
        sandbox,
        socket_path: String::new(),
        pci_id: String::new(),
    };
    let mut r = CniResult::new(args.conf.cni_version);
    r.interfaces = vec![
        iface(&c.bridge, nl.mac(&c.bridge)?, String::new()),
        iface(&host, nl.mac(&host)?, String::new()),
        iface(
            &args.ifname,
            sandbox_mac,
            args.netns.to_string_lossy().into_owned(),
        ),
    ];
    r.ips = ipam
        .ips
        .iter()
        .cloned()
        .map(|mut ip| {
            ip.interface = Some(2);
            ip
        })
        .collect();
    r.routes = ipam.routes.clone();
    r.dns = ipam.dns.clone();
    Ok(r)
}

fn enable_forwarding(ips: impl Iterator<Item = IpAddr>) -> Result<(), CniError> {
    let mut v4 = false;
    let mut v6 = false;
    for ip in ips {
        v4 |= ip.is_ipv4();
        v6 |= ip.is_ipv6();
    }
    for (on, path) in [
        (v4, "/proc/sys/net/ipv4/ip_forward"),
        (v6, "/proc/sys/net/ipv6/conf/all/forwarding"),
    ] {
        if on
            && std::fs::read_to_string(path)
                .map(|s| s.trim() != "1")
                .unwrap_or(true)
        {
            std::fs::write(path, "1").map_err(|e| {
                CniError::new(
                    CniError::IO_FAILURE,
                    format!("enable forwarding ({path})"),
                    e.to_string(),
                )
            })?;
        }
    }
    Ok(())
}
