//! The CDI spec file (cncf-tags/container-device-interface `SPEC.md`, Go types in `specs-go`):
//! its types, read strictly — an unknown field fails the file, as the CDI library's loader does.
//! The checks made on a file read are in `validate.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The hooks a CDI edit may name: the OCI hook lists.
pub const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A device node's `permissions` that asks for no cgroup rule at all.
pub const NO_PERMISSIONS: &str = "none";

/// A CDI spec file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SpecFile {
    pub cdi_version: String,
    /// `vendor/class`.
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub devices: Vec<Device>,
    /// Applied once when any of the file's devices is.
    #[serde(deserialize_with = "nullable")]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(deserialize_with = "nullable")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub device_nodes: Vec<DeviceNode>,
    /// 1.1.0: network interfaces moved into the container. Refused when asked for.
    #[serde(deserialize_with = "nullable")]
    pub net_devices: Vec<NetDevice>,
    #[serde(deserialize_with = "nullable")]
    pub hooks: Vec<Hook>,
    #[serde(deserialize_with = "nullable")]
    pub mounts: Vec<Mount>,
    /// 0.7.0: resctrl settings. Refused when asked for.
    pub intel_rdt: Option<IntelRdt>,
    /// 0.7.0. The Go field is `additionalGids`; Go's decoder matches keys without regard to
    /// case, so the spelling of SPEC.md's example is read too.
    #[serde(alias = "additionalGIDs", deserialize_with = "nullable")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceNode {
    /// In the container.
    pub path: String,
    /// On the host; empty: `path`.
    pub host_path: String,
    /// `b`, `c`, `u` or `p`; empty: the host node's.
    #[serde(rename = "type")]
    pub typ: String,
    pub major: i64,
    pub minor: i64,
    pub file_mode: Option<u32>,
    /// Cgroup access, a subset of `rwm`; empty: `rwm`; `none`: no rule.
    pub permissions: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Vec<String>,
    /// 0.4.0.
    #[serde(rename = "type")]
    pub typ: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(deserialize_with = "nullable")]
    pub args: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct IntelRdt {
    #[serde(rename = "closID")]
    pub clos_id: String,
    pub l3_cache_schema: String,
    pub mem_bw_schema: String,
    #[serde(rename = "enableCMT")]
    pub enable_cmt: bool,
    #[serde(rename = "enableMBM")]
    pub enable_mbm: bool,
    /// 1.1.0.
    pub schemata: Option<Vec<String>>,
    /// 1.1.0.
    pub enable_monitoring: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NetDevice {
    pub host_interface_name: String,
    pub name: String,
}

/// A JSON/YAML `null` read as the empty value, as Go's decoder reads it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Only `kind`, from a file that does not parse as a whole: whether it is one a request needs.
#[derive(Deserialize)]
pub struct KindOnly {
    pub kind: String,
}

impl SpecFile {
    /// Parses `text` as JSON (`json`) or YAML.
    pub fn parse(text: &str, json: bool) -> Result<Self, String> {
        if json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            yaml_serde::from_str(text).map_err(|e| e.to_string())
        }
    }

    /// The `kind` of a file that did not parse as a whole, if that much can be read.
    pub fn kind_of(text: &str, json: bool) -> Option<String> {
        let k: KindOnly = if json {
            serde_json::from_str(text).ok()?
        } else {
            yaml_serde::from_str(text).ok()?
        };
        Some(k.kind)
    }
}
