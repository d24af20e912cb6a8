//! Network configuration lists (`.conflist`) and single-plugin configs (`.conf`): parsing,
//! validation and loading the first one of a config dir.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::version::CniVersion;

/// A validated network configuration list: a named network and its plugin chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    name: String,
    cni_version: CniVersion,
    disable_check: bool,
    disable_gc: bool,
    plugins: Vec<PluginConfig>,
    source: Value,
}

/// One plugin of a chain: its `type`, the capabilities it asks for, and its whole JSON object
/// (unknown keys are kept: they are the plugin's own settings).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    plugin_type: String,
    capabilities: Vec<String>,
    raw: Map<String, Value>,
}

impl PluginConfig {
    /// The plugin's type: the binary name looked up in the plugin dirs.
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// The capabilities this plugin declared as `true` (e.g. `portMappings`).
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// The plugin's JSON object as written in the config.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
}

impl NetworkConfigList {
    /// Parses a `.conflist` document.
    pub fn from_conflist_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_slice(bytes)?;
        Self::from_value(v)
    }

    /// Parses a single-plugin `.conf` document into a one-plugin list.
    pub fn from_conf_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_slice(bytes)?;
        let Value::Object(mut plugin) = v else {
            return Err(ConfigError::PluginNotObject {
                network: String::new(),
                index: 0,
            });
        };
        let mut list = Map::new();
        for key in [
            "name",
            "cniVersion",
            "cniVersions",
            "disableCheck",
            "disableGC",
        ] {
            if let Some(v) = plugin.get(key) {
                list.insert(key.to_owned(), v.clone());
            }
        }
        plugin.remove("cniVersions");
        list.insert(
            "plugins".to_owned(),
            Value::Array(vec![Value::Object(plugin)]),
        );
        Self::from_value(Value::Object(list))
    }

    /// Parses either form: a document with `plugins` is a list, anything else a single plugin.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_slice(bytes)?;
        if v.get("plugins").is_some() {
            Self::from_value(v)
        } else {
            Self::from_conf_bytes(bytes)
        }
    }

    /// Validates a parsed conflist.
    pub fn from_value(v: Value) -> Result<Self, ConfigError> {
        let Value::Object(obj) = &v else {
            return Err(ConfigError::Json(serde::de::Error::custom(
                "expected a JSON object",
            )));
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(ConfigError::MissingField { field: "name" }),
        };
        if !valid_network_name(&name) {
            return Err(ConfigError::InvalidName { name });
        }
        let cni_version = pick_version(obj)?;
        let disable_check = bool_field(obj, "disableCheck")?;
        let disable_gc = bool_field(obj, "disableGC")?;
        let plugins = match obj.get("plugins") {
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(ConfigError::Json(serde::de::Error::custom(
                    "\"plugins\" must be an array",
                )))
            }
            None => return Err(ConfigError::MissingField { field: "plugins" }),
        };
        if plugins.is_empty() {
            return Err(ConfigError::NoPlugins { network: name });
        }
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(index, p)| parse_plugin(&name, index, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            source: v,
        })
    }

    /// Reads and validates one file (`.conflist`, or `.conf`/`.json` holding one plugin or a list).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parsed = if path.extension().is_some_and(|e| e == "conflist") {
            Self::from_conflist_bytes(&bytes)
        } else {
            Self::from_bytes(&bytes)
        };
        parsed.map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Loads the first config file of `dir` in file-name order, as kubelet's runtimes do.
    ///
    /// The first file is used even if it is invalid (its error is returned): silently
    /// falling through to another network would attach pods somewhere unexpected.
    pub fn load_dir(dir: &Path) -> Result<Self, ConfigError> {
        let first = config_files(dir)?
            .into_iter()
            .next()
            .ok_or_else(|| ConfigError::NoConfig {
                dir: dir.to_owned(),
            })?;
        Self::from_file(&first)
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec version the chain is run with.
    pub fn cni_version(&self) -> CniVersion {
        self.cni_version
    }

    /// Whether CHECK is disabled for this network.
    pub fn disable_check(&self) -> bool {
        self.disable_check
    }

    /// Whether GC is disabled for this network.
    pub fn disable_gc(&self) -> bool {
        self.disable_gc
    }

    /// The plugin chain, in ADD order.
    pub fn plugins(&self) -> &[PluginConfig] {
        &self.plugins
    }

    /// The document this list was parsed from (what the cache stores so DEL can replay it).
    pub fn to_json(&self) -> &Value {
        &self.source
    }
}

