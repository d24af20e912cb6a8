//! Pod networking through CNI: the network is the first config of `[cni] conf_dir` (read at
//! every RunPodSandbox, so a changed config applies to new pods), or berth's embedded bridge
//! network when the dir holds none. Plugins are looked up in `[cni] bin_dirs`, then next to
//! berthd (where berth's own plugins are installed).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cni::netns::{NetnsDir, PinnedNetns};
use cni::{
    Attachment, CapabilityArgs, CniClient, DnsCapability, NetworkConfigList, PodRef, PortMapping,
    Protocol,
};
use cri_api::v1 as cri;

use super::error::{Result, SandboxError};
use crate::spec::PodUserns;

/// The pinned user namespace of a user-namespaced pod, in its state dir.
pub const USERNS_PIN: &str = "userns";

/// A user-namespaced pod's namespaces, as containerd 2 and CRI-O make them: its user namespace
/// with the pod's mappings, pinned at `<state_dir>/userns`, and a network namespace owned by
/// it, pinned as every pod's netns is. Owned by the pod's user namespace, the netns lets the
/// pod mount a sysfs of its own and lets runc join it after the user namespace; CNI (host
/// root) can still enter it. Returns the user namespace's pin and the netns. On error nothing
/// stays pinned. Blocking.
pub fn create_userns_netns(
    netns_dir: &NetnsDir,
    id: &str,
    state_dir: &Path,
    userns: &PodUserns,
) -> Result<(PathBuf, PinnedNetns)> {
    let (user, net) =
        berth_runtime::rootfs::idmap::mapped_userns_with_netns(&userns.uids, &userns.gids)
            .map_err(|e| SandboxError::Userns(Box::new(e)))?;
    let user_pin = state_dir.join(USERNS_PIN);
    cni::netns::pin(&user, &user_pin)?;
    match netns_dir.pin(id, &net) {
        Ok(netns) => {
            tracing::info!(sandbox = id, userns = %user_pin.display(), netns = %netns.path().display(), "pod user and network namespaces pinned");
            Ok((user_pin, netns))
        }
        Err(e) => {
            if let Err(e) = cni::netns::remove_pinned(&user_pin) {
                tracing::warn!(sandbox = id, error = %e, "unpin the pod's user namespace");
            }
            Err(e.into())
        }
    }
}

/// Unpins a pod's user namespace (made by [`create_userns_netns`]), if it has one. Idempotent.
pub fn remove_userns(state_dir: &Path) -> Result<()> {
    Ok(cni::netns::remove_pinned(&state_dir.join(USERNS_PIN))?)
}

/// The interface of the pod in its netns.
pub const POD_IFNAME: &str = "eth0";
/// Time limit of one plugin call.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct PodNetwork {
    client: CniClient,
    conf_dir: PathBuf,
}

impl PodNetwork {
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self {
            client: CniClient::new(bin_dirs, cache_dir).with_timeout(PLUGIN_TIMEOUT),
            conf_dir,
        }
    }

    /// The network pods are attached to.
    pub fn load(&self) -> Result<NetworkConfigList> {
        match NetworkConfigList::load_dir(&self.conf_dir) {
            Ok(net) => Ok(net),
            Err(cni::ConfigError::NoConfig { .. }) => Self::embedded(),
            Err(cni::ConfigError::ReadDir { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::embedded()
            }
            Err(e) => Err(SandboxError::NetworkConfig(Box::new(e))),
        }
    }

    fn embedded() -> Result<NetworkConfigList> {
        NetworkConfigList::from_conflist_bytes(cni::default_conflist().as_bytes())
            .map_err(|e| SandboxError::NetworkConfig(Box::new(e)))
    }

    /// Ok when the network config loads and every plugin binary of it is found.
    pub fn ready(&self) -> std::result::Result<(), String> {
        let net = self.load().map_err(|e| e.to_string())?;
        for plugin in net.plugins() {
            cni::find_plugin(plugin.plugin_type(), self.client.bin_dirs())
                .map_err(|e| format!("network {}: {e}", net.name()))?;
        }
        Ok(())
    }

    /// CNI ADD of the pod's interface in `netns`; returns the network's name and the pod's IPs
    /// (the sandbox interface's first). Blocking.
    pub fn attach(
        &self,
        id: &str,
        netns: &Path,
        config: &cri::PodSandboxConfig,
    ) -> Result<(String, Vec<IpAddr>)> {
        let net = self.load()?;
        let att = attachment(id, netns, config, &net)?.with_capabilities(capabilities(config)?);
        let result = self
            .client
            .add(&net, &att)
            .map_err(|source| SandboxError::Cni {
                op: "ADD",
                network: net.name().to_owned(),
                source: Box::new(source),
            })?;
        let mut ips: Vec<IpAddr> = result.sandbox_ip().into_iter().collect();
        for ip in &result.ips {
            if !ips.contains(&ip.address.addr()) {
                ips.push(ip.address.addr());
            }
        }
        Ok((net.name().to_owned(), ips))
    }

    /// CNI DEL (with what was cached at ADD, so it works after a config change or a restart,
    /// and when the netns is gone). Idempotent. Blocking.
    pub fn detach(&self, id: &str, netns: &Path, config: &cri::PodSandboxConfig) -> Result<()> {
        let net = self.load()?;
        let att = attachment(id, netns, config, &net)?.with_capabilities(capabilities(config)?);
        self.client
            .del(&net, &att)
            .map_err(|source| SandboxError::Cni {
                op: "DEL",
                network: net.name().to_owned(),
                source: Box::new(source),
            })
    }
}

