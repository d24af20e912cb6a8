//! Content-addressed blob store: `<root>/content/<alg>/<hex>`.
//!
//! A blob is written to `<root>/content/ingest/<alg>-<hex>` (same filesystem), verified for size
//! while streaming and for digest at the end, fsynced, renamed into place, and the directory
//! fsynced. A blob is therefore never visible unverified. Each ingest file is held under an
//! exclusive `flock` while written; an ingest file whose lock is free belongs to a writer that
//! died and is resumed (its bytes re-hashed) or restarted by the next writer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use tracing::{debug, warn};

use crate::digest::{Algorithm, Digest, Digester};

/// Errors of the content store; each names the blob and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A filesystem operation failed.
    #[error("content store: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The bytes hash to something else than expected.
    #[error("blob {expected}: digest mismatch (got {actual})")]
    DigestMismatch {
        /// The digest the blob was announced with.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// More or fewer bytes than announced.
    #[error("blob {digest}: size mismatch (expected {expected} bytes, got {actual})")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The bytes received (so far, when too many).
        actual: u64,
    },
    /// No such blob.
    #[error("blob {0}: not found in content store")]
    NotFound(Digest),
    /// Another live writer holds this blob's ingest.
    #[error("blob {0}: another writer is ingesting it")]
    Busy(Digest),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContentError {
    let path = path.to_owned();
    move |source| ContentError::Io { op, path, source }
}

