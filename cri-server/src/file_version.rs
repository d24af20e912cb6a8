//! Which version of a file is on disk, from a `stat`: what tells berthd that a runtime
//! handler's binary was upgraded (its sealed copy, its `features`) without re-reading it.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// What identifies one version of a file on disk: device, inode, size, mtime and ctime. ctime
/// besides mtime: a rewrite that restores the old mtime (`cp -p`, `touch -r`) still moves
/// ctime; an upgrade that renames a new file over the old one changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileVersion {
    /// The version `m` (a `stat` of the file) describes.
    pub fn of(m: &Metadata) -> FileVersion {
        FileVersion {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The version of the file at `path` now (symlinks followed).
    pub fn stat(path: &Path) -> std::io::Result<FileVersion> {
        std::fs::metadata(path).map(|m| FileVersion::of(&m))
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Values worked out from files (a runtime binary's sealed copy, its features), one per path,
/// each kept with the version of the file it was worked out from: found again while the file
/// stays at that version, to be worked out anew once it changed. The working out is the
/// caller's, without the lock (it may take long); two callers racing on a new version both do
/// it, and the last one stored stays.
pub struct PerVersion<V> {
    slots: Mutex<HashMap<PathBuf, (FileVersion, V)>>,
}

impl<V> Default for PerVersion<V> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> PerVersion<V> {
    /// The value stored for `path` at version `now`; else `Err` with the value of an older
    /// version, if there was one.
    pub fn get(&self, path: &Path, now: FileVersion) -> Result<V, Option<V>> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get(path) {
            Some((version, value)) if *version == now => Ok(value.clone()),
            Some((_, value)) => Err(Some(value.clone())),
            None => Err(None),
        }
    }

    /// Stores `value` as worked out from version `version` of `path`.
    pub fn put(&self, path: &Path, version: FileVersion, value: V) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), (version, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_over_or_a_rewrite_is_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"one").unwrap();
        let v1 = FileVersion::stat(&f).unwrap();
        assert_eq!(FileVersion::stat(&f).unwrap(), v1);
        assert_eq!(v1.size(), 3);
        let tmp = dir.path().join("bin.new");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        let v2 = FileVersion::stat(&f).unwrap();
        assert_ne!(v2, v1, "same size, new inode");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"six").unwrap();
        assert_ne!(FileVersion::stat(&f).unwrap(), v2, "same inode, rewritten");
        assert!(FileVersion::stat(&dir.path().join("missing")).is_err());
    }
}
