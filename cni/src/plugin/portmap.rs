//! The portmap plugin. Forwarding host ports over nftables is not implemented yet: without
//! port mappings the plugin passes the previous result through (so chains like berthd's
//! default network work); with mappings it fails clearly instead of silently not forwarding.

use serde::Deserialize;

use super::skel::{Plugin, PluginArgs};
use crate::attachment::PortMapping;
use crate::error::CniError;
use crate::result::CniResult;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortmapConf {
    #[serde(default)]
    runtime_config: RuntimeConfig,
}

/// The portmap plugin.
#[derive(Debug, Default)]
pub struct Portmap;

impl Plugin for Portmap {
    fn add(&self, args: &PluginArgs) -> Result<CniResult, CniError> {
        let conf: PortmapConf = args.parse()?;
        if let Some(m) = conf.runtime_config.port_mappings.first() {
            return Err(CniError::new(
                CniError::UNSUPPORTED_FIELD,
                format!(
                    "berth-cni-portmap: port mappings are not implemented yet (hostPort {} -> {}/{})",
                    m.host_port,
                    m.container_port,
                    m.protocol.as_str()
                ),
                "use the reference portmap plugin in a conflist under the CNI config dir",
            ));
        }
        args.conf.prev()?.ok_or_else(|| {
            CniError::new(
                CniError::INVALID_NETWORK_CONFIG,
                "berth-cni-portmap must be chained after a plugin that creates an interface",
                "no prevResult",
            )
        })
    }

    fn check(&self, _args: &PluginArgs) -> Result<(), CniError> {
        Ok(())
    }

    fn del(&self, _args: &PluginArgs) -> Result<(), CniError> {
        Ok(())
    }
}
