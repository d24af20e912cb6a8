//! The CNI client: runs a network's plugin chain for ADD, CHECK, DEL, STATUS and GC, and keeps
//! the attachment cache that lets DEL replay what ADD did.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::attachment::{Attachment, AttachmentKey, CapabilityArgs};
use crate::cache::{new_entry, CacheEntry, ResultCache};
use crate::config::{NetworkConfigList, PluginConfig};
use crate::error::ClientError;
use crate::exec::{find_plugin, invoke, Command, Invocation};
use crate::result::CniResult;
use crate::version::CniVersion;

/// Default plugin dir.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Default config dir.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Default attachment cache dir.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/berth/cni/results";
/// Default time limit of one plugin call.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The GC config key listing the attachments that must be kept (spec 1.1).
const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// What plugin binaries answered to VERSION: path → (modification time, supported versions).
type VersionCache = Arc<Mutex<HashMap<PathBuf, (SystemTime, Vec<String>)>>>;

/// Runs plugin chains. Cheap to share between threads (`&self` everywhere); calls for
/// different attachments may run concurrently, calls for one attachment must not.
#[derive(Debug, Clone)]
pub struct CniClient {
    bin_dirs: Vec<PathBuf>,
    cache: ResultCache,
    timeout: Duration,
    /// What each plugin binary answered to VERSION, keyed by path and modification time.
    versions: VersionCache,
}

