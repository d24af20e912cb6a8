//! One layer's trip from the registry to an unpacked (not yet committed) snapshot directory:
//! download, verify (size while streaming, digest at the end) into the content store, and
//! decompress + unpack — all in one pass.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;

use crate::content::{ContentError, ContentStore, Writer};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::pull_progress::{LayerEvent, Reporter};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};
use crate::snapshot::{LayerDir, SnapshotError, Snapshotter};
use crate::unpack::{unpack_layer, Compression, UnpackError, UnpackOptions, Unpacked};

/// Why one layer could not be fetched and unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The request for the blob failed.
    #[error("download: {0}")]
    Registry(#[from] RegistryError),
    /// The byte stream broke off (the message names the cause: a read timeout, a reset).
    #[error("download interrupted: {}", crate::registry::causes(.0))]
    Stream(#[source] io::Error),
    /// The bytes were not what the manifest promised (digest or size), or storing them failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The layer could not be unpacked.
    #[error("unpack: {0}")]
    Unpack(#[from] UnpackError),
    /// The snapshot directory could not be made.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Another process kept the blob's ingest locked for too long.
    #[error("another process has been downloading it for more than {0:?}")]
    BusyTimeout(Duration),
    /// The unpack thread panicked or was cancelled.
    #[error("unpack task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LayerError {
    /// Whether a new attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            LayerError::Registry(e) => e.is_transient(),
            LayerError::Stream(_) => true,
            _ => false,
        }
    }
}

/// Everything a layer fetch needs.
pub(crate) struct LayerJob {
    pub reference: Reference,
    pub desc: Descriptor,
    pub content: ContentStore,
    pub snapshots: Snapshotter,
    pub unpack: UnpackOptions,
    pub progress: Reporter,
}

const BUSY_POLL: Duration = Duration::from_millis(200);
const BUSY_LIMIT: Duration = Duration::from_secs(600);

/// Fetches (or reads from the content store) and unpacks one layer into a fresh, uncommitted
/// snapshot directory.
pub(crate) async fn fetch_layer(
    job: &LayerJob,
    client: &RegistryClient,
) -> Result<(Unpacked, LayerDir), LayerError> {
    Compression::from_media_type(&job.desc.media_type)?;
    let digest = &job.desc.digest;
    let layer = job.snapshots.begin_layer()?;
    let mut waited = Duration::ZERO;
    let writer = loop {
        if job.content.contains(digest) {
            debug!(layer = %digest, "layer blob already in the content store");
            job.progress.report(digest, LayerEvent::Cached);
            return unpack_local(job, layer).await;
        }
        match job.content.writer(digest, Some(job.desc.size)) {
            Ok(w) => break w,
            Err(ContentError::Busy(_)) if waited < BUSY_LIMIT => {
                tokio::time::sleep(BUSY_POLL).await;
                waited += BUSY_POLL;
            }
            Err(ContentError::Busy(_)) => return Err(LayerError::BusyTimeout(BUSY_LIMIT)),
            Err(e) => return Err(e.into()),
        }
    };
    download_and_unpack(job, client, writer, layer).await
}

async fn unpack_local(job: &LayerJob, layer: LayerDir) -> Result<(Unpacked, LayerDir), LayerError> {
    let file = job.content.open_blob(&job.desc.digest)?;
    let opts = job.unpack.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut layer = layer;
        let u = unpack_layer(
            io::BufReader::with_capacity(1 << 17, file),
            &layer.path(),
            &opts,
        )?;
        layer.sync()?;
        Ok((u, layer))
    })
    .await?;
    if r.is_ok() {
        job.progress.report(&job.desc.digest, LayerEvent::Unpacked);
    }
    r
}