/// The config files of `dir` (`*.conflist`, `*.conf`, `*.json`), sorted by file name.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_dir = |source| ConfigError::ReadDir {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir)? {
        let path = entry.map_err(read_dir)?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "conflist" | "conf" | "json"));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `name` is a valid network name per the spec: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn pick_version(obj: &Map<String, Value>) -> Result<CniVersion, ConfigError> {
    // 1.1: "cniVersions" lists every version the config is valid for; use the newest we speak.
    if let Some(Value::Array(versions)) = obj.get("cniVersions") {
        if let Some(best) = versions
            .iter()
            .filter_map(|v| v.as_str()?.parse::<CniVersion>().ok())
            .max()
        {
            return Ok(best);
        }
    }
    match obj.get("cniVersion") {
        Some(Value::String(s)) => s.parse(),
        Some(other) => Err(ConfigError::UnsupportedVersion {
            version: other.to_string(),
        }),
        None => Err(ConfigError::MissingField {
            field: "cniVersion",
        }),
    }
}

fn bool_field(obj: &Map<String, Value>, field: &'static str) -> Result<bool, ConfigError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // libcni accepts the strings "true"/"false" too.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ConfigError::Json(serde::de::Error::custom(format!(
            "{field:?} must be a boolean"
        )))),
    }
}

fn parse_plugin(network: &str, index: usize, v: &Value) -> Result<PluginConfig, ConfigError> {
    let Value::Object(raw) = v else {
        return Err(ConfigError::PluginNotObject {
            network: network.to_owned(),
            index,
        });
    };
    let plugin_type = raw.get("type").and_then(Value::as_str).unwrap_or_default();
    if plugin_type.is_empty()
        || plugin_type.contains('/')
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.contains('\0')
    {
        return Err(ConfigError::InvalidPluginType {
            network: network.to_owned(),
            index,
            plugin_type: plugin_type.to_owned(),
        });
    }
    let capabilities = match raw.get("capabilities") {
        Some(Value::Object(caps)) => caps
            .iter()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    };
    Ok(PluginConfig {
        plugin_type: plugin_type.to_owned(),
        capabilities,
        raw: raw.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{
        "cniVersion": "1.0.0", "name": "pods",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": true, "dns": false}}
        ]}"#;

    #[test]
    fn parses_conflist() {
        let l = NetworkConfigList::from_conflist_bytes(LIST.as_bytes()).unwrap();
        assert_eq!(l.name(), "pods");
        assert_eq!(l.cni_version(), CniVersion::V1_0_0);
        assert_eq!(l.plugins().len(), 2);
        assert_eq!(l.plugins()[0].raw()["bridge"], "cni0");
        assert_eq!(l.plugins()[1].capabilities(), ["portMappings"]);
    }

    #[test]
    fn single_conf_becomes_list() {
        let l = NetworkConfigList::from_bytes(
            br#"{"cniVersion":"0.4.0","name":"one","type":"bridge","disableCheck":true}"#,
        )
        .unwrap();
        assert_eq!(l.plugins().len(), 1);
        assert_eq!(l.plugins()[0].plugin_type(), "bridge");
        assert!(l.disable_check());
    }

    #[test]
    fn cni_versions_picks_newest_known() {
        let l = NetworkConfigList::from_bytes(
            br#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0","9.9.9"],"name":"n","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version(), CniVersion::V1_1_0);
    }

    #[test]
    fn clear_errors() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                "missing field \"name\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "has no plugins",
            ),
            (
                r#"{"cniVersion":"7.0.0","name":"n","plugins":[{"type":"x"}]}"#,
                "unsupported cniVersion \"7.0.0\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"bad name","plugins":[{"type":"x"}]}"#,
                "network name \"bad name\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
                "plugin 0 has an invalid type \"../x\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                "invalid type \"\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[7]}"#,
                "plugin 0 is not a JSON object",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x"}"#,
                "not a valid network config",
            ),
        ];
        for (doc, want) in cases {
            let err = NetworkConfigList::from_conflist_bytes(doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{doc}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn load_dir_takes_first_by_name_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            NetworkConfigList::load_dir(dir.path()),
            Err(ConfigError::NoConfig { .. })
        ));
        fs::write(dir.path().join("20-b.conflist"), LIST).unwrap();
        fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"1.0.0","name":"first","type":"loopback"}"#,
        )
        .unwrap();
        fs::write(dir.path().join("05-ignored.txt"), "junk").unwrap();
        assert_eq!(
            NetworkConfigList::load_dir(dir.path()).unwrap().name(),
            "first"
        );
        fs::write(dir.path().join("00-bad.conflist"), "{").unwrap();
        let err = NetworkConfigList::load_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("00-bad.conflist") && err.contains("not a valid"),
            "{err}"
        );
    }
}