/// The blob store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating) the store under `root/content`.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let root = root.join("content");
        for dir in ["sha256", "sha512", "ingest"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err("create dir", &p))?;
        }
        Ok(ContentStore { root })
    }

    /// Where the blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}-{}", digest.algorithm(), digest.hex()))
    }

    /// The size of a committed blob, if present.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>, ContentError> {
        let p = self.blob_path(digest);
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    /// Whether a committed blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(digest.clone()),
            _ => io_err("open", &p)(e),
        })
    }

    /// Reads a whole committed blob (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io_err("read", &self.blob_path(digest)))?;
        Ok(buf)
    }

    /// Writes a whole blob, verified against `digest`. Another writer of the same blob (two
    /// pulls of one image at once write the same manifest) is waited for, briefly: the blob is
    /// small and the other writer's bytes are the same, verified the same way.
    pub fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), ContentError> {
        const BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(5);
        const BUSY_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
        let began = std::time::Instant::now();
        let mut w = loop {
            if self.contains(digest) {
                return Ok(());
            }
            match self.writer(digest, Some(data.len() as u64)) {
                Err(ContentError::Busy(_)) if began.elapsed() < BUSY_LIMIT => {
                    std::thread::sleep(BUSY_POLL)
                }
                other => break other?,
            }
        };
        w.restart()?;
        w.write_all(data).map_err(|e| w.unwrap_io(e))?;
        w.commit()
    }

    /// Starts (or resumes) ingesting `digest`. If a dead writer left a partial ingest, its bytes
    /// are re-hashed and [`Writer::offset`] tells where to continue; call [`Writer::restart`] to
    /// discard them instead.
    pub fn writer(&self, digest: &Digest, size: Option<u64>) -> Result<Writer, ContentError> {
        let path = self.ingest_path(digest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("create ingest", &path))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(ContentError::Busy(digest.clone()))
            }
            Err((_, errno)) => return Err(io_err("lock ingest", &path)(errno.into())),
        };
        let mut digester = Digester::new(digest.algorithm());
        let mut offset = 0u64;
        // Re-hash what a dead writer left, unless it is already too long.
        let existing = file.metadata().map_err(io_err("stat", &path))?.len();
        if existing > 0 && size.is_none_or(|s| existing <= s) {
            let mut buf = vec![0u8; 1 << 16];
            file.seek(SeekFrom::Start(0))
                .map_err(io_err("seek", &path))?;
            loop {
                let n = file.read(&mut buf).map_err(io_err("read", &path))?;
                if n == 0 {
                    break;
                }
                digester.update(&buf[..n]);
                offset += n as u64;
            }
            debug!(blob = %digest, offset, "resuming ingest left by a dead writer");
        } else if existing > 0 {
            file.set_len(0).map_err(io_err("truncate", &path))?;
            file.seek(SeekFrom::Start(0))
                .map_err(io_err("seek", &path))?;
        }
        Ok(Writer {
            store: self.clone(),
            path,
            file: Some(file),
            digester,
            written: offset,
            digest: digest.clone(),
            size,
            committed: false,
        })
    }

    /// Deletes a committed blob; absent blobs are not an error.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    /// Every committed blob.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join(alg.as_str());
            let rd = fs::read_dir(&dir).map_err(io_err("read dir", &dir))?;
            for entry in rd {
                let entry = entry.map_err(io_err("read dir", &dir))?;
                if let Some(d) = entry
                    .file_name()
                    .to_str()
                    .and_then(|hex| Digest::new(alg, hex).ok())
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Removes ingest files no live writer holds. Returns how many were removed.
    pub fn clean_ingests(&self) -> Result<usize, ContentError> {
        let dir = self.root.join("ingest");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err("read dir", &dir))? {
            let entry = entry.map_err(io_err("read dir", &dir))?;
            let path = entry.path();
            let Ok(f) = File::open(&path) else { continue };
            if let Ok(_lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "cannot remove stale ingest")
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// An in-progress blob write. Dropping it without [`Writer::commit`] removes the partial file.
pub struct Writer {
    store: ContentStore,
    path: PathBuf,
    file: Option<Flock<File>>,
    digester: Digester,
    written: u64,
    digest: Digest,
    size: Option<u64>,
    committed: bool,
}

impl Writer {
    /// Bytes already in the ingest (non-zero when resuming a dead writer's ingest).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The announced size, if any.
    pub fn expected_size(&self) -> Option<u64> {
        self.size
    }

    /// The blob being written.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Discards any bytes written so far.
    pub fn restart(&mut self) -> Result<(), ContentError> {
        let f = self
            .file
            .as_mut()
            .expect("writer file present until commit");
        f.set_len(0).map_err(io_err("truncate", &self.path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", &self.path))?;
        self.digester = Digester::new(self.digest.algorithm());
        self.written = 0;
        Ok(())
    }

    /// Reopens the partial bytes for reading from the start (to replay them into an unpacker).
    pub fn reopen_partial(&self) -> Result<File, ContentError> {
        File::open(&self.path).map_err(io_err("open ingest", &self.path))
    }

    /// Turns an I/O error from `write` back into the store's error (size overflow keeps its
    /// meaning).
    pub fn unwrap_io(&self, e: io::Error) -> ContentError {
        match e.get_ref().and_then(|i| i.downcast_ref::<SizeOverflow>()) {
            Some(o) => ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: o.expected,
                actual: o.actual,
            },
            None => io_err("write ingest", &self.path)(e),
        }
    }

    /// Checks size and digest of what was written so far, without committing.
    pub fn verify(&self) -> Result<(), ContentError> {
        if let Some(expected) = self.size {
            if self.written != expected {
                return Err(ContentError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: self.written,
                });
            }
        }
        let actual = self.digester.clone().finish();
        if actual != self.digest {
            return Err(ContentError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Verifies size and digest, fsyncs, and makes the blob visible.
    pub fn commit(mut self) -> Result<(), ContentError> {
        if let Some(expected) = self.size {
            if self.written != expected {
                return Err(ContentError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: self.written,
                });
            }
        }
        let actual =
            std::mem::replace(&mut self.digester, Digester::new(Algorithm::Sha256)).finish();
        if actual != self.digest {
            return Err(ContentError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let file = self
            .file
            .as_ref()
            .expect("writer file present until commit");
        file.sync_all().map_err(io_err("fsync", &self.path))?;
        let dest = self.store.blob_path(&self.digest);
        fs::rename(&self.path, &dest).map_err(io_err("rename", &dest))?;
        self.committed = true;
        let dir = dest.parent().expect("blob path has a parent");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync dir", dir))?;
        debug!(blob = %self.digest, size = self.written, "blob committed");
        Ok(())
    }
}

#[derive(Debug)]
struct SizeOverflow {
    expected: u64,
    actual: u64,
}

impl std::fmt::Display for SizeOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than the announced {} bytes ({})",
            self.expected, self.actual
        )
    }
}

impl std::error::Error for SizeOverflow {}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let after = self.written + buf.len() as u64;
        if let Some(expected) = self.size {
            if after > expected {
                return Err(io::Error::other(SizeOverflow {
                    expected,
                    actual: after,
                }));
            }
        }
        let f = self
            .file
            .as_mut()
            .expect("writer file present until commit");
        f.write_all(buf)?;
        self.digester.update(buf);
        self.written = after;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %self.path.display(), error = %e, "cannot remove ingest");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn ingest_count(s: &ContentStore) -> usize {
        fs::read_dir(s.root.join("ingest")).unwrap().count()
    }

    #[test]
    fn writes_verified_blob() {
        let (_d, s) = store();
        let data = b"hello world";
        let dg = Digest::sha256_of(data);
        let mut w = s.writer(&dg, Some(data.len() as u64)).unwrap();
        w.write_all(&data[..5]).unwrap();
        assert!(!s.contains(&dg), "blob visible before commit");
        w.write_all(&data[5..]).unwrap();
        w.commit().unwrap();
        assert!(s.contains(&dg));
        assert_eq!(s.read_blob(&dg).unwrap(), data);
        assert_eq!(s.size(&dg).unwrap(), Some(11));
        assert_eq!(s.list().unwrap(), vec![dg.clone()]);
        assert_eq!(ingest_count(&s), 0);
        s.delete(&dg).unwrap();
        assert!(!s.contains(&dg));
    }

    #[test]
    fn digest_mismatch_leaves_nothing() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"expected");
        let mut w = s.writer(&dg, Some(8)).unwrap();
        w.write_all(b"corrupt!").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("digest mismatch"));
        assert!(!s.contains(&dg));
        assert_eq!(ingest_count(&s), 0);
    }

    #[test]
    fn size_checked_while_streaming() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"abcdef");
        let mut w = s.writer(&dg, Some(3)).unwrap();
        let e = w.write_all(b"abcdef").unwrap_err();
        let e = w.unwrap_io(e);
        assert!(
            matches!(e, ContentError::SizeMismatch { expected: 3, .. }),
            "{e}"
        );
        drop(w);
        let mut w = s.writer(&dg, Some(10)).unwrap();
        w.write_all(b"abcdef").unwrap();
        let e = w.commit().unwrap_err();
        assert!(matches!(
            e,
            ContentError::SizeMismatch {
                expected: 10,
                actual: 6,
                ..
            }
        ));
        assert!(!s.contains(&dg));
        assert_eq!(ingest_count(&s), 0);
    }

    #[test]
    fn concurrent_writer_is_busy() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"x");
        let _w = s.writer(&dg, None).unwrap();
        assert!(matches!(s.writer(&dg, None), Err(ContentError::Busy(_))));
    }

    #[test]
    fn resumes_dead_writer_ingest() {
        let (_d, s) = store();
        let data = b"0123456789";
        let dg = Digest::sha256_of(data);
        // A killed writer: partial bytes, no lock holder.
        fs::write(s.ingest_path(&dg), &data[..4]).unwrap();
        let mut w = s.writer(&dg, Some(10)).unwrap();
        assert_eq!(w.offset(), 4);
        w.write_all(&data[4..]).unwrap();
        w.commit().unwrap();
        assert_eq!(s.read_blob(&dg).unwrap(), data);
    }

    #[test]
    fn oversize_stale_ingest_is_discarded_and_cleaned() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"ab");
        fs::write(s.ingest_path(&dg), b"far too long").unwrap();
        let w = s.writer(&dg, Some(2)).unwrap();
        assert_eq!(w.offset(), 0);
        drop(w);
        let other = Digest::sha256_of(b"other");
        fs::write(s.ingest_path(&other), b"junk").unwrap();
        let held = s.writer(&Digest::sha256_of(b"held"), None).unwrap();
        assert_eq!(s.clean_ingests().unwrap(), 1);
        assert_eq!(ingest_count(&s), 1);
        drop(held);
    }

    #[test]
    fn write_blob_and_not_found() {
        let (_d, s) = store();
        let dg = Digest::sha256_of(b"cfg");
        assert!(matches!(s.open_blob(&dg), Err(ContentError::NotFound(_))));
        s.write_blob(&dg, b"cfg").unwrap();
        s.write_blob(&dg, b"cfg").unwrap();
        assert_eq!(s.read_blob(&dg).unwrap(), b"cfg");
        let bad = s.write_blob(&Digest::sha256_of(b"a"), b"b").unwrap_err();
        assert!(bad.to_string().starts_with("blob sha256:ca978112"), "{bad}");
    }

    #[test]
    fn write_blob_waits_for_another_writer_of_the_same_blob() {
        let (_d, s) = store();
        let data = b"manifest";
        let dg = Digest::sha256_of(data);
        let mut held = s.writer(&dg, Some(data.len() as u64)).unwrap();
        std::thread::scope(|t| {
            let waiter = t.spawn(|| s.write_blob(&dg, data));
            std::thread::sleep(std::time::Duration::from_millis(50));
            held.write_all(data).unwrap();
            held.commit().unwrap();
            waiter.join().unwrap().unwrap();
        });
        assert_eq!(s.read_blob(&dg).unwrap(), data);
    }
}