async fn download_and_unpack(
    job: &LayerJob,
    client: &RegistryClient,
    mut writer: Writer,
    layer: LayerDir,
) -> Result<(Unpacked, LayerDir), LayerError> {
    let digest = &job.desc.digest;
    let offset = writer.offset();
    let (mut stream, start, announced) = client.blob(&job.reference, digest, offset).await?;
    if let Some(len) = announced {
        if start + len != job.desc.size {
            return Err(ContentError::SizeMismatch {
                digest: digest.clone(),
                expected: job.desc.size,
                actual: start + len,
            }
            .into());
        }
    }
    job.progress
        .report(digest, LayerEvent::Downloading { offset: start });
    let prefix = if start > 0 {
        debug!(layer = %digest, offset = start, "resuming download");
        Some(writer.reopen_partial()?.take(start))
    } else {
        if offset > 0 {
            writer.restart()?;
        }
        None
    };
    // Two blocking threads per layer: one stores the compressed bytes (write + digest), the
    // other decompresses, digests and unpacks them. The chunks are shared, not copied.
    let (utx, urx) = mpsc::channel::<io::Result<Bytes>>(16);
    let (wtx, wrx) = mpsc::channel::<Bytes>(16);
    let opts = job.unpack.clone();
    let unpacker =
        tokio::task::spawn_blocking(move || unpack_from_channel(urx, prefix, layer, &opts));
    let storer = tokio::task::spawn_blocking(move || store_from_channel(wrx, writer));
    let mut unpacking = true;
    let mut stream_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                let bytes = b.len() as u64;
                job.progress
                    .report(digest, LayerEvent::Downloaded { bytes });
                if wtx.send(b.clone()).await.is_err() {
                    // The store failed (it says why).
                    break;
                }
                // An unpacker that stopped (done, or failed) leaves the store to see every
                // byte: a broken blob is reported as such rather than as the unpack error it
                // caused.
                if unpacking && utx.send(Ok(b)).await.is_err() {
                    unpacking = false;
                }
            }
            Err(e) => {
                if unpacking {
                    let _ = utx.send(Err(io::Error::new(e.kind(), e.to_string()))).await;
                }
                stream_error = Some(e);
                break;
            }
        }
    }
    drop(utx);
    drop(wtx);
    let stored = storer.await?;
    let unpacked = unpacker.await?;
    // What failed first in the blob's life wins: its bytes, then their transport, then unpacking.
    let writer = stored?;
    let complete = writer.offset() == job.desc.size;
    if let Some(e) = stream_error {
        if complete {
            writer.verify()?;
        }
        return Err(LayerError::Stream(e));
    }
    writer.verify()?;
    job.progress.report(digest, LayerEvent::Verified);
    let (u, mut layer) = unpacked?;
    let r = tokio::task::spawn_blocking(move || {
        writer.commit()?;
        layer.sync()?;
        Ok((u, layer))
    })
    .await?;
    if r.is_ok() {
        job.progress.report(digest, LayerEvent::Unpacked);
    }
    r
}

/// Reads the chunks a download task sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: every iteration either returns or consumes one channel message.
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Writes every chunk into the content writer (which checks the size and digests as it goes).
fn store_from_channel(
    mut rx: mpsc::Receiver<Bytes>,
    mut writer: Writer,
) -> Result<Writer, ContentError> {
    // Bounded by the download: one iteration per chunk.
    while let Some(b) = rx.blocking_recv() {
        if let Err(e) = writer.write_all(&b) {
            return Err(writer.unwrap_io(e));
        }
    }
    Ok(writer)
}

fn unpack_from_channel(
    rx: mpsc::Receiver<io::Result<Bytes>>,
    prefix: Option<io::Take<File>>,
    layer: LayerDir,
    opts: &UnpackOptions,
) -> Result<(Unpacked, LayerDir), LayerError> {
    let mut input = ChannelReader {
        rx,
        cur: Bytes::new(),
    };
    let unpacked = match prefix {
        Some(p) => unpack_layer(p.chain(&mut input), &layer.path(), opts)?,
        None => unpack_layer(&mut input, &layer.path(), opts)?,
    };
    Ok((unpacked, layer))
}

/// Fetches a small blob (a config) into the content store and returns its bytes.
pub(crate) async fn fetch_small_blob(
    content: &ContentStore,
    client: &RegistryClient,
    reference: &Reference,
    desc: &Descriptor,
    max: u64,
) -> Result<Vec<u8>, LayerError> {
    let digest: &Digest = &desc.digest;
    if content.contains(digest) {
        return Ok(content.read_blob(digest)?);
    }
    if desc.size > max {
        return Err(ContentError::SizeMismatch {
            digest: digest.clone(),
            expected: max,
            actual: desc.size,
        }
        .into());
    }
    let (mut stream, _, _) = client.blob(reference, digest, 0).await?;
    let mut buf = Vec::with_capacity(desc.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(LayerError::Stream)?;
        if buf.len() as u64 + chunk.len() as u64 > desc.size {
            return Err(ContentError::SizeMismatch {
                digest: digest.clone(),
                expected: desc.size,
                actual: buf.len() as u64 + chunk.len() as u64,
            }
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    // Verified against the digest; a concurrent pull of the same image writing it too is
    // waited for (its bytes are the same).
    content.write_blob(digest, &buf)?;
    Ok(buf)
}
