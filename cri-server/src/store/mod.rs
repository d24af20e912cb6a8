//! berthd's records of its objects: pod sandboxes ([`sandbox`]) and containers, each persisted
//! as one versioned JSON checkpoint per object under `<root>/cri/<kind>s/<id>.json`, written
//! atomically (temp file + fsync + rename + fsync of the directory), loaded at startup.
//!
//! The generic parts live here so that every store shares them: [`CheckpointDir`] (atomic,
//! versioned JSON records), [`new_id`] (64 random hex digits), [`find_by_prefix`] (lookup by a
//! unique ID prefix, as crictl allows) and [`Names`] (name reservations: one object per name).

pub mod container;
pub mod objects;
pub mod sandbox;

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} ID prefix {prefix:?} matches {count} {kind}s; give more of the ID")]
    Ambiguous {
        kind: &'static str,
        prefix: String,
        count: usize,
    },
    #[error("{kind} name {name:?} is already reserved by {id}")]
    NameTaken {
        kind: &'static str,
        name: String,
        id: String,
    },
    #[error("{op} checkpoint {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path}: kind {found:?}, version {version}: this berthd reads {kind:?} up to version {supported}")]
    Unsupported {
        path: PathBuf,
        kind: &'static str,
        found: String,
        version: u32,
        supported: u32,
    },
    #[error("read random bytes for an ID: {0}")]
    Random(#[source] io::Error),
}

/// The envelope of every checkpoint: what it holds and in which layout.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    kind: String,
    version: u32,
    record: T,
}

/// A directory of checkpoints of one kind, one `<id>.json` file per object.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    kind: &'static str,
    version: u32,
}

impl CheckpointDir {
    /// Checkpoints of `kind` in layout `version` under `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>, kind: &'static str, version: u32) -> Self {
        Self {
            dir: dir.into(),
            kind,
            version,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes the record of `id` atomically: a reader (or a crash) sees the old record or
    /// the new one, never a mix. Blocking.
    pub fn save<T: Serialize>(&self, id: &str, record: &T) -> Result<(), StoreError> {
        let path = self.path(id);
        let io = |op| {
            let path = path.clone();
            move |source| StoreError::Io { op, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("create the directory of"))?;
        let envelope = Envelope {
            kind: self.kind.to_owned(),
            version: self.version,
            record,
        };
        let json = serde_json::to_vec_pretty(&envelope).map_err(|source| StoreError::Decode {
            path: path.clone(),
            source,
        })?;
        berth_runtime::atomic_file::write(&path, &json, 0o600).map_err(io("write"))
    }

    /// Reads one checkpoint file. Records of an older version must still deserialize (new
    /// fields have serde defaults); a newer version or another kind is an error.
    pub fn load<T: DeserializeOwned>(&self, path: &Path) -> Result<T, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
        let decode = |source| StoreError::Decode {
            path: path.to_owned(),
            source,
        };
        let envelope: Envelope<serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(decode)?;
        if envelope.kind != self.kind || envelope.version > self.version {
            return Err(StoreError::Unsupported {
                path: path.to_owned(),
                kind: self.kind,
                found: envelope.kind,
                version: envelope.version,
                supported: self.version,
            });
        }
        serde_json::from_value(envelope.record).map_err(decode)
    }

    /// Every checkpoint of the directory (none if it does not exist), each with its own
    /// result so that one bad file does not hide the others. Leftover temp files are skipped.
    pub fn load_all<T: DeserializeOwned>(&self) -> Vec<(PathBuf, Result<T, StoreError>)> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(source) => {
                let path = self.dir.clone();
                let err = StoreError::Io {
                    op: "list",
                    path: path.clone(),
                    source,
                };
                return vec![(path, Err(err))];
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let record = self.load(&p);
                (p, record)
            })
            .collect()
    }

    /// Deletes the checkpoint of `id`; no error if there is none.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }
}