fn attachment(
    id: &str,
    netns: &Path,
    config: &cri::PodSandboxConfig,
    net: &NetworkConfigList,
) -> Result<Attachment> {
    let m = config.metadata.clone().unwrap_or_default();
    Ok(Attachment::new(id, netns, POD_IFNAME)
        .map_err(|source| SandboxError::Cni {
            op: "attachment",
            network: net.name().to_owned(),
            source: Box::new(source),
        })?
        .with_pod(PodRef {
            namespace: m.namespace,
            name: m.name,
            uid: m.uid,
        }))
}

/// `portMappings` (mappings with a host port only: the others merely declare a port) and `dns`.
fn capabilities(config: &cri::PodSandboxConfig) -> Result<CapabilityArgs> {
    let mut caps = CapabilityArgs::default();
    for pm in &config.port_mappings {
        if pm.host_port <= 0 {
            continue;
        }
        let text = format!("{}:{}->{}", pm.host_ip, pm.host_port, pm.container_port);
        let bad = |reason| SandboxError::PortMapping {
            mapping: text.clone(),
            reason,
        };
        let host_port = u16::try_from(pm.host_port).map_err(|_| bad("host port out of range"))?;
        let container_port = u16::try_from(pm.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("container port out of range"))?;
        let protocol = match cri::Protocol::try_from(pm.protocol) {
            Ok(cri::Protocol::Tcp) => Protocol::Tcp,
            Ok(cri::Protocol::Udp) => Protocol::Udp,
            Ok(cri::Protocol::Sctp) => Protocol::Sctp,
            Err(_) => return Err(bad("unknown protocol")),
        };
        let host_ip = match pm.host_ip.as_str() {
            "" => None,
            ip => Some(
                ip.parse()
                    .map_err(|_| bad("host IP is not an IP address"))?,
            ),
        };
        caps.port_mappings.push(PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        });
    }
    if let Some(dns) = &config.dns_config {
        caps.dns = Some(DnsCapability {
            servers: dns.servers.clone(),
            searches: dns.searches.clone(),
            options: dns.options.clone(),
        });
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_become_capabilities() {
        let mut c = cri::PodSandboxConfig {
            port_mappings: vec![
                cri::PortMapping {
                    protocol: cri::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                cri::PortMapping {
                    protocol: 0,
                    container_port: 80,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            ..Default::default()
        };
        let caps = capabilities(&c).unwrap();
        assert_eq!(caps.port_mappings.len(), 1);
        assert_eq!(caps.port_mappings[0].protocol, Protocol::Udp);
        assert_eq!(
            caps.port_mappings[0].host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        c.port_mappings[0].host_ip = "nope".into();
        let err = capabilities(&c).unwrap_err();
        assert!(matches!(err, SandboxError::PortMapping { .. }), "{err}");
    }

    #[test]
    fn embedded_network_when_the_dir_has_none() {
        let tmp = tempfile::tempdir().unwrap();
        let net = PodNetwork::new(tmp.path().join("missing"), vec![], tmp.path().join("c"));
        assert_eq!(net.load().unwrap().name(), cni::DEFAULT_NETWORK_NAME);
        let err = net.ready().unwrap_err();
        assert!(err.contains("berth-cni-bridge"), "{err}");
        std::fs::write(tmp.path().join("10-bad.conflist"), b"{").unwrap();
        let net = PodNetwork::new(tmp.path().to_owned(), vec![], tmp.path().join("c"));
        assert!(matches!(net.load(), Err(SandboxError::NetworkConfig(_))));
    }
}
