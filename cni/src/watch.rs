//! Which network berthd attaches pods to, kept current without a restart: the first config
//! file of the config dir by file name ([`NetworkConfigList::load_dir`]), or the embedded
//! default network when the dir holds none (or does not exist). [`ConfigWatcher`] polls the
//! dir — names, sizes, modification times and inodes of its config files — at most once per
//! poll interval, and reloads when they change. [`network_ready`] is the CRI NetworkReady
//! condition: a valid config exists and every plugin it names is found.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{config_files, NetworkConfigList};
use crate::default_network::default_conflist;
use crate::error::ConfigError;
use crate::exec::find_plugin;

/// Default time between two looks at the config dir.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where the current network came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSource {
    /// A config file of the config dir.
    File(PathBuf),
    /// The embedded default network (the config dir holds no config).
    EmbeddedDefault,
}

/// The network in effect, with a generation that grows each time it changes.
#[derive(Debug, Clone)]
pub struct WatchedNetwork {
    /// The parsed network.
    pub config: NetworkConfigList,
    /// Where it came from.
    pub source: NetworkSource,
    /// 1 for the first config seen, +1 on every change.
    pub generation: u64,
}

/// Loads the network in effect for `conf_dir`: its first config file by name (whose error is
/// returned if it is invalid), or the embedded default if it holds none.
pub fn load_network(conf_dir: &Path) -> Result<(NetworkConfigList, NetworkSource), ConfigError> {
    let files = match config_files(conf_dir) {
        Ok(files) => files,
        Err(ConfigError::ReadDir { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    match files.first() {
        Some(first) => Ok((
            NetworkConfigList::from_file(first)?,
            NetworkSource::File(first.clone()),
        )),
        None => Ok((
            NetworkConfigList::from_conflist_bytes(default_conflist().as_bytes())?,
            NetworkSource::EmbeddedDefault,
        )),
    }
}

/// Every plugin binary `net` needs (chain plugins and their `ipam.type`) is in `bin_dirs`.
fn plugins_found(net: &NetworkConfigList, bin_dirs: &[PathBuf]) -> Result<(), String> {
    for p in net.plugins() {
        find_plugin(p.plugin_type(), bin_dirs).map_err(|e| e.to_string())?;
        if let Some(ipam) = p.raw().get("ipam").and_then(|i| i.get("type")) {
            let ipam = ipam.as_str().unwrap_or_default();
            find_plugin(ipam, bin_dirs)
                .map_err(|e| format!("network {:?}: ipam: {e}", net.name()))?;
        }
    }
    Ok(())
}

/// The CRI NetworkReady condition for a config dir and plugin dirs: `Err(reason)` until a
/// valid config exists (or the embedded default applies) and all its plugins are found.
pub fn network_ready(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<(), String> {
    let (net, _) = load_network(conf_dir).map_err(|e| e.to_string())?;
    plugins_found(&net, bin_dirs)
}

/// What the config dir looked like: (file name, size, mtime in ns, inode) of each config file.
type Fingerprint = Vec<(PathBuf, u64, i128, u64)>;

fn fingerprint(conf_dir: &Path) -> Fingerprint {
    let mut out: Fingerprint = config_files(conf_dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let m = p.metadata().ok()?;
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            Some((p, m.len(), mtime, m.ino()))
        })
        .collect();
    out.sort();
    out
}

#[derive(Debug)]
struct State {
    checked_at: Option<Instant>,
    seen: Option<Fingerprint>,
    current: Result<Arc<WatchedNetwork>, String>,
    generation: u64,
}

/// Watches a config dir (by polling, at most once per interval); shareable between threads.
#[derive(Debug)]
pub struct ConfigWatcher {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    interval: Duration,
    state: Mutex<State>,
}

impl ConfigWatcher {
    /// A watcher of `conf_dir` whose readiness looks for plugins in `bin_dirs`.
    pub fn new(conf_dir: impl Into<PathBuf>, bin_dirs: Vec<PathBuf>) -> Self {
        ConfigWatcher {
            conf_dir: conf_dir.into(),
            bin_dirs,
            interval: DEFAULT_POLL_INTERVAL,
            state: Mutex::new(State {
                checked_at: None,
                seen: None,
                current: Err("CNI config not loaded yet".to_owned()),
                generation: 0,
            }),
        }
    }

    /// Sets the least time between two looks at the dir (zero: look on every call).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The config dir.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// The network in effect now, reloaded if the dir changed since the last look; `Err` with
    /// the reason (naming the file and the cause) while the first config file is invalid.
    pub fn current(&self) -> Result<Arc<WatchedNetwork>, String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = st.checked_at.is_none_or(|t| t.elapsed() >= self.interval);
        if !due {
            return st.current.clone();
        }
        st.checked_at = Some(Instant::now());
        let fp = fingerprint(&self.conf_dir);
        if st.seen.as_ref() == Some(&fp) {
            return st.current.clone();
        }
        st.seen = Some(fp);
        let loaded = load_network(&self.conf_dir).map_err(|e| e.to_string());
        let changed = match (&loaded, &st.current) {
            (Ok((net, src)), Ok(cur)) => {
                net.to_json() != cur.config.to_json() || *src != cur.source
            }
            _ => true,
        };
        if changed {
            st.current = loaded.map(|(config, source)| {
                st.generation += 1;
                tracing::info!(conf_dir = %self.conf_dir.display(), network = config.name(),
                    source = ?source, generation = st.generation, "CNI network (re)loaded");
                Arc::new(WatchedNetwork {
                    config,
                    source,
                    generation: st.generation,
                })
            });
            if let Err(e) = &st.current {
                tracing::warn!(conf_dir = %self.conf_dir.display(), error = %e, "no valid CNI network");
            }
        }
        st.current.clone()
    }

    /// NetworkReady: `Err(reason)` unless the current network is valid and its plugins exist.
    pub fn ready(&self) -> Result<(), String> {
        let net = self.current()?;
        plugins_found(&net.config, &self.bin_dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn conflist(name: &str, plugin: &str) -> String {
        format!(r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"{plugin}"}}]}}"#)
    }

    #[test]
    fn follows_the_dir_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let w = ConfigWatcher::new(&conf, vec![bin.clone()]).with_poll_interval(Duration::ZERO);

        // No dir: the embedded default, whose plugins are not in `bin`.
        let n = w.current().unwrap();
        assert_eq!(n.source, NetworkSource::EmbeddedDefault);
        assert_eq!(n.generation, 1);
        let e = w.ready().unwrap_err();
        assert!(e.contains("\"berth-cni-bridge\" not found"), "{e}");

        // A conflist appears: picked up; ready once its plugin exists.
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("20-b.conflist"), conflist("b", "p1")).unwrap();
        let n = w.current().unwrap();
        assert_eq!(n.config.name(), "b");
        assert_eq!(n.generation, 2);
        assert!(w.ready().unwrap_err().contains("\"p1\" not found"));
        let p1 = bin.join("p1");
        std::fs::write(&p1, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p1, std::fs::Permissions::from_mode(0o755)).unwrap();
        w.ready().unwrap();
        assert!(network_ready(&conf, std::slice::from_ref(&bin)).is_ok());

        // An earlier file by name wins; an invalid one makes the network not ready.
        std::fs::write(conf.join("10-a.conflist"), "{ not json").unwrap();
        let e = w.current().unwrap_err();
        assert!(e.contains("10-a.conflist"), "{e}");
        assert!(w.ready().is_err());
        assert!(network_ready(&conf, std::slice::from_ref(&bin)).is_err());
        std::fs::write(conf.join("10-a.conflist"), conflist("a", "p1")).unwrap();
        let n = w.current().unwrap();
        assert_eq!((n.config.name(), n.generation), ("a", 3));
        // Unchanged dir: same network, same generation.
        assert_eq!(w.current().unwrap().generation, 3);

        // Everything removed: back to the default.
        std::fs::remove_file(conf.join("10-a.conflist")).unwrap();
        std::fs::remove_file(conf.join("20-b.conflist")).unwrap();
        assert_eq!(w.current().unwrap().source, NetworkSource::EmbeddedDefault);
    }

    #[test]
    fn polls_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let w = ConfigWatcher::new(dir.path(), Vec::new())
            .with_poll_interval(Duration::from_secs(3600));
        assert_eq!(w.current().unwrap().source, NetworkSource::EmbeddedDefault);
        std::fs::write(dir.path().join("a.conflist"), conflist("a", "p")).unwrap();
        // Within the interval the dir is not looked at again.
        assert_eq!(w.current().unwrap().source, NetworkSource::EmbeddedDefault);
    }
}