/// A new object ID: 32 random bytes as 64 lower-case hex digits (like containerd's).
pub fn new_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StoreError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The object whose ID is `prefix` or, failing that, the one object whose ID starts with it.
pub fn find_by_prefix<'a, V>(
    objects: &'a HashMap<String, V>,
    prefix: &str,
    kind: &'static str,
) -> Result<&'a V, StoreError> {
    let not_found = || StoreError::NotFound {
        kind,
        id: prefix.to_owned(),
    };
    if prefix.is_empty() {
        return Err(not_found());
    }
    if let Some(v) = objects.get(prefix) {
        return Ok(v);
    }
    let mut matches = objects.iter().filter(|(id, _)| id.starts_with(prefix));
    match (matches.next(), matches.count()) {
        (None, _) => Err(not_found()),
        (Some((_, v)), 0) => Ok(v),
        (Some(_), more) => Err(StoreError::Ambiguous {
            kind,
            prefix: prefix.to_owned(),
            count: more + 1,
        }),
    }
}

/// Name reservations: a name belongs to one ID at a time.
#[derive(Debug)]
pub struct Names {
    kind: &'static str,
    names: Mutex<HashMap<String, String>>,
}

impl Names {
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves `name` for `id`; reserving it again for the same ID is fine.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let mut names = self.names.lock().expect("names lock");
        match names.get(name) {
            Some(owner) if owner != id => Err(StoreError::NameTaken {
                kind: self.kind,
                name: name.to_owned(),
                id: owner.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                names.insert(name.to_owned(), id.to_owned());
                Ok(())
            }
        }
    }

    /// Releases `name` if `id` holds it.
    pub fn release(&self, name: &str, id: &str) {
        let mut names = self.names.lock().expect("names lock");
        if names.get(name).is_some_and(|owner| owner == id) {
            names.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        a: u32,
        #[serde(default)]
        b: String,
    }

    #[test]
    fn checkpoints_round_trip_and_reject_newer_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path().join("things"), "thing", 2);
        dir.save(
            "x1",
            &Rec {
                a: 1,
                b: "b".into(),
            },
        )
        .unwrap();
        std::fs::write(tmp.path().join("things/.x1.json.tmp"), b"partial").unwrap();
        let all = dir.load_all::<Rec>();
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].1.as_ref().unwrap(),
            &Rec {
                a: 1,
                b: "b".into()
            }
        );
        // An older layout without `b` still loads; a newer one or another kind does not.
        std::fs::write(
            dir.path("old"),
            br#"{"kind":"thing","version":1,"record":{"a":7}}"#,
        )
        .unwrap();
        assert_eq!(dir.load::<Rec>(&dir.path("old")).unwrap().a, 7);
        std::fs::write(
            dir.path("new"),
            br#"{"kind":"thing","version":3,"record":{"a":7}}"#,
        )
        .unwrap();
        let err = dir.load::<Rec>(&dir.path("new")).unwrap_err();
        assert!(err.to_string().contains("version 3"), "{err}");
        dir.remove("x1").unwrap();
        dir.remove("x1").unwrap();
        assert!(!dir.path("x1").exists());
    }

    #[test]
    fn ids_are_64_hex_and_prefixes_must_be_unique() {
        let a = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let map: HashMap<String, u8> = [
            ("abc1".to_owned(), 1),
            ("abc2".to_owned(), 2),
            ("abc".to_owned(), 3),
        ]
        .into();
        assert_eq!(*find_by_prefix(&map, "abc1", "pod").unwrap(), 1);
        assert_eq!(*find_by_prefix(&map, "abc", "pod").unwrap(), 3);
        assert!(matches!(
            find_by_prefix(&map, "ab", "pod"),
            Err(StoreError::Ambiguous { count: 3, .. })
        ));
        assert!(matches!(
            find_by_prefix(&map, "", "pod"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            find_by_prefix(&map, "x", "pod"),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn names_are_reserved_once() {
        let names = Names::new("sandbox");
        names.reserve("n", "id1").unwrap();
        names.reserve("n", "id1").unwrap();
        assert!(matches!(
            names.reserve("n", "id2"),
            Err(StoreError::NameTaken { .. })
        ));
        names.release("n", "id2");
        assert!(names.reserve("n", "id2").is_err());
        names.release("n", "id1");
        names.reserve("n", "id2").unwrap();
    }
}
