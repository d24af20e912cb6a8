//! Metadata in an embedded transactional database (redb): images by name, snapshot records.
//!
//! Every change is one write transaction, committed durably, so a crash leaves either the old
//! or the new state.

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::chain_id::ChainId;
use crate::digest::Digest;
use crate::platform::Platform;

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_SNAPSHOT_ID: &str = "next_snapshot_id";

/// Errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The database failed.
    #[error("metadata db: {op}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// A stored record does not decode.
    #[error("metadata db: record {key}: {source}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decode error.
        source: serde_json::Error,
    },
    /// No image with that name or ID.
    #[error("image {0}: not found")]
    ImageNotFound(String),
    /// No snapshot with that key.
    #[error("snapshot {0}: not found")]
    SnapshotNotFound(String),
    /// A snapshot still has children.
    #[error("snapshot {key}: still the parent of {child}")]
    SnapshotInUse {
        /// The snapshot.
        key: String,
        /// One of its children.
        child: String,
    },
}

fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> MetadataError {
    move |e| MetadataError::Db {
        op,
        source: Box::new(e.into()),
    }
}

/// A stored image. Its ID is the manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest's digest: the image ID.
    pub manifest_digest: Digest,
    /// The config blob's digest.
    pub config_digest: Digest,
    /// The index (manifest list) digest the image was resolved through, if any.
    #[serde(default)]
    pub index_digest: Option<Digest>,
    /// Compressed size: manifest + config + layers.
    pub size: u64,
    /// The platform of the image.
    pub platform: Platform,
    /// Pinned images are never garbage-collected nor removed without force.
    pub pinned: bool,
    /// Every name (`registry/repo:tag` or `registry/repo@digest`) pointing at the image.
    pub names: Vec<String>,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Chain ID of the whole stack (the snapshot a container's rootfs starts from).
    pub chain_id: Option<ChainId>,
    /// Unix time the image was stored.
    pub created_unix: u64,
}

/// Whether a snapshot is an immutable layer or a container's writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// An unpacked, immutable layer chain (key = chain ID).
    Committed,
    /// A writable snapshot on top of a committed one (one per container).
    Active,
    /// A read-only view of a committed chain.
    View,
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The key: a chain ID for committed layers, the caller's key for active ones.
    pub key: String,
    /// The short numeric directory name.
    pub id: u64,
    /// The parent snapshot's key.
    pub parent: Option<String>,
    /// Committed, active or view.
    pub kind: SnapshotKind,
    /// Unix time of creation.
    pub created_unix: u64,
}

/// The metadata database.
#[derive(Clone)]
pub struct MetadataStore {
    db: Arc<redb::Database>,
}

