//! berthd's configuration: `/etc/berth/config.toml`, every key with an embedded default, so
//! that a missing file (or an empty one) gives a working node. `berthd --print-config` prints
//! the effective configuration in this format.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::cgroup_driver::CgroupDriver;
use crate::cgroup_driver::{Choice, HostFacts};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// The host the systemd driver runs on.
const SYSTEMD_V2: HostFacts = HostFacts {
    systemd_booted: true,
    cgroup2: true,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config: default_runtime {name:?} is not a configured runtime (have: {have})")]
    UnknownDefaultRuntime { name: String, have: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: content, snapshots, metadata.
    pub root: PathBuf,
    /// Runtime state: sockets, shim state, pinned network namespaces.
    pub state: PathBuf,
    /// The CRI socket.
    pub listen: PathBuf,
    /// The shims' control sockets: short, so that every socket path (a fixed-length name in
    /// it) fits a unix socket address whatever `state` is.
    pub shim_socket_dir: PathBuf,
    /// The RuntimeClass handler used when a pod names none.
    pub default_runtime: String,
    pub cgroup: CgroupConfig,
    pub registry: RegistryConfig,
    pub cni: CniConfig,
    pub cdi: CdiConfig,
    pub sandbox: SandboxConfig,
    pub streaming: StreamingConfig,
    /// RuntimeClass handler name → OCI runtime.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// `cgroupfs` or `systemd` (reported to the kubelet by RuntimeConfig). Unset: resolved at
    /// start ([`Config::with_resolved_cgroup_driver`]) to `systemd` where systemd is PID 1 on
    /// cgroup v2, `cgroupfs` elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<CgroupDriver>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// containerd's hosts.toml layout: one folder per registry host.
    pub config_path: PathBuf,
    /// Registry hosts (`host` or `host:port`, e.g. `"127.0.0.1:5000"`) spoken to over plain
    /// HTTP; every other registry uses HTTPS. Default: none.
    pub insecure: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Conflists; when it holds none, berthd uses its embedded bridge network.
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiConfig {
    /// CDI spec directories (`*.json`, `*.yaml`), in increasing priority: a device defined in
    /// a later directory replaces the same device of an earlier one. Read when a container
    /// asks for CDI devices.
    pub spec_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Empty: the built-in pause image.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Address of the exec/attach/port-forward server; port 0 picks a free one.
    pub address: String,
    /// PEM certificate chain (leaf first): with `tls_key_file`, the server speaks HTTPS and
    /// its URLs are `https://`. Empty: plain HTTP.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    /// Path of an OCI runtime with runc's command line.
    pub path: PathBuf,
    /// Its state root (`--root`); empty: `<state>/runtimes/<handler>`.
    #[serde(default)]
    pub root: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            listen: "/run/berth/berth.sock".into(),
            shim_socket_dir: "/run/berth/s".into(),
            default_runtime: "berth".into(),
            cgroup: CgroupConfig::default(),
            registry: RegistryConfig::default(),
            cni: CniConfig::default(),
            cdi: CdiConfig::default(),
            sandbox: SandboxConfig::default(),
            streaming: StreamingConfig::default(),
            runtimes: BTreeMap::new(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            config_path: "/etc/berth/certs.d".into(),
            insecure: Vec::new(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into()],
        }
    }
}

impl Default for CdiConfig {
    fn default() -> Self {
        Self {
            spec_dirs: crate::spec::CDI_DEFAULT_SPEC_DIRS
                .map(PathBuf::from)
                .to_vec(),
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:0".into(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file at the default location means "all defaults".
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Fills in the runtime handlers every node has: `berth` (berth-runtime, installed next to
    /// berthd) and `runc`/`crun` when their binaries exist, unless the file configured them.
    pub fn with_detected_runtimes(
        mut self,
        berthd_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let berth_runtime = berthd_dir
            .map(|d| d.join("berth-runtime"))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/berth-runtime"));
        let candidates = [
            ("berth", berth_runtime),
            ("runc", PathBuf::from("/usr/sbin/runc")),
            ("crun", PathBuf::from("/usr/bin/crun")),
        ];
        for (name, path) in candidates {
            if !self.runtimes.contains_key(name) && (name == "berth" || path.exists()) {
                self.runtimes.insert(
                    name.to_owned(),
                    RuntimeHandler {
                        path,
                        root: PathBuf::new(),
                    },
                );
            }
        }
        for (name, handler) in self.runtimes.iter_mut() {
            if handler.root.as_os_str().is_empty() {
                handler.root = self.state.join("runtimes").join(name);
            }
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(ConfigError::UnknownDefaultRuntime {
                name: self.default_runtime.clone(),
                have: self.runtimes.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(self)
    }

    /// Sets `[cgroup] driver` when the file did not: systemd where `host` says systemd is PID 1
    /// and /sys/fs/cgroup is cgroup v2, cgroupfs elsewhere (logged with why). An explicit value
    /// wins. berthd calls it once at start, and [`crate::server::serve`] for a config that
    /// comes without one, so that everything after sees a concrete driver.
    pub fn with_resolved_cgroup_driver(mut self, host: impl Fn() -> HostFacts) -> Self {
        let (driver, choice) = crate::cgroup_driver::resolve(self.cgroup.driver, &host);
        match choice {
            Choice::Configured => {
                tracing::info!(driver = driver.name(), "cgroup driver as configured");
                let facts = if driver.is_systemd() {
                    host()
                } else {
                    SYSTEMD_V2
                };
                if facts != SYSTEMD_V2 {
                    tracing::warn!(
                        systemd_booted = facts.systemd_booted,
                        cgroup2 = facts.cgroup2,
                        "[cgroup] driver = \"systemd\" needs systemd as PID 1 on cgroup v2: \
                         pods will fail to start here"
                    );
                }
            }
            Choice::Detected(facts) => tracing::info!(
                driver = driver.name(),
                systemd_booted = facts.systemd_booted,
                cgroup2 = facts.cgroup2,
                "cgroup driver chosen for this host ([cgroup] driver is not set): {}",
                choice.reason()
            ),
        }
        self.cgroup.driver = Some(driver);
        self
    }

    /// The cgroup driver in use: resolved at start ([`Self::with_resolved_cgroup_driver`]);
    /// a config never resolved (one built by a unit test) means cgroupfs.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.cgroup.driver.unwrap_or(CgroupDriver::Cgroupfs)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, PathBuf::from("/run/berth/berth.sock"));
        assert_eq!(c.cni.bin_dirs, vec![PathBuf::from("/opt/cni/bin")]);
        assert_eq!(
            c.cdi.spec_dirs,
            [PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
        );
        let c = Config::parse(Path::new("x.toml"), "[cdi]\nspec_dirs = [\"/opt/cdi\"]\n").unwrap();
        assert_eq!(c.cdi.spec_dirs, [PathBuf::from("/opt/cdi")]);
    }

    #[test]
    fn keys_override_defaults_and_round_trip() {
        let c = Config::parse(
            Path::new("x.toml"),
            "[cni]\nconf_dir = \"/tmp/net\"\n[runtimes.kata]\npath = \"/usr/bin/kata\"\n",
        )
        .unwrap();
        assert_eq!(c.cni.conf_dir, PathBuf::from("/tmp/net"));
        assert_eq!(c.cni.bin_dirs, vec![PathBuf::from("/opt/cni/bin")]);
        let c = c
            .with_detected_runtimes(Some(Path::new("/opt/berth")))
            .unwrap();
        assert_eq!(
            c.runtimes["berth"].path,
            PathBuf::from("/opt/berth/berth-runtime")
        );
        assert_eq!(
            c.runtimes["kata"].root,
            PathBuf::from("/run/berth/runtimes/kata")
        );
        let again = Config::parse(Path::new("y.toml"), &c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn an_unset_cgroup_driver_is_resolved_for_the_host_and_an_explicit_one_wins() {
        let unset = Config::parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(unset.cgroup.driver, None);
        assert!(!unset.to_toml().contains("driver"));
        let systemd_v2 = || HostFacts {
            systemd_booted: true,
            cgroup2: true,
        };
        let resolved = unset.with_resolved_cgroup_driver(systemd_v2);
        assert_eq!(resolved.cgroup_driver(), CgroupDriver::Systemd);
        // --print-config shows the driver in use.
        assert!(
            resolved
                .to_toml()
                .contains("[cgroup]\ndriver = \"systemd\""),
            "{}",
            resolved.to_toml()
        );
        let explicit = Config::parse(Path::new("x.toml"), "[cgroup]\ndriver = \"cgroupfs\"\n")
            .unwrap()
            .with_resolved_cgroup_driver(systemd_v2);
        assert_eq!(explicit.cgroup_driver(), CgroupDriver::Cgroupfs);
        let err = Config::parse(Path::new("x.toml"), "[cgroup]\ndriver = \"auto\"\n");
        assert!(err.is_err());
    }

    #[test]
    fn unknown_keys_and_bad_defaults_are_errors() {
        let err =
            Config::parse(Path::new("/etc/berth/config.toml"), "[cni]\nconfdir = 1\n").unwrap_err();
        assert!(err.to_string().contains("/etc/berth/config.toml"), "{err}");
        let c = Config {
            default_runtime: "nope".into(),
            ..Config::default()
        };
        assert!(c.with_detected_runtimes(None).is_err());
    }
}
