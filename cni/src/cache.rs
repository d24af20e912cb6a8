//! The attachment cache: for every attachment, the config it was made with, its CNI_ARGS,
//! capability arguments and result, so DEL replays exactly what ADD did, across restarts and
//! config changes. One JSON file per attachment, written atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attachment::{AttachmentKey, CapabilityArgs};
use crate::error::CacheError;

/// Kind tag of a cache entry, like libcni's.
const KIND: &str = "cniCacheV1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// Always `cniCacheV1`.
    pub kind: String,
    /// The container ID.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The interface name.
    pub if_name: String,
    /// The network name.
    pub network_name: String,
    /// The netns path the attachment was made in.
    pub netns: PathBuf,
    /// The conflist the attachment was made with.
    pub config: Value,
    /// CNI_ARGS as key/value pairs.
    pub cni_args: Vec<(String, String)>,
    /// Capability arguments.
    pub capability_args: CapabilityArgs,
    /// The chain's ADD result; null while ADD is in progress or if it failed.
    #[serde(default)]
    pub result: Value,
}

impl CacheEntry {
    /// The attachment this entry is for.
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.container_id.clone(),
            ifname: self.if_name.clone(),
        }
    }
}

/// The cache directory: `<dir>/<network>/<container-id>-<ifname>.json`.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// A cache under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, network: &str, key: &AttachmentKey) -> PathBuf {
        self.dir
            .join(network)
            .join(format!("{}-{}.json", key.container_id, key.ifname))
    }

    /// Writes an entry atomically: temp file, rename over the old one.
    ///
    /// Not fsynced, as libcni's cache is not: an entry describes an attachment (a veth in a
    /// network namespace) that does not outlive the machine, and a crash of the runtime alone
    /// leaves the page cache intact. After a crash of the machine a missing entry only means
    /// the DEL for the dead pod runs with the current config instead of the cached one.
    pub fn store(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let path = self.path(&entry.network_name, &entry.key());
        let dir = path.parent().expect("cache path has a parent");
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| CacheError::Io { op, path, source }
        };
        fs::create_dir_all(dir).map_err(io("create dir", dir))?;
        let mut tmp = tempfile_in(dir, &path).map_err(io("create temp file", dir))?;
        let bytes = serde_json::to_vec(entry).expect("a cache entry always serializes");
        tmp.1.write_all(&bytes).map_err(io("write", &tmp.0))?;
        drop(tmp.1);
        if let Err(e) = fs::rename(&tmp.0, &path) {
            let _ = fs::remove_file(&tmp.0);
            return Err(io("rename", &path)(e));
        }
        Ok(())
    }

    /// The entry of `key` in `network`, if any.
    pub fn load(
        &self,
        network: &str,
        key: &AttachmentKey,
    ) -> Result<Option<CacheEntry>, CacheError> {
        read_entry(&self.path(network, key))
    }

    /// The entry of `key` in whatever network it was made (an attachment lives in one).
    pub fn find(&self, key: &AttachmentKey) -> Result<Option<CacheEntry>, CacheError> {
        for network in self.networks()? {
            if let Some(e) = self.load(&network, key)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Every entry of `network`.
    pub fn list(&self, network: &str) -> Result<Vec<CacheEntry>, CacheError> {
        let dir = self.dir.join(network);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Io {
                    op: "list",
                    path: dir,
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for e in entries {
            let path = e
                .map_err(|source| CacheError::Io {
                    op: "list",
                    path: dir.clone(),
                    source,
                })?
                .path();
            if path.extension().is_some_and(|x| x == "json") {
                if let Some(entry) = read_entry(&path)? {
                    out.push(entry);
                }
            }
        }
        out.sort_by_key(CacheEntry::key);
        Ok(out)
    }

    /// Removes the entry of `key` in `network`; no error if it is gone.
    pub fn remove(&self, network: &str, key: &AttachmentKey) -> Result<(), CacheError> {
        let path = self.path(network, key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }

    fn networks(&self) -> Result<Vec<String>, CacheError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Io {
                    op: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

pub(crate) fn new_entry(
    network: &str,
    key: &AttachmentKey,
    netns: &Path,
    config: &Value,
    cni_args: Vec<(String, String)>,
    capability_args: CapabilityArgs,
) -> CacheEntry {
    CacheEntry {
        kind: KIND.to_owned(),
        container_id: key.container_id.clone(),
        if_name: key.ifname.clone(),
        network_name: network.to_owned(),
        netns: netns.to_owned(),
        config: config.clone(),
        cni_args,
        capability_args,
        result: Value::Null,
    }
}

/// Reads one entry. One that does not decode (an entry's bytes may be lost to a crash of the
/// machine, which the unsynced write allows) is reported and treated as absent: its DEL then
/// runs with the current config, as for an attachment with no entry.
fn read_entry(path: &Path) -> Result<Option<CacheEntry>, CacheError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            })
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(entry) => Ok(Some(entry)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "CNI cache: corrupt entry (lost to a crash?); ignoring it");
            Ok(None)
        }
    }
}

/// Creates `<target>.tmp-<pid>-<n>` exclusively in `dir`.
fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".{base}.tmp-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_find_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path().join("results"));
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        assert!(cache.find(&key).unwrap().is_none());
        let mut e = new_entry(
            "net",
            &key,
            Path::new("/run/x"),
            &serde_json::json!({"name":"net"}),
            vec![("A".into(), "b".into())],
            CapabilityArgs::default(),
        );
        cache.store(&e).unwrap();
        e.result = serde_json::json!({"cniVersion":"1.0.0"});
        cache.store(&e).unwrap();
        assert_eq!(cache.find(&key).unwrap().unwrap(), e);
        assert_eq!(cache.list("net").unwrap(), vec![e.clone()]);
        assert!(cache.list("other").unwrap().is_empty());
        cache.remove("net", &key).unwrap();
        cache.remove("net", &key).unwrap();
        assert!(cache.find(&key).unwrap().is_none());
        // No temp files left behind.
        assert_eq!(
            fs::read_dir(dir.path().join("results/net"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_corrupt_entry_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        fs::create_dir_all(dir.path().join("net")).unwrap();
        // What a crash of the machine may leave of an unsynced write: nothing, or a part.
        for bytes in [&b""[..], br#"{"kind":"cniCacheV1","conta"#] {
            fs::write(dir.path().join("net/c1-eth0.json"), bytes).unwrap();
            assert!(cache.load("net", &key).unwrap().is_none());
            assert!(cache.find(&key).unwrap().is_none());
            assert!(cache.list("net").unwrap().is_empty());
        }
        cache.remove("net", &key).unwrap();
        assert!(!dir.path().join("net/c1-eth0.json").exists());
    }
}