fn decode<T: for<'a> Deserialize<'a>>(key: &str, bytes: &[u8]) -> Result<T, MetadataError> {
    serde_json::from_slice(bytes).map_err(|source| MetadataError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

impl MetadataStore {
    /// Opens (creating) the database file and its tables.
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let database = redb::Database::create(path).map_err(db("open"))?;
        let tx = database.begin_write().map_err(db("begin"))?;
        tx.open_table(IMAGES).map_err(db("create table"))?;
        tx.open_table(NAMES).map_err(db("create table"))?;
        tx.open_table(SNAPSHOTS).map_err(db("create table"))?;
        tx.open_table(COUNTERS).map_err(db("create table"))?;
        tx.commit().map_err(db("commit"))?;
        Ok(MetadataStore {
            db: Arc::new(database),
        })
    }

    /// Stores `rec` and points `name` (if any) at it, moving the name off any other image.
    /// Names already on an existing record are kept; `pinned` is sticky.
    pub fn put_image(
        &self,
        rec: &ImageRecord,
        name: Option<&str>,
    ) -> Result<ImageRecord, MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        let stored = {
            let mut images = tx.open_table(IMAGES).map_err(db("open images"))?;
            let mut names = tx.open_table(NAMES).map_err(db("open names"))?;
            let id = rec.manifest_digest.to_string();
            let mut merged = rec.clone();
            if let Some(old) = images.get(id.as_str()).map_err(db("get image"))? {
                let old: ImageRecord = decode(&id, old.value())?;
                merged.pinned |= old.pinned;
                for n in old.names {
                    if !merged.names.contains(&n) {
                        merged.names.push(n);
                    }
                }
            }
            if let Some(name) = name {
                let previous = names
                    .insert(name, id.as_str())
                    .map_err(db("insert name"))?
                    .map(|g| g.value().to_owned());
                if let Some(prev) = previous.filter(|p| *p != id) {
                    let prev_rec = images
                        .get(prev.as_str())
                        .map_err(db("get image"))?
                        .map(|g| decode::<ImageRecord>(&prev, g.value()))
                        .transpose()?;
                    if let Some(mut p) = prev_rec {
                        p.names.retain(|n| n != name);
                        images
                            .insert(prev.as_str(), encode(&p).as_slice())
                            .map_err(db("update image"))?;
                    }
                }
                if !merged.names.iter().any(|n| n == name) {
                    merged.names.push(name.to_owned());
                }
            }
            images
                .insert(id.as_str(), encode(&merged).as_slice())
                .map_err(db("insert image"))?;
            merged
        };
        tx.commit().map_err(db("commit"))?;
        Ok(stored)
    }

    /// The image a name points at, or the image with that ID (manifest digest).
    pub fn get_image(&self, name_or_id: &str) -> Result<Option<ImageRecord>, MetadataError> {
        let tx = self.db.begin_read().map_err(db("begin read"))?;
        let names = tx.open_table(NAMES).map_err(db("open names"))?;
        let images = tx.open_table(IMAGES).map_err(db("open images"))?;
        let id = match names.get(name_or_id).map_err(db("get name"))? {
            Some(g) => g.value().to_owned(),
            None => name_or_id.to_owned(),
        };
        let rec = images.get(id.as_str()).map_err(db("get image"))?;
        rec.map(|g| decode(&id, g.value())).transpose()
    }

    /// Every image.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, MetadataError> {
        let tx = self.db.begin_read().map_err(db("begin read"))?;
        let images = tx.open_table(IMAGES).map_err(db("open images"))?;
        let mut out = Vec::new();
        for item in images.iter().map_err(db("iterate images"))? {
            let (k, v) = item.map_err(db("iterate images"))?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Removes one name; returns the image it pointed at (still stored, maybe nameless).
    pub fn untag(&self, name: &str) -> Result<ImageRecord, MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        let rec = {
            let mut names = tx.open_table(NAMES).map_err(db("open names"))?;
            let mut images = tx.open_table(IMAGES).map_err(db("open images"))?;
            let id = names
                .remove(name)
                .map_err(db("remove name"))?
                .map(|g| g.value().to_owned())
                .ok_or_else(|| MetadataError::ImageNotFound(name.to_owned()))?;
            let rec = images
                .get(id.as_str())
                .map_err(db("get image"))?
                .map(|g| decode::<ImageRecord>(&id, g.value()))
                .transpose()?;
            let mut rec = rec.ok_or_else(|| MetadataError::ImageNotFound(id.clone()))?;
            rec.names.retain(|n| n != name);
            images
                .insert(id.as_str(), encode(&rec).as_slice())
                .map_err(db("update image"))?;
            rec
        };
        tx.commit().map_err(db("commit"))?;
        Ok(rec)
    }

    /// Deletes an image record and all its names.
    pub fn delete_image(&self, id: &Digest) -> Result<ImageRecord, MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        let rec = {
            let mut names = tx.open_table(NAMES).map_err(db("open names"))?;
            let mut images = tx.open_table(IMAGES).map_err(db("open images"))?;
            let key = id.to_string();
            let rec = images
                .remove(key.as_str())
                .map_err(db("remove image"))?
                .map(|g| decode::<ImageRecord>(&key, g.value()))
                .transpose()?
                .ok_or_else(|| MetadataError::ImageNotFound(key.clone()))?;
            for n in &rec.names {
                names.remove(n.as_str()).map_err(db("remove name"))?;
            }
            rec
        };
        tx.commit().map_err(db("commit"))?;
        Ok(rec)
    }

    /// Sets or clears an image's pinned flag.
    pub fn set_pinned(&self, id: &Digest, pinned: bool) -> Result<(), MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut images = tx.open_table(IMAGES).map_err(db("open images"))?;
            let key = id.to_string();
            let mut rec = images
                .get(key.as_str())
                .map_err(db("get image"))?
                .map(|g| decode::<ImageRecord>(&key, g.value()))
                .transpose()?
                .ok_or_else(|| MetadataError::ImageNotFound(key.clone()))?;
            rec.pinned = pinned;
            images
                .insert(key.as_str(), encode(&rec).as_slice())
                .map_err(db("update image"))?;
        }
        tx.commit().map_err(db("commit"))
    }

    /// Reserves a fresh snapshot directory number.
    pub fn next_snapshot_id(&self) -> Result<u64, MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        let id = {
            let mut c = tx.open_table(COUNTERS).map_err(db("open counters"))?;
            let id = c
                .get(NEXT_SNAPSHOT_ID)
                .map_err(db("get counter"))?
                .map_or(1, |g| g.value());
            c.insert(NEXT_SNAPSHOT_ID, id + 1)
                .map_err(db("bump counter"))?;
            id
        };
        tx.commit().map_err(db("commit"))?;
        Ok(id)
    }

    /// Inserts a snapshot record unless one with the key exists; returns the stored record
    /// and whether it was inserted.
    pub fn insert_snapshot(
        &self,
        rec: &SnapshotRecord,
    ) -> Result<(SnapshotRecord, bool), MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        let out = {
            let mut snaps = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
            let existing = snaps
                .get(rec.key.as_str())
                .map_err(db("get snapshot"))?
                .map(|g| decode::<SnapshotRecord>(&rec.key, g.value()))
                .transpose()?;
            match existing {
                Some(e) => (e, false),
                None => {
                    if let Some(p) = &rec.parent {
                        if snaps.get(p.as_str()).map_err(db("get snapshot"))?.is_none() {
                            return Err(MetadataError::SnapshotNotFound(p.clone()));
                        }
                    }
                    snaps
                        .insert(rec.key.as_str(), encode(rec).as_slice())
                        .map_err(db("insert snapshot"))?;
                    (rec.clone(), true)
                }
            }
        };
        tx.commit().map_err(db("commit"))?;
        Ok(out)
    }

    /// A snapshot record by key.
    pub fn get_snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>, MetadataError> {
        let tx = self.db.begin_read().map_err(db("begin read"))?;
        let snaps = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
        let rec = snaps.get(key).map_err(db("get snapshot"))?;
        rec.map(|g| decode(key, g.value())).transpose()
    }

    /// Every snapshot record.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, MetadataError> {
        let tx = self.db.begin_read().map_err(db("begin read"))?;
        let snaps = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
        let mut out = Vec::new();
        for item in snaps.iter().map_err(db("iterate snapshots"))? {
            let (k, v) = item.map_err(db("iterate snapshots"))?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Removes a snapshot record that no other snapshot has as parent.
    pub fn remove_snapshot(&self, key: &str) -> Result<SnapshotRecord, MetadataError> {
        let tx = self.db.begin_write().map_err(db("begin"))?;
        let rec = {
            let mut snaps = tx.open_table(SNAPSHOTS).map_err(db("open snapshots"))?;
            for item in snaps.iter().map_err(db("iterate snapshots"))? {
                let (k, v) = item.map_err(db("iterate snapshots"))?;
                let child: SnapshotRecord = decode(k.value(), v.value())?;
                if child.parent.as_deref() == Some(key) {
                    return Err(MetadataError::SnapshotInUse {
                        key: key.to_owned(),
                        child: child.key,
                    });
                }
            }
            let removed = snaps
                .remove(key)
                .map_err(db("remove snapshot"))?
                .map(|g| decode::<SnapshotRecord>(key, g.value()))
                .transpose()?;
            removed.ok_or_else(|| MetadataError::SnapshotNotFound(key.to_owned()))?
        };
        tx.commit().map_err(db("commit"))?;
        Ok(rec)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(n: u8) -> ImageRecord {
        ImageRecord {
            manifest_digest: Digest::sha256_of(&[n]),
            config_digest: Digest::sha256_of(&[n, 1]),
            index_digest: None,
            size: 100,
            platform: Platform::host(),
            pinned: false,
            names: vec![],
            layers: vec![],
            diff_ids: vec![],
            chain_id: None,
            created_unix: now_unix(),
        }
    }

    #[test]
    fn images_by_name_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetadataStore::open(&dir.path().join("meta.db")).unwrap();
        let a = image(1);
        m.put_image(&a, Some("r/app:1")).unwrap();
        m.put_image(&a, Some("r/app:latest")).unwrap();
        let got = m.get_image("r/app:1").unwrap().unwrap();
        assert_eq!(got.names, vec!["r/app:1", "r/app:latest"]);
        assert_eq!(
            m.get_image(&a.manifest_digest.to_string()).unwrap(),
            Some(got)
        );
        // Moving a tag to another image removes it from the first.
        let b = image(2);
        m.put_image(&b, Some("r/app:latest")).unwrap();
        assert_eq!(
            m.get_image("r/app:1").unwrap().unwrap().names,
            vec!["r/app:1"]
        );
        assert_eq!(
            m.get_image("r/app:latest")
                .unwrap()
                .unwrap()
                .manifest_digest,
            b.manifest_digest
        );
        assert_eq!(m.list_images().unwrap().len(), 2);
        // Untag keeps the image; delete removes it and its names.
        let after = m.untag("r/app:1").unwrap();
        assert!(after.names.is_empty());
        assert!(m.get_image("r/app:1").unwrap().is_none());
        assert!(matches!(
            m.untag("r/app:1"),
            Err(MetadataError::ImageNotFound(_))
        ));
        m.set_pinned(&b.manifest_digest, true).unwrap();
        m.put_image(&b, None).unwrap();
        assert!(
            m.get_image("r/app:latest").unwrap().unwrap().pinned,
            "pin is sticky"
        );
        m.delete_image(&b.manifest_digest).unwrap();
        assert!(m.get_image("r/app:latest").unwrap().is_none());
    }

    #[test]
    fn snapshots_with_parents_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let m = MetadataStore::open(&path).unwrap();
            let id1 = m.next_snapshot_id().unwrap();
            let id2 = m.next_snapshot_id().unwrap();
            assert_ne!(id1, id2);
            let base = SnapshotRecord {
                key: "base".into(),
                id: id1,
                parent: None,
                kind: SnapshotKind::Committed,
                created_unix: 0,
            };
            assert!(m.insert_snapshot(&base).unwrap().1);
            assert!(!m.insert_snapshot(&base).unwrap().1);
            let child = SnapshotRecord {
                key: "child".into(),
                id: id2,
                parent: Some("base".into()),
                ..base.clone()
            };
            m.insert_snapshot(&child).unwrap();
            let orphan = SnapshotRecord {
                key: "orphan".into(),
                parent: Some("missing".into()),
                ..base
            };
            assert!(matches!(
                m.insert_snapshot(&orphan),
                Err(MetadataError::SnapshotNotFound(_))
            ));
        }
        let m = MetadataStore::open(&path).unwrap();
        assert_eq!(m.list_snapshots().unwrap().len(), 2);
        assert!(m.next_snapshot_id().unwrap() >= 3);
        let err = m.remove_snapshot("base").unwrap_err();
        assert!(
            err.to_string().contains("still the parent of child"),
            "{err}"
        );
        m.remove_snapshot("child").unwrap();
        m.remove_snapshot("base").unwrap();
        assert!(m.get_snapshot("base").unwrap().is_none());
    }
}
