//! The plugin side of the protocol: read the environment and stdin, dispatch the command, print
//! the result (in the config's version) or the error object, exit 0 or 1.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::Value;

use crate::error::CniError;
use crate::exec::Command;
use crate::result::CniResult;
use crate::version::CniVersion;

/// What every plugin config holds, whatever the plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginConf {
    /// The version to answer in.
    pub cni_version: CniVersion,
    /// The network name.
    pub name: String,
    /// The plugin type.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The previous plugin's result, if chained.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Capability arguments from the runtime.
    #[serde(default)]
    pub runtime_config: Option<Value>,
}

impl PluginConf {
    /// The previous result, typed.
    pub fn prev(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result
            .clone()
            .filter(|v| !v.is_null())
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| {
                CniError::new(
                    CniError::DECODING_FAILURE,
                    "invalid prevResult",
                    e.to_string(),
                )
            })
    }
}

/// The environment and stdin of one call.
#[derive(Debug, Clone)]
pub struct PluginArgs {
    /// CNI_COMMAND.
    pub command: Command,
    /// CNI_CONTAINERID (empty for STATUS and GC).
    pub container_id: String,
    /// CNI_NETNS (may be empty or gone on DEL).
    pub netns: PathBuf,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS, split.
    pub args: Vec<(String, String)>,
    /// CNI_PATH, split.
    pub path: Vec<PathBuf>,
    /// The config on stdin.
    pub stdin: Vec<u8>,
    /// The common part of the config.
    pub conf: PluginConf,
}

impl PluginArgs {
    /// Decodes the whole config into the plugin's own type.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, CniError> {
        serde_json::from_slice(&self.stdin).map_err(|e| {
            CniError::new(
                CniError::DECODING_FAILURE,
                "invalid network config",
                e.to_string(),
            )
        })
    }
}

/// A CNI plugin.
pub trait Plugin {
    /// ADD: attach and return the result.
    fn add(&self, args: &PluginArgs) -> Result<CniResult, CniError>;
    /// CHECK: verify an attachment.
    fn check(&self, args: &PluginArgs) -> Result<(), CniError>;
    /// DEL: detach; must succeed when there is nothing left to remove.
    fn del(&self, args: &PluginArgs) -> Result<(), CniError>;
    /// STATUS: ready for ADD?
    fn status(&self, _args: &PluginArgs) -> Result<(), CniError> {
        Ok(())
    }
    /// GC: remove what no valid attachment uses.
    fn gc(&self, _args: &PluginArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// Runs `plugin` as the process's CNI plugin; the binaries' `main` returns this.
pub fn run<P: Plugin>(plugin: &P) -> ExitCode {
    let (out, code) = match dispatch(plugin) {
        Ok(Some(v)) => (v, ExitCode::SUCCESS),
        Ok(None) => return ExitCode::SUCCESS,
        Err(mut e) => {
            if e.cni_version.is_empty() {
                e.cni_version = CniVersion::LATEST.as_str().to_owned();
            }
            (
                serde_json::to_value(&e).expect("errors serialize"),
                ExitCode::FAILURE,
            )
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut stdout, &out);
    let _ = stdout.write_all(b"\n");
    code
}

fn env(name: &'static str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn dispatch<P: Plugin>(plugin: &P) -> Result<Option<Value>, CniError> {
    let command = Command::parse(&env("CNI_COMMAND")).ok_or_else(|| {
        CniError::new(
            CniError::INVALID_ENVIRONMENT,
            "CNI_COMMAND is not one of ADD, CHECK, DEL, STATUS, GC, VERSION",
            env("CNI_COMMAND"),
        )
    })?;
    if command == Command::Version {
        return Ok(Some(serde_json::json!({
            "cniVersion": CniVersion::LATEST,
            "supportedVersions": CniVersion::ALL,
        })));
    }
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(CniError::IO_FAILURE, "read stdin", e.to_string()))?;
    let conf: PluginConf = serde_json::from_slice(&stdin).map_err(|e| {
        CniError::new(
            CniError::DECODING_FAILURE,
            "invalid network config",
            e.to_string(),
        )
    })?;
    let needs_attachment = matches!(command, Command::Add | Command::Check | Command::Del);
    for (var, required) in [
        ("CNI_CONTAINERID", needs_attachment),
        ("CNI_IFNAME", needs_attachment),
        (
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        ),
    ] {
        if required && env(var).is_empty() {
            return Err(CniError::new(
                CniError::INVALID_ENVIRONMENT,
                format!("{var} is required for {command}"),
                "",
            ));
        }
    }
    let args = PluginArgs {
        command,
        container_id: env("CNI_CONTAINERID"),
        netns: PathBuf::from(env("CNI_NETNS")),
        ifname: env("CNI_IFNAME"),
        args: env("CNI_ARGS")
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        path: std::env::split_paths(&env("CNI_PATH")).collect(),
        stdin,
        conf,
    };
    let version = args.conf.cni_version;
    match command {
        Command::Add => Ok(Some(plugin.add(&args)?.to_json_for(version))),
        Command::Check => plugin.check(&args).map(|()| None),
        Command::Del => plugin.del(&args).map(|()| None),
        Command::Status => plugin.status(&args).map(|()| None),
        Command::Gc => plugin.gc(&args).map(|()| None),
        Command::Version => unreachable!("handled above"),
    }
}
