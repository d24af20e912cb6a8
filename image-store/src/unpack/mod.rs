//! Layer unpacking: decompress (gzip, zstd or none), digest the uncompressed stream (the layer's
//! diff_id) and apply the tar onto a snapshot directory in overlay format, never writing outside
//! it.

mod apply;
mod rootfs;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use apply::UnpackOptions;

use crate::digest::{Algorithm, Digest, DigestReader};

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
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 17, stream),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(stream).map_err(UnpackError::Read)?)
        }
    };
    let digesting = DigestReader::new(decompressed, Algorithm::Sha256);
    let mut root = rootfs::Root::open(dest).map_err(|source| UnpackError::Destination {
        path: dest.to_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(EofPad::new(digesting));
    let entries = apply::apply_entries(&mut archive, &mut root, opts)?;
    let mut padded = archive.into_inner();
    io::copy(&mut padded, &mut io::sink()).map_err(UnpackError::Read)?;
    let (diff_id, uncompressed_size, _) = padded.inner.finish();
    Ok(Unpacked {
        diff_id,
        uncompressed_size,
        entries,
        compression,
    })
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