impl CniClient {
    /// A client that looks for plugins in `bin_dirs` (in order) and caches attachments under
    /// `cache_dir`.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        CniClient {
            bin_dirs,
            cache: ResultCache::new(cache_dir),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            versions: Arc::default(),
        }
    }

    /// Sets the time limit of each plugin call (the plugin is killed when it runs out).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The plugin dirs.
    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    /// The attachment cache.
    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// Attaches: runs ADD through the chain, passing each plugin's result to the next as
    /// `prevResult`, and returns the last result. On failure the chain is torn down (DEL in
    /// reverse order) before the error is returned.
    pub fn add(&self, net: &NetworkConfigList, att: &Attachment) -> Result<CniResult, ClientError> {
        let span = tracing::info_span!(
            "cni_add",
            network = net.name(),
            container = att.container_id(),
            ifname = att.ifname()
        );
        let _enter = span.enter();
        let key = att.key();
        let mut entry = new_entry(
            net.name(),
            &key,
            att.netns(),
            net.to_json(),
            att.cni_args(),
            att.capabilities().clone(),
        );
        // Written before the chain runs: if berthd dies half-way, DEL still knows the config.
        self.cache.store(&entry)?;
        match self.run_add(net, att) {
            Ok((raw, result)) => {
                entry.result = raw;
                self.cache.store(&entry)?;
                tracing::info!(ip = ?result.sandbox_ip(), "attached");
                Ok(result)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ADD failed; tearing down the partial attachment");
                match self.run_del(net, att, att.capabilities(), None) {
                    Ok(()) => self.cache.remove(net.name(), &key)?,
                    Err(del) => {
                        tracing::warn!(error = %del, "teardown after failed ADD failed; a later DEL retries it")
                    }
                }
                Err(e)
            }
        }
    }

    fn run_add(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
    ) -> Result<(Value, CniResult), ClientError> {
        let mut prev: Option<Value> = None;
        let mut last = None;
        for plugin in net.plugins() {
            self.check_version(net, plugin)?;
            let stdin = plugin_stdin(net, plugin, prev.as_ref(), att.capabilities(), None);
            let out = invoke(&self.invocation(plugin, Command::Add, att), &stdin)?;
            let bad = |source| ClientError::BadResult {
                plugin: plugin.plugin_type().to_owned(),
                command: Command::Add,
                source,
            };
            let raw: Value = serde_json::from_slice(&out).map_err(bad)?;
            let typed: CniResult = serde_json::from_value(raw.clone()).map_err(bad)?;
            prev = Some(raw);
            last = Some(typed);
        }
        let result = last.expect("a validated network has at least one plugin");
        Ok((prev.unwrap_or(Value::Null), result))
    }

    /// Verifies an attachment: runs CHECK through the chain with the cached ADD result.
    /// Does nothing for networks older than 0.4.0 or with `disableCheck`.
    pub fn check(&self, net: &NetworkConfigList, att: &Attachment) -> Result<(), ClientError> {
        if !net.cni_version().supports_check() || net.disable_check() {
            tracing::debug!(network = net.name(), version = %net.cni_version(), "CHECK skipped");
            return Ok(());
        }
        let key = att.key();
        let entry = self
            .cache
            .load(net.name(), &key)?
            .filter(|e| !e.result.is_null())
            .ok_or_else(|| ClientError::NotAttached {
                network: net.name().to_owned(),
                container_id: key.container_id.clone(),
                ifname: key.ifname.clone(),
            })?;
        for plugin in net.plugins() {
            let stdin = plugin_stdin(
                net,
                plugin,
                Some(&entry.result),
                &entry.capability_args,
                None,
            );
            invoke(&self.invocation(plugin, Command::Check, att), &stdin)?;
        }
        Ok(())
    }

    /// Detaches: runs DEL through the chain in reverse order, with the config, arguments and
    /// result cached at ADD (so it works after a restart or a config change), then forgets
    /// the attachment. Idempotent; works when the netns is already gone.
    pub fn del(&self, net: &NetworkConfigList, att: &Attachment) -> Result<(), ClientError> {
        let key = att.key();
        match self.cache.find(&key)? {
            Some(entry) => self.del_cached(&entry, att),
            None => {
                tracing::debug!(
                    network = net.name(),
                    container = att.container_id(),
                    ifname = att.ifname(),
                    "DEL without a cached attachment"
                );
                self.run_del(net, att, att.capabilities(), None)
            }
        }
    }

    fn del_cached(&self, entry: &CacheEntry, att: &Attachment) -> Result<(), ClientError> {
        let net = match NetworkConfigList::from_value(entry.config.clone()) {
            Ok(net) => net,
            Err(e) => {
                // A cache entry we wrote ourselves always parses; if it does not, say so.
                return Err(ClientError::Config(e));
            }
        };
        let att = Attachment::from_parts(
            entry.key(),
            att.netns().to_owned(),
            entry.cni_args.clone(),
            entry.capability_args.clone(),
        );
        let prev = (!entry.result.is_null()).then_some(&entry.result);
        self.run_del(&net, &att, &entry.capability_args, prev)?;
        self.cache.remove(&entry.network_name, &entry.key())?;
        tracing::info!(
            network = net.name(),
            container = att.container_id(),
            ifname = att.ifname(),
            "detached"
        );
        Ok(())
    }

    fn run_del(
        &self,
        net: &NetworkConfigList,
        att: &Attachment,
        caps: &CapabilityArgs,
        prev: Option<&Value>,
    ) -> Result<(), ClientError> {
        // 0.3.x plugins do not take prevResult on DEL.
        let prev = prev.filter(|_| net.cni_version() >= CniVersion::V0_4_0);
        for plugin in net.plugins().iter().rev() {
            let stdin = plugin_stdin(net, plugin, prev, caps, None);
            invoke(&self.invocation(plugin, Command::Del, att), &stdin)?;
        }
        Ok(())
    }

    /// Asks every plugin whether it is ready for ADD (1.1 STATUS). For older networks, only
    /// checks that every plugin binary exists.
    pub fn status(&self, net: &NetworkConfigList) -> Result<(), ClientError> {
        for plugin in net.plugins() {
            find_plugin(plugin.plugin_type(), &self.bin_dirs)?;
        }
        if !net.cni_version().supports_status_and_gc() {
            return Ok(());
        }
        let none = CapabilityArgs::default();
        for plugin in net.plugins() {
            let stdin = plugin_stdin(net, plugin, None, &none, None);
            invoke(&self.global_invocation(plugin, Command::Status), &stdin)?;
        }
        Ok(())
    }

    /// Garbage-collects a network: detaches every cached attachment of `net` not in `valid`,
    /// then (1.1, unless `disableGC`) runs GC through the chain with
    /// `cni.dev/valid-attachments`. Goes on past errors and returns the first.
    pub fn gc(&self, net: &NetworkConfigList, valid: &[AttachmentKey]) -> Result<(), ClientError> {
        let mut first_err = None;
        for entry in self.cache.list(net.name())? {
            if valid.contains(&entry.key()) {
                continue;
            }
            tracing::info!(network = net.name(), container = %entry.container_id,
                ifname = %entry.if_name, "GC: detaching stale attachment");
            let att = Attachment::from_parts(
                entry.key(),
                entry.netns.clone(),
                entry.cni_args.clone(),
                entry.capability_args.clone(),
            );
            if let Err(e) = self.del_cached(&entry, &att) {
                tracing::warn!(error = %e, "GC: DEL of stale attachment failed");
                first_err.get_or_insert(e);
            }
        }
        if net.cni_version().supports_status_and_gc() && !net.disable_gc() {
            let valid_json = serde_json::to_value(valid).expect("keys serialize");
            let none = CapabilityArgs::default();
            for plugin in net.plugins() {
                let stdin = plugin_stdin(
                    net,
                    plugin,
                    None,
                    &none,
                    Some((VALID_ATTACHMENTS, valid_json.clone())),
                );
                if let Err(e) = invoke(&self.global_invocation(plugin, Command::Gc), &stdin) {
                    tracing::warn!(error = %e, "GC failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Refuses a plugin whose VERSION answer does not list the network's version (asked once
    /// per binary and modification time). A plugin that cannot answer VERSION is let through
    /// with a warning: its ADD then speaks for itself.
    fn check_version(
        &self,
        net: &NetworkConfigList,
        plugin: &PluginConfig,
    ) -> Result<(), ClientError> {
        let path = find_plugin(plugin.plugin_type(), &self.bin_dirs)?;
        let mtime = path
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let known = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&path)
            .filter(|(t, _)| *t == mtime)
            .map(|(_, v)| v.clone());
        let supported = match known {
            Some(v) => v,
            None => {
                let stdin =
                    serde_json::to_vec(&serde_json::json!({ "cniVersion": net.cni_version() }))
                        .expect("a JSON object serializes");
                let answer = invoke(&self.global_invocation(plugin, Command::Version), &stdin)
                    .ok()
                    .and_then(|out| serde_json::from_slice::<Value>(&out).ok())
                    .and_then(|v| {
                        v.get("supportedVersions")?.as_array().map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect::<Vec<_>>()
                        })
                    });
                let Some(v) = answer else {
                    tracing::warn!(plugin = plugin.plugin_type(), path = %path.display(),
                        "CNI plugin gave no valid VERSION answer; trying ADD anyway");
                    return Ok(());
                };
                self.versions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.clone(), (mtime, v.clone()));
                v
            }
        };
        if supported.iter().any(|v| v == net.cni_version().as_str()) {
            return Ok(());
        }
        Err(ClientError::IncompatibleVersion {
            plugin: plugin.plugin_type().to_owned(),
            network: net.name().to_owned(),
            version: net.cni_version().as_str().to_owned(),
            supported,
        })
    }

    fn invocation<'a>(
        &'a self,
        plugin: &'a PluginConfig,
        command: Command,
        att: &'a Attachment,
    ) -> Invocation<'a> {
        Invocation {
            plugin: plugin.plugin_type(),
            command,
            container_id: att.container_id(),
            netns: att.netns(),
            ifname: att.ifname(),
            args: att.cni_args_string(),
            bin_dirs: &self.bin_dirs,
            timeout: self.timeout,
        }
    }

    fn global_invocation<'a>(
        &'a self,
        plugin: &'a PluginConfig,
        command: Command,
    ) -> Invocation<'a> {
        Invocation {
            plugin: plugin.plugin_type(),
            command,
            container_id: "",
            netns: std::path::Path::new(""),
            ifname: "",
            args: String::new(),
            bin_dirs: &self.bin_dirs,
            timeout: self.timeout,
        }
    }
}

/// The config a plugin reads on stdin: its own object with the network's `name` and
/// `cniVersion`, the previous result and the `runtimeConfig` of the capabilities it declared.
pub(crate) fn plugin_stdin(
    net: &NetworkConfigList,
    plugin: &PluginConfig,
    prev: Option<&Value>,
    caps: &CapabilityArgs,
    extra: Option<(&str, Value)>,
) -> Vec<u8> {
    let mut conf: Map<String, Value> = plugin.raw().clone();
    conf.insert("name".to_owned(), Value::String(net.name().to_owned()));
    conf.insert(
        "cniVersion".to_owned(),
        Value::String(net.cni_version().as_str().to_owned()),
    );
    match prev {
        Some(prev) => conf.insert("prevResult".to_owned(), prev.clone()),
        None => conf.remove("prevResult"),
    };
    let runtime = caps.runtime_config_for(plugin.capabilities());
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".to_owned(), Value::Object(runtime));
    }
    if let Some((k, v)) = extra {
        conf.insert(k.to_owned(), v);
    }
    serde_json::to_vec(&Value::Object(conf)).expect("a plugin config always serializes")
}
