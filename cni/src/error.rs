//! Error types: the error object a plugin prints ([`CniError`]) and berth's own error enums.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exec::Command;

/// The error object a CNI plugin prints on stdout when it fails (spec section "Error").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct CniError {
    /// The version of the spec the plugin answered in.
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    /// Error code: 1-99 are reserved by the spec, 100+ are plugin-specific.
    pub code: u32,
    /// Short message.
    #[serde(default)]
    pub msg: String,
    /// Longer explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin can service ADD requests with limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;

    /// A new error object of the given code.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's name for a well-known code, if this is one.
    pub fn code_name(&self) -> Option<&'static str> {
        Some(match self.code {
            Self::INCOMPATIBLE_VERSION => "incompatible CNI version",
            Self::UNSUPPORTED_FIELD => "unsupported field",
            Self::UNKNOWN_CONTAINER => "unknown container",
            Self::INVALID_ENVIRONMENT => "invalid environment",
            Self::IO_FAILURE => "I/O failure",
            Self::DECODING_FAILURE => "decoding failure",
            Self::INVALID_NETWORK_CONFIG => "invalid network config",
            Self::TRY_AGAIN_LATER => "try again later",
            Self::NOT_AVAILABLE => "plugin not available",
            Self::LIMITED_CONNECTIVITY => "limited connectivity",
            _ => return None,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}", self.code)?;
        if let Some(name) = self.code_name() {
            write!(f, " ({name})")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

/// A network configuration that cannot be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config dir could not be listed.
    #[error("read CNI config dir {}: {source}", dir.display())]
    ReadDir {
        /// The config dir.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The config dir holds no `.conflist`, `.conf` or `.json` file.
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {}", dir.display())]
    NoConfig {
        /// The config dir.
        dir: PathBuf,
    },
    /// A config file could not be read.
    #[error("read CNI config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A config file is not valid; `source` says why.
    #[error("CNI config {}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<ConfigError>,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("not a valid network config: {0}")]
    Json(#[from] serde_json::Error),
    /// A required field is missing or empty.
    #[error("missing field {field:?}")]
    MissingField {
        /// The field's JSON name.
        field: &'static str,
    },
    /// A CNI version berth does not speak.
    #[error("unsupported cniVersion {version:?} (berth speaks 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)")]
    UnsupportedVersion {
        /// The version found.
        version: String,
    },
    /// The network name has characters the spec does not allow.
    #[error("network name {name:?} is not valid: must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    InvalidName {
        /// The name found.
        name: String,
    },
    /// A conflist with an empty `plugins` array.
    #[error("network {network:?} has no plugins")]
    NoPlugins {
        /// The network.
        network: String,
    },
    /// A plugin entry that is not a JSON object.
    #[error("network {network:?}: plugin {index} is not a JSON object")]
    PluginNotObject {
        /// The network.
        network: String,
        /// Its position in the chain.
        index: usize,
    },
    /// A plugin entry whose `type` is missing or not a plain binary name.
    #[error("network {network:?}: plugin {index} has an invalid type {plugin_type:?} (want a binary name without '/')")]
    InvalidPluginType {
        /// The network.
        network: String,
        /// Its position in the chain.
        index: usize,
        /// The type found.
        plugin_type: String,
    },
}

/// What went wrong while berth ran a plugin chain.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The network config is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An argument of the attachment is not valid.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        /// Which argument.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The plugin binary is in none of the plugin dirs.
    #[error("CNI plugin {plugin:?} not found in {}", display_dirs(dirs))]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// Where berth looked.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started or talked to.
    #[error("CNI plugin {plugin:?} ({command}): {source}")]
    Spawn {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The cause.
        source: io::Error,
    },
    /// The plugin does not speak the network's CNI version (its VERSION answer).
    #[error("CNI plugin {plugin:?} does not support cniVersion {version} of network {network:?} (it supports {})", supported.join(", "))]
    IncompatibleVersion {
        /// The plugin type.
        plugin: String,
        /// The network.
        network: String,
        /// The network's version.
        version: String,
        /// What the plugin listed.
        supported: Vec<String>,
    },
    /// The plugin did not finish in time and was killed.
    #[error("CNI plugin {plugin:?} ({command}) timed out after {after:?} and was killed")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The time limit.
        after: Duration,
    },
    /// The plugin reported an error object.
    #[error("CNI plugin {plugin:?} ({command}) failed: {error}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The error the plugin printed.
        error: CniError,
    },
    /// The plugin failed without printing an error object.
    #[error("CNI plugin {plugin:?} ({command}) exited with {status}: {stderr}")]
    Exit {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote on stderr (trimmed, possibly cut).
        stderr: String,
    },
    /// The plugin succeeded but its output is not a valid result.
    #[error("CNI plugin {plugin:?} ({command}) printed an invalid result: {source}")]
    BadResult {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: Command,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// CHECK for an attachment the cache does not know.
    #[error("network {network:?}: no attachment of container {container_id:?} interface {ifname:?} (never added, or already deleted)")]
    NotAttached {
        /// The network.
        network: String,
        /// The container ID.
        container_id: String,
        /// The interface.
        ifname: String,
    },
    /// The on-disk result cache could not be used.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl ClientError {
    /// The plugin's error object, if a plugin reported one.
    pub fn cni_error(&self) -> Option<&CniError> {
        match self {
            ClientError::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The attachment cache on disk could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A filesystem operation failed.
    #[error("CNI cache {}: {op}: {source}", path.display())]
    Io {
        /// What berth was doing.
        op: &'static str,
        /// The file or dir.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A network namespace could not be created, pinned or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name cannot be a file name.
    #[error("netns name {name:?} is not valid: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A filesystem operation failed.
    #[error("netns {}: {op}: {source}", path.display())]
    Io {
        /// What berth was doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A system call failed.
    #[error("netns {}: {op}: {source}", path.display())]
    Sys {
        /// What berth was doing.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: nix::Error,
    },
    /// The helper thread that creates or enters the netns panicked.
    #[error("netns {}: helper thread panicked", path.display())]
    ThreadPanicked {
        /// The path.
        path: PathBuf,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no plugin dirs configured)".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plugin_error_object() {
        let e: CniError = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"10.0.0.0/33"}"#,
        )
        .unwrap();
        assert_eq!(e.code, CniError::INVALID_NETWORK_CONFIG);
        assert_eq!(
            e.to_string(),
            "code 7 (invalid network config): bad subnet; 10.0.0.0/33"
        );
        let e: CniError = serde_json::from_str(r#"{"code":123,"msg":"x"}"#).unwrap();
        assert_eq!(e.to_string(), "code 123: x");
    }
}
