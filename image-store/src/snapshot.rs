//! Overlay snapshots: one committed directory per layer chain, numbered
//! (`<root>/snapshots/<n>/fs`) so that deep lowerdir chains fit the mount options page, and
//! active snapshots (upper `fs` + `work`) per container. Where overlay does not work on the
//! snapshot filesystem (found by a probe mount at open, or forced by config), active snapshots
//! and views are copies of their layer chain instead, bind-mounted (the native snapshotter).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};

use crate::chain_id::ChainId;
use crate::metadata::{now_unix, MetadataError, MetadataStore, SnapshotKind, SnapshotRecord};
use crate::mount::Mount;

mod native;

pub use native::SnapshotterMode;

/// Errors of the snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation failed.
    #[error("snapshot {key}: {op} {path}: {source}")]
    Io {
        /// The snapshot.
        key: String,
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The metadata database failed or refused.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// No snapshot with that key.
    #[error("snapshot {0}: not found")]
    NotFound(String),
    /// The key is taken.
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    /// The parent of a new snapshot must be a committed layer chain.
    #[error("snapshot {key}: parent {parent} is not committed")]
    ParentNotCommitted {
        /// The new snapshot.
        key: String,
        /// Its parent.
        parent: String,
    },
}

/// Disk use of snapshots, for CRI ImageFsInfo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of allocated blocks.
    pub bytes: u64,
    /// Inodes (hardlinks counted once).
    pub inodes: u64,
}

/// The snapshotter: directories under `<root>/snapshots`, records in the metadata database.
#[derive(Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    meta: MetadataStore,
    native: bool,
    /// Bumped by every snapshot added or removed (see [`Snapshotter::generation`]).
    changes: Arc<AtomicU64>,
}

/// Marks a snapshot made by copying (native): it is bind-mounted, whatever the mode now.
const NATIVE_MARKER: &str = "native";

/// A layer being unpacked: a reserved, not yet visible snapshot directory. Dropped without
/// [`LayerDir::commit`], it is removed.
pub struct LayerDir {
    snapshotter: Snapshotter,
    id: u64,
    committed: bool,
    /// [`LayerDir::sync`] ran: the tree is on disk (nothing writes to it after unpacking).
    synced: bool,
}

impl LayerDir {
    /// Where to unpack the layer.
    pub fn path(&self) -> PathBuf {
        self.snapshotter.fs_dir(self.id)
    }

    /// Writes the unpacked tree to disk (syncfs of its filesystem), so that [`LayerDir::commit`]
    /// need not. Called by the layer's own task right after unpacking, so that the writeback
    /// overlaps other layers' downloads instead of queueing at the end of the pull.
    pub fn sync(&mut self) -> Result<(), SnapshotError> {
        let fs_dir = self.path();
        let key = format!("layer dir {}", self.id);
        let f = fs::File::open(&fs_dir).map_err(|e| io_err(&key, "open", &fs_dir, e))?;
        nix::unistd::syncfs(&f).map_err(|e| io_err(&key, "syncfs", &fs_dir, e.into()))?;
        self.synced = true;
        Ok(())
    }

    /// Syncs the unpacked tree (unless [`LayerDir::sync`] did) and records it as the committed
    /// snapshot `chain` on `parent`.
    /// If another pull committed the same chain meanwhile, its snapshot is kept and this one
    /// discarded.
    pub fn commit(
        mut self,
        chain: &ChainId,
        parent: Option<&ChainId>,
    ) -> Result<SnapshotRecord, SnapshotError> {
        let key = chain.to_string();
        let fs_dir = self.path();
        if !self.synced {
            let f = fs::File::open(&fs_dir).map_err(|e| io_err(&key, "open", &fs_dir, e))?;
            nix::unistd::syncfs(&f).map_err(|e| io_err(&key, "syncfs", &fs_dir, e.into()))?;
        }
        let rec = SnapshotRecord {
            key: key.clone(),
            id: self.id,
            parent: parent.map(ToString::to_string),
            kind: SnapshotKind::Committed,
            created_unix: now_unix(),
        };
        let (stored, inserted) = self.snapshotter.meta.insert_snapshot(&rec)?;
        self.committed = inserted;
        if inserted {
            self.snapshotter.changed();
        }
        debug!(snapshot = %key, id = stored.id, inserted, "layer snapshot committed");
        Ok(stored)
    }
}

