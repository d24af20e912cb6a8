//! What the runtime tells the plugins about one attachment: container ID, netns, interface
//! name, CNI_ARGS and the runtime-provided capability arguments.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ClientError;

/// One interface of one sandbox in one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    container_id: String,
    netns: PathBuf,
    ifname: String,
    pod: Option<PodRef>,
    extra_args: Vec<(String, String)>,
    capabilities: CapabilityArgs,
}

/// The Kubernetes pod a sandbox belongs to (passed in CNI_ARGS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`.
    pub uid: String,
}

/// Identifies an attachment: what GC's `cni.dev/valid-attachments` lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    /// The container (sandbox) ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the sandbox.
    #[serde(rename = "ifname")]
    pub ifname: String,
}

impl Attachment {
    /// An attachment of `ifname` in the netns at `netns` for container `container_id`.
    ///
    /// The container ID must match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; the interface name must be a
    /// valid Linux interface name (1-15 bytes, no '/', ':' or whitespace, not `.`/`..`).
    pub fn new(
        container_id: impl Into<String>,
        netns: impl Into<PathBuf>,
        ifname: impl Into<String>,
    ) -> Result<Self, ClientError> {
        let container_id = container_id.into();
        let ifname = ifname.into();
        if !crate::config::valid_network_name(&container_id) {
            return Err(ClientError::InvalidArgument {
                field: "container ID",
                value: container_id,
                reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            });
        }
        if let Err(reason) = check_ifname(&ifname) {
            return Err(ClientError::InvalidArgument {
                field: "interface name",
                value: ifname,
                reason,
            });
        }
        Ok(Attachment {
            container_id,
            netns: netns.into(),
            ifname,
            pod: None,
            extra_args: Vec::new(),
            capabilities: CapabilityArgs::default(),
        })
    }

    /// Sets the Kubernetes pod, passed as `K8S_POD_*` in CNI_ARGS.
    pub fn with_pod(mut self, pod: PodRef) -> Self {
        self.pod = Some(pod);
        self
    }

    /// Adds an extra `KEY=VALUE` to CNI_ARGS.
    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_args.push((key.into(), value.into()));
        self
    }

    /// Sets the runtime's capability arguments (port mappings, DNS, bandwidth, IPs).
    pub fn with_capabilities(mut self, capabilities: CapabilityArgs) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The container ID.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The netns path.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The capability arguments.
    pub fn capabilities(&self) -> &CapabilityArgs {
        &self.capabilities
    }

    /// The key GC uses for this attachment.
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    /// CNI_ARGS as key/value pairs: `IgnoreUnknown=1`, the pod's `K8S_POD_*`, then extras.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        let mut args = vec![("IgnoreUnknown".to_owned(), "1".to_owned())];
        if let Some(pod) = &self.pod {
            args.push(("K8S_POD_NAMESPACE".to_owned(), pod.namespace.clone()));
            args.push(("K8S_POD_NAME".to_owned(), pod.name.clone()));
            args.push((
                "K8S_POD_INFRA_CONTAINER_ID".to_owned(),
                self.container_id.clone(),
            ));
            args.push(("K8S_POD_UID".to_owned(), pod.uid.clone()));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// CNI_ARGS as the plugin sees it: `K=V;K=V`.
    pub fn cni_args_string(&self) -> String {
        self.cni_args()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    pub(crate) fn from_parts(
        key: AttachmentKey,
        netns: PathBuf,
        args: Vec<(String, String)>,
        capabilities: CapabilityArgs,
    ) -> Self {
        Attachment {
            container_id: key.container_id,
            netns,
            ifname: key.ifname,
            pod: None,
            // The cached args already hold IgnoreUnknown and the pod's keys.
            extra_args: args
                .into_iter()
                .filter(|(k, _)| k != "IgnoreUnknown")
                .collect(),
            capabilities,
        }
    }
}

fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > 15 {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("must not be . or ..");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

/// Arguments the runtime passes to plugins that declare the matching capability, in
/// `runtimeConfig` (CNI conventions doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityArgs {
    /// `portMappings`: host ports forwarded to the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// `dns`: the pod's DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsCapability>,
    /// `bandwidth`: traffic shaping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// `ips`: requested static addresses (`10.1.2.3/24` or `10.1.2.3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

impl CapabilityArgs {
    /// The `runtimeConfig` object for a plugin that declared `capabilities`: only the keys the
    /// plugin asked for and the runtime has a value for.
    pub fn runtime_config_for(&self, capabilities: &[String]) -> Map<String, Value> {
        let all = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        all.into_iter()
            .filter(|(k, _)| capabilities.iter().any(|c| c == k))
            .collect()
    }
}

/// One `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the sandbox.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: Protocol,
    /// Host address to bind to; none means every address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name (`tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// The `dns` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCapability {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// resolv.conf options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The `bandwidth` capability (bits per second and bits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate.
    #[serde(default)]
    pub ingress_rate: u64,
    /// Ingress burst.
    #[serde(default)]
    pub ingress_burst: u64,
    /// Egress rate.
    #[serde(default)]
    pub egress_rate: u64,
    /// Egress burst.
    #[serde(default)]
    pub egress_burst: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ids_and_ifnames() {
        assert!(Attachment::new("abc123", "/run/x", "eth0").is_ok());
        let e = Attachment::new("", "/run/x", "eth0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("container ID"), "{e}");
        let e = Attachment::new("c", "/run/x", "a-very-long-interface")
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 15"), "{e}");
        assert!(Attachment::new("c", "/run/x", "eth/0").is_err());
    }

    #[test]
    fn cni_args_carry_pod() {
        let a = Attachment::new("sb1", "/run/x", "eth0")
            .unwrap()
            .with_pod(PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u-1".into(),
            });
        assert_eq!(
            a.cni_args_string(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let caps = CapabilityArgs {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            bandwidth: Some(Bandwidth::default()),
            ..Default::default()
        };
        let rc = caps.runtime_config_for(&["portMappings".into(), "dns".into()]);
        assert_eq!(
            Value::Object(rc),
            serde_json::json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        assert!(caps.runtime_config_for(&[]).is_empty());
    }
}
