//! Layer unpacking: decompress (gzip, zstd or none), digest the uncompressed stream (the layer's
//! diff_id) and apply the tar onto a snapshot directory in overlay format, never writing outside
//! it.

mod apply;
mod rootfs;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use apply::UnpackOptions;

use std::sync::mpsc;

use bytes::{Bytes, BytesMut};

use crate::digest::{Algorithm, Digest, Digester};

/// Errors of unpacking one layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer's media type is not a layer format berth knows.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// The destination directory cannot be opened.
    #[error("open snapshot dir {path}: {source}")]
    Destination {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The (decompressed) stream is not a valid tar, or reading it failed.
    #[error("read layer stream: {0}")]
    Read(#[source] io::Error),
    /// An entry path with `..`, which could climb out of the snapshot.
    #[error("entry {path}: path escapes the layer root")]
    PathEscape {
        /// The entry's path as written in the tar.
        path: PathBuf,
    },
    /// A hardlink whose target is not in this layer.
    #[error("entry {path}: hardlink to {target}: {source}")]
    HardlinkTarget {
        /// The link.
        path: PathBuf,
        /// Its target as written in the tar.
        target: PathBuf,
        /// Why linking failed.
        source: io::Error,
    },
    /// Creating or changing an entry failed.
    #[error("entry {path}: {source}")]
    Entry {
        /// The entry's path as written in the tar.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly multi-member).
    Gzip,
    /// zstd.
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Compression {
    /// The compression a layer media type announces; errors for non-layer media types.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnpackError> {
        let c = match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            other => return Err(UnpackError::UnsupportedMediaType(other.to_owned())),
        };
        Ok(c)
    }

    /// The compression the first bytes of a stream show (plain tar when neither magic matches).
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What unpacking one layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Digest of the uncompressed tar (to check against the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Number of tar entries.
    pub entries: u64,
    /// The compression found by the stream's magic bytes.
    pub compression: Compression,
}

/// Decompresses `compressed` (detected by magic bytes), applies the tar onto `dest` (an
/// existing directory) and returns the diff_id. Reads the decompressed stream to its end, so
/// that the diff_id covers the whole tar; the caller drains the compressed reader if it must
/// see every byte (to verify the blob digest).
pub fn unpack_layer<R: Read>(
    mut compressed: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    let mut magic = Vec::with_capacity(4);
    (&mut compressed)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(UnpackError::Read)?;
    let compression = Compression::detect(&magic);
    let stream = io::Cursor::new(magic).chain(compressed);
    let mut decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 17, stream),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(stream).map_err(UnpackError::Read)?)
        }
    };
    let root = rootfs::Root::open(dest).map_err(|source| UnpackError::Destination {
        path: dest.to_owned(),
        source,
    })?;
    // Three threads: this one decompresses into shared chunks, one digests them (the
    // diff_id) and one applies the tar.
    std::thread::scope(|scope| {
        let (htx, hrx) = mpsc::sync_channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let (atx, arx) = mpsc::sync_channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let hasher = scope.spawn(move || {
            let mut d = Digester::new(Algorithm::Sha256);
            let mut size = 0u64;
            for chunk in hrx {
                d.update(&chunk);
                size += chunk.len() as u64;
            }
            (d.finish(), size)
        });
        let applier = scope.spawn(move || {
            let mut root = root;
            let mut archive = tar::Archive::new(EofPad::new(ChunkReader {
                rx: arx,
                cur: Bytes::new(),
            }));
            apply::apply_entries(&mut archive, &mut root, opts)
        });
        let mut applier = Some(applier);
        let mut applied = None;
        let mut read_error = None;
        // Bounded by the stream: every pass reads at least one byte or ends.
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            let n = match fill(&mut decompressed, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let chunk = buf.freeze();
            if htx.send(chunk.clone()).is_err() {
                break;
            }
            if applier.is_some() && atx.send(chunk).is_err() {
                // The applier stopped: at the tar's end (the rest still counts for the
                // diff_id), or failing (then there is no point reading on).
                let r = join(applier.take().expect("checked"));
                let failed = r.is_err();
                applied = Some(r);
                if failed {
                    break;
                }
            }
        }
        drop(atx);
        drop(htx);
        let applied = match applier {
            Some(a) => join(a),
            None => applied.expect("joined above"),
        };
        let (diff_id, uncompressed_size) = join(hasher);
        if let Some(e) = read_error {
            return Err(UnpackError::Read(e));
        }
        let entries = applied?;
        Ok(Unpacked {
            diff_id,
            uncompressed_size,
            entries,
            compression,
        })
    })
}

/// Decompressed chunks handed between the threads of one unpack.
const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

/// Reads into `buf` until it is full or the stream ends; returns how much was read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    // Bounded by `buf`: every pass reads at least one byte or ends.
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A scoped thread's result; its panic goes on in the caller.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Reads the chunks the decompressing thread sends.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: every iteration either returns or consumes one chunk.
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Some writers (umoci 0.4's `insert`, for one) end a layer right after the last entry's data,
/// without its padding or the two zero blocks that end a tar. This reader supplies them after
/// the real end of the stream, so such layers unpack as they do with Go's archive/tar. The
/// diff_id is computed below this reader, over the real bytes only, so a stream that is really
/// truncated still fails its diff_id check.
struct EofPad<R> {
    inner: R,
    pos: u64,
    synthetic: Option<u64>,
}

impl<R> EofPad<R> {
    fn new(inner: R) -> Self {
        EofPad {
            inner,
            pos: 0,
            synthetic: None,
        }
    }
}

impl<R: Read> Read for EofPad<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.synthetic.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            let pad = (512 - self.pos % 512) % 512;
            self.synthetic = Some(pad + 1024);
        }
        let left = self.synthetic.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
