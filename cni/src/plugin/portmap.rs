//! The portmap plugin: forwards host ports to the pod over nftables (rules in
//! [`super::portmap_rules`], in berth's table, tagged with the attachment). Chained after a
//! plugin that created the interface; passes its result on. DEL removes the attachment's
//! rules (the table goes with the last), GC those of attachments no longer valid.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::Deserialize;

use super::nft::{attachment_tag, network_tag, Table, DEFAULT_TABLE};
use super::portmap_rules::{rules, Mapping};
use super::skel::{Plugin, PluginArgs};
use crate::attachment::AttachmentKey;
use crate::error::CniError;
use crate::result::CniResult;

const KIND: &str = "hostport";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Vec<Mapping>,
}

fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortmapConf {
    name: String,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    /// berth's extension: the nft table of the rules.
    #[serde(default = "default_table")]
    nft_table: String,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Vec<AttachmentKey>,
}

/// The portmap plugin.
#[derive(Debug, Default)]
pub struct Portmap;

fn parse(args: &PluginArgs) -> Result<(PortmapConf, Table), CniError> {
    let c: PortmapConf = args.parse()?;
    let t = Table::new(&c.nft_table)?;
    Ok((c, t))
}

fn tag(c: &PortmapConf, args: &PluginArgs) -> String {
    attachment_tag(KIND, &c.name, &args.container_id, &args.ifname)
}

/// The sandbox addresses of a result (those on an interface inside a netns, or unplaced).
fn pod_ips(r: &CniResult) -> Vec<IpNet> {
    r.ips
        .iter()
        .filter(|ip| {
            ip.interface
                .is_none_or(|i| r.interfaces.get(i).is_some_and(|i| !i.sandbox.is_empty()))
        })
        .map(|ip| ip.address)
        .collect()
}

/// Lets traffic from 127.0.0.0/8, DNATed to a pod, leave through the host-side interfaces of
/// the result (the bridge), as the reference plugin does.
fn allow_route_localnet(r: &CniResult) -> Result<(), CniError> {
    for i in r.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
        let path = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", i.name);
        if i.name.contains('/') || !std::path::Path::new(&path).exists() {
            continue;
        }
        std::fs::write(&path, "1").map_err(|e| {
            CniError::new(
                CniError::IO_FAILURE,
                format!("portmap: set {path}"),
                e.to_string(),
            )
        })?;
    }
    Ok(())
}

fn prev(args: &PluginArgs) -> Result<CniResult, CniError> {
    args.conf.prev()?.ok_or_else(|| {
        CniError::new(
            CniError::INVALID_NETWORK_CONFIG,
            "berth-cni-portmap must be chained after a plugin that creates an interface",
            "no prevResult",
        )
    })
}

impl Plugin for Portmap {
    fn add(&self, args: &PluginArgs) -> Result<CniResult, CniError> {
        let (c, table) = parse(args)?;
        let prev = prev(args)?;
        let maps = &c.runtime_config.port_mappings;
        if maps.is_empty() {
            return Ok(prev);
        }
        let rules = rules(maps, &pod_ips(&prev))?;
        allow_route_localnet(&prev)?;
        let tag = tag(&c, args);
        tracing::debug!(network = %c.name, container = %args.container_id, %tag, mappings = maps.len(), "portmap rules");
        table.replace(&tag, &rules)?;
        Ok(prev)
    }

    fn check(&self, args: &PluginArgs) -> Result<(), CniError> {
        let (c, table) = parse(args)?;
        let maps = &c.runtime_config.port_mappings;
        if maps.is_empty() {
            return Ok(());
        }
        let want = rules(maps, &pod_ips(&prev(args)?))?.len();
        let tag = tag(&c, args);
        let have = table.list()?.iter().filter(|f| f.tag == tag).count();
        if have != want {
            return Err(CniError::new(
                CniError::IO_FAILURE,
                format!(
                    "portmap: {have} of {want} rules of container {} in nft table inet {}",
                    args.container_id, c.nft_table
                ),
                "",
            ));
        }
        Ok(())
    }

    fn del(&self, args: &PluginArgs) -> Result<(), CniError> {
        let (c, table) = parse(args)?;
        if c.runtime_config.port_mappings.is_empty() {
            return Ok(());
        }
        table.remove(&tag(&c, args)).map(|_| ())
    }

    fn gc(&self, args: &PluginArgs) -> Result<(), CniError> {
        let (c, table) = parse(args)?;
        let prefix = network_tag(KIND, &c.name);
        let keep: BTreeSet<String> = c
            .valid_attachments
            .iter()
            .map(|k| attachment_tag(KIND, &c.name, &k.container_id, &k.ifname))
            .collect();
        let n = table.remove_where(|t| t.starts_with(&prefix) && !keep.contains(t))?;
        tracing::info!(network = %c.name, removed = n, "GC: stale port mappings");
        Ok(())
    }
}