impl Drop for LayerDir {
    fn drop(&mut self) {
        if !self.committed {
            let dir = self.snapshotter.id_dir(self.id);
            if let Err(e) = fs::remove_dir_all(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %dir.display(), error = %e, "cannot remove uncommitted snapshot dir");
                }
            }
        }
    }
}

fn io_err(key: &str, op: &'static str, path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        key: key.to_owned(),
        op,
        path: path.to_owned(),
        source,
    }
}

impl Snapshotter {
    /// Opens the snapshotter under `root/snapshots`, probing whether overlay works there.
    pub fn open(root: &Path, meta: MetadataStore) -> Result<Self, SnapshotError> {
        Self::open_with(root, meta, SnapshotterMode::Auto)
    }

    /// Opens the snapshotter under `root/snapshots` in `mode`.
    pub fn open_with(
        root: &Path,
        meta: MetadataStore,
        mode: SnapshotterMode,
    ) -> Result<Self, SnapshotError> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).map_err(|e| io_err("-", "create dir", &dir, e))?;
        // Only root may walk in (containerd's snapshots dir is 0700 too): the containers'
        // upper dirs hold whatever they wrote, setuid binaries included, which host users
        // must not reach. Mounts of snapshots are not affected (the kernel checks the
        // mounter's credentials on overlay layers).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("-", "restrict", &dir, e))?;
        let native = match mode {
            SnapshotterMode::Overlay => false,
            SnapshotterMode::Native => true,
            SnapshotterMode::Auto => native::probe_overlay(&dir)
                .map_err(|e| io_err("-", "probe overlay in", &dir, e))?
                .is_some(),
        };
        debug!(dir = %dir.display(), native, "snapshotter opened");
        Ok(Snapshotter {
            dir,
            meta,
            native,
            changes: Arc::default(),
        })
    }

    /// Whether active snapshots and views are copies (native) rather than overlay mounts.
    pub fn is_native(&self) -> bool {
        self.native
    }

    fn id_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.id_dir(id).join("fs")
    }

    fn work_dir(&self, id: u64) -> PathBuf {
        self.id_dir(id).join("work")
    }

    /// The record of a snapshot.
    pub fn get(&self, key: &str) -> Result<Option<SnapshotRecord>, SnapshotError> {
        Ok(self.meta.get_snapshot(key)?)
    }

    /// Whether a layer chain is already unpacked.
    pub fn has_layer(&self, chain: &ChainId) -> Result<bool, SnapshotError> {
        Ok(self.meta.get_snapshot(&chain.to_string())?.is_some())
    }

    /// The directory of a committed snapshot's contents.
    pub fn layer_path(&self, chain: &ChainId) -> Result<PathBuf, SnapshotError> {
        let key = chain.to_string();
        let rec = self
            .meta
            .get_snapshot(&key)?
            .ok_or(SnapshotError::NotFound(key))?;
        Ok(self.fs_dir(rec.id))
    }

    /// Reserves a directory to unpack one layer into.
    pub fn begin_layer(&self) -> Result<LayerDir, SnapshotError> {
        let id = self.meta.next_snapshot_id()?;
        let layer = LayerDir {
            snapshotter: self.clone(),
            id,
            committed: false,
            synced: false,
        };
        let p = layer.path();
        fs::create_dir_all(&p).map_err(|e| io_err("-", "create dir", &p, e))?;
        Ok(layer)
    }

    /// The `fs` directories of `key` and its ancestors, topmost first.
    fn chain_dirs(&self, key: &str) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut out = Vec::new();
        let mut next = Some(key.to_owned());
        // Bounded by the number of snapshots; a cycle would be a corrupt database.
        let limit = self.meta.list_snapshots()?.len() + 1;
        while let Some(k) = next {
            if out.len() > limit {
                break;
            }
            let rec = self
                .meta
                .get_snapshot(&k)?
                .ok_or(SnapshotError::NotFound(k))?;
            out.push(self.fs_dir(rec.id));
            next = rec.parent;
        }
        Ok(out)
    }

    fn new_snapshot(
        &self,
        key: &str,
        parent: Option<&ChainId>,
        kind: SnapshotKind,
    ) -> Result<SnapshotRecord, SnapshotError> {
        if self.meta.get_snapshot(key)?.is_some() {
            return Err(SnapshotError::AlreadyExists(key.to_owned()));
        }
        if let Some(p) = parent {
            let committed = self
                .meta
                .get_snapshot(&p.to_string())?
                .is_some_and(|r| r.kind == SnapshotKind::Committed);
            if !committed {
                return Err(SnapshotError::ParentNotCommitted {
                    key: key.to_owned(),
                    parent: p.to_string(),
                });
            }
        }
        let id = self.meta.next_snapshot_id()?;
        for d in [self.fs_dir(id), self.work_dir(id)] {
            fs::create_dir_all(&d).map_err(|e| io_err(key, "create dir", &d, e))?;
        }
        let rec = SnapshotRecord {
            key: key.to_owned(),
            id,
            parent: parent.map(ToString::to_string),
            kind,
            created_unix: now_unix(),
        };
        match self.meta.insert_snapshot(&rec) {
            Ok((stored, true)) => {
                self.changed();
                Ok(stored)
            }
            Ok((_, false)) => {
                let _ = fs::remove_dir_all(self.id_dir(id));
                Err(SnapshotError::AlreadyExists(key.to_owned()))
            }
            Err(e) => {
                let _ = fs::remove_dir_all(self.id_dir(id));
                Err(e.into())
            }
        }
    }

    /// Creates a writable snapshot `key` on top of the committed chain `parent` and returns the
    /// mount that shows it.
    pub fn prepare(&self, key: &str, parent: Option<&ChainId>) -> Result<Mount, SnapshotError> {
        let rec = self.new_snapshot(key, parent, SnapshotKind::Active)?;
        self.copy_if_native(&rec)?;
        self.mounts(key)
    }

    /// Creates a read-only view `key` of the committed chain `parent`.
    pub fn view(&self, key: &str, parent: &ChainId) -> Result<Mount, SnapshotError> {
        let rec = self.new_snapshot(key, Some(parent), SnapshotKind::View)?;
        self.copy_if_native(&rec)?;
        self.mounts(key)
    }

    /// Native mode: fills a new snapshot with a copy of its parent chain (removing the
    /// snapshot again when that fails).
    fn copy_if_native(&self, rec: &SnapshotRecord) -> Result<(), SnapshotError> {
        if !self.native {
            return Ok(());
        }
        let mut layers = match &rec.parent {
            Some(p) => self.chain_dirs(p)?,
            None => Vec::new(),
        };
        layers.reverse();
        let fs_dir = self.fs_dir(rec.id);
        let marker = self.id_dir(rec.id).join(NATIVE_MARKER);
        let copied = fs::write(&marker, b"")
            .map_err(|e| (marker.clone(), e))
            .and_then(|()| native::copy_chain(&layers, &fs_dir));
        if let Err((path, e)) = copied {
            if let Err(re) = self.remove(&rec.key) {
                warn!(snapshot = %rec.key, error = %re, "cannot remove a half-copied snapshot");
            }
            return Err(io_err(&rec.key, "copy layers into", &path, e));
        }
        debug!(snapshot = %rec.key, layers = layers.len(), "native snapshot copied");
        Ok(())
    }

    /// The mount of an existing snapshot.
    pub fn mounts(&self, key: &str) -> Result<Mount, SnapshotError> {
        let rec = self
            .meta
            .get_snapshot(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))?;
        let lowers = match &rec.parent {
            Some(p) => self.chain_dirs(p)?,
            None => Vec::new(),
        };
        let path = |p: &Path| p.display().to_string();
        if rec.kind != SnapshotKind::Committed && self.id_dir(rec.id).join(NATIVE_MARKER).exists() {
            let rw = if rec.kind == SnapshotKind::Active {
                "rw"
            } else {
                "ro"
            };
            return Ok(Mount {
                fstype: "bind".into(),
                source: path(&self.fs_dir(rec.id)),
                options: vec!["rbind".into(), rw.into()],
            });
        }
        let mount = match (rec.kind, lowers.len()) {
            (SnapshotKind::Active, 0) => Mount {
                fstype: "bind".into(),
                source: path(&self.fs_dir(rec.id)),
                options: vec!["rbind".into(), "rw".into()],
            },
            (SnapshotKind::Active, _) => Mount {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "index=off".into(),
                    format!("workdir={}", path(&self.work_dir(rec.id))),
                    format!("upperdir={}", path(&self.fs_dir(rec.id))),
                    format!("lowerdir={}", join_lowers(&lowers)),
                ],
            },
            (_, 0) | (SnapshotKind::Committed, _) => Mount {
                fstype: "bind".into(),
                source: path(&self.fs_dir(rec.id)),
                options: vec!["rbind".into(), "ro".into()],
            },
            (SnapshotKind::View, 1) => Mount {
                fstype: "bind".into(),
                source: path(&lowers[0]),
                options: vec!["rbind".into(), "ro".into()],
            },
            (SnapshotKind::View, _) => Mount {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "ro".into(),
                    "index=off".into(),
                    format!("lowerdir={}", join_lowers(&lowers)),
                ],
            },
        };
        Ok(mount)
    }

    /// Removes a snapshot (record first, then its directory). Fails while it has children.
    pub fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.detach(key)?.remove()
    }

    /// Removes snapshot `key`'s record, so nothing can find or reuse it (a new snapshot of the
    /// same key gets a directory of its own), and returns its directory, to be deleted
    /// whenever convenient ([`Detached::remove`]) — GC deletes them after it has let pulls go
    /// on. A directory never deleted (a crash) is an orphan, removed at the next start.
    pub fn detach(&self, key: &str) -> Result<Detached, SnapshotError> {
        let rec = self.meta.remove_snapshot(key)?;
        self.changed();
        Ok(Detached {
            key: key.to_owned(),
            dir: self.id_dir(rec.id),
        })
    }

    /// A number that changes whenever a snapshot is added or removed (by any path: pulls,
    /// imports, containers, GC), so that a cached measurement of their disk use knows it is
    /// stale. Writes inside active snapshots do not change it.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Every snapshot record.
    pub fn list(&self) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        Ok(self.meta.list_snapshots()?)
    }

    /// Removes snapshot directories that have no record (left by a crash mid-unpack). Only
    /// call when no unpack is in progress.
    pub fn clean_orphans(&self) -> Result<usize, SnapshotError> {
        let known: HashSet<u64> = self.meta.list_snapshots()?.iter().map(|r| r.id).collect();
        let mut removed = 0;
        let rd = fs::read_dir(&self.dir).map_err(|e| io_err("-", "read dir", &self.dir, e))?;
        for entry in rd.flatten() {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if !known.contains(&id) {
                match fs::remove_dir_all(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        warn!(path = %entry.path().display(), error = %e, "cannot remove orphan snapshot")
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Disk use of one snapshot's own directory.
    pub fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let rec = self
            .meta
            .get_snapshot(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))?;
        let d = self.id_dir(rec.id);
        disk_usage(&d).map_err(|e| io_err(key, "measure", &d, e))
    }

    /// Disk use of every snapshot (for ImageFsInfo).
    pub fn total_usage(&self) -> Result<Usage, SnapshotError> {
        disk_usage(&self.dir).map_err(|e| io_err("-", "measure", &self.dir, e))
    }

    /// The directory all snapshots live in (the image filesystem's mount point for CRI).
    pub fn root(&self) -> &Path {
        &self.dir
    }
}

fn join_lowers(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Allocated bytes and inodes under `dir`, hardlinks counted once, symlinks not followed.
/// What disappears during the walk (a snapshot the GC removes meanwhile) is not counted, and
/// a `dir` that does not exist (yet) uses nothing.
pub fn disk_usage(dir: &Path) -> io::Result<Usage> {
    /// Gone since it was listed: not counted, not an error.
    fn gone<T>(r: io::Result<T>) -> io::Result<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Some(m) = gone(fs::symlink_metadata(&d))? else {
            continue;
        };
        if seen.insert((m.dev(), m.ino())) {
            usage.bytes += m.blocks() * 512;
            usage.inodes += 1;
        }
        if !m.is_dir() {
            continue;
        }
        let Some(entries) = gone(fs::read_dir(&d))? else {
            continue;
        };
        for entry in entries {
            let Some(entry) = gone(entry)? else {
                continue;
            };
            let Some(m) = gone(entry.metadata())? else {
                continue;
            };
            if m.is_dir() {
                stack.push(entry.path());
            } else if seen.insert((m.dev(), m.ino())) {
                usage.bytes += m.blocks() * 512;
                usage.inodes += 1;
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod native_tests;
/// A snapshot whose record is gone and whose directory is still to be deleted.
#[derive(Debug)]
pub struct Detached {
    key: String,
    dir: PathBuf,
}

impl Detached {
    /// The key it had.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deletes its directory.
    pub fn remove(self) -> Result<(), SnapshotError> {
        fs::remove_dir_all(&self.dir).map_err(|e| io_err(&self.key, "remove", &self.dir, e))
    }
}

#[cfg(test)]
mod tests;
