//! The loopback plugin: brings `lo` up in the sandbox (and down on DEL).

use super::netlink::in_netns;
use super::skel::{Plugin, PluginArgs};
use crate::error::CniError;
use crate::result::{CniResult, Interface, IpConfig};

/// The loopback plugin.
#[derive(Debug, Default)]
pub struct Loopback;

impl Plugin for Loopback {
    fn add(&self, args: &PluginArgs) -> Result<CniResult, CniError> {
        in_netns(&args.netns, |nl| nl.set_up("lo", true))?;
        // Chained after another plugin: pass its result on, as the reference plugin does.
        if let Some(prev) = args.conf.prev()? {
            return Ok(prev);
        }
        let mut r = CniResult::new(args.conf.cni_version);
        r.interfaces.push(Interface {
            name: "lo".to_owned(),
            mac: "00:00:00:00:00:00".to_owned(),
            mtu: None,
            sandbox: args.netns.to_string_lossy().into_owned(),
            socket_path: String::new(),
            pci_id: String::new(),
        });
        for addr in ["127.0.0.1/8", "::1/128"] {
            r.ips.push(IpConfig {
                version: None,
                address: addr.parse().expect("constant address"),
                gateway: None,
                interface: Some(0),
            });
        }
        Ok(r)
    }

    fn check(&self, args: &PluginArgs) -> Result<(), CniError> {
        let up = in_netns(&args.netns, |nl| nl.is_up("lo"))?;
        if !up {
            return Err(CniError::new(
                CniError::IO_FAILURE,
                "loopback: lo is down",
                "",
            ));
        }
        Ok(())
    }

    fn del(&self, args: &PluginArgs) -> Result<(), CniError> {
        if args.netns.as_os_str().is_empty() || !args.netns.exists() {
            return Ok(());
        }
        in_netns(&args.netns, |nl| nl.set_up("lo", false))
    }
}
