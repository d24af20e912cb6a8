//! Per-layer progress of a pull, for whoever watches one (`ImageStore::pull_with_progress`):
//! berthd forwards it to `berth pull`'s progress bars.
//!
//! Every layer of the selected manifest is first [`LayerEvent::Resolved`] (in manifest order),
//! then either [`LayerEvent::Exists`] (already unpacked: nothing to do) or a trip that ends in
//! [`LayerEvent::Done`] or [`LayerEvent::Failed`]:
//!
//! ```text
//! Resolved ─┬─ Exists
//!           └─ (Cached | Downloading{offset} Downloaded{bytes}… Verified) Unpacked ─┬─ Done
//!                                                                                  └─ Failed
//! ```
//! A retried download starts again with `Downloading { offset }`: the bytes counted for the
//! layer are then `offset` plus the `Downloaded` deltas after it, and reach the layer's size.

use std::sync::Arc;

use crate::digest::Digest;

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEvent {
    /// The manifest names the layer: its position (0 = bottom) and compressed size.
    Resolved {
        /// Position in the manifest.
        index: usize,
        /// Compressed size in bytes.
        size: u64,
    },
    /// The layer is already unpacked on this node: skipped.
    Exists,
    /// The blob is already in the content store: unpacked from there, not downloaded.
    Cached,
    /// A download (or a retry of one) starts; `offset` bytes are already stored (a resume).
    Downloading {
        /// Bytes already stored.
        offset: u64,
    },
    /// `bytes` more bytes arrived.
    Downloaded {
        /// Bytes in this chunk.
        bytes: u64,
    },
    /// The stored blob matches its digest and size.
    Verified,
    /// The layer is unpacked (not yet committed).
    Unpacked,
    /// The layer's snapshot is committed.
    Done,
    /// The layer failed (the pull's error says why too).
    Failed {
        /// The cause.
        error: String,
    },
}

/// An observer of a pull's per-layer events. Called from the pull's tasks and threads, so it
/// must be cheap and must not block (send into a channel, update a counter).
pub trait PullProgress: Send + Sync {
    /// `layer` (a blob digest) went through `event`.
    fn layer(&self, layer: &Digest, event: LayerEvent);
}

/// Events into an unbounded channel (the receiver coalesces as it likes).
impl PullProgress for tokio::sync::mpsc::UnboundedSender<(Digest, LayerEvent)> {
    fn layer(&self, layer: &Digest, event: LayerEvent) {
        // The watcher went away: the pull goes on regardless.
        let _ = self.send((layer.clone(), event));
    }
}

/// The observer a pull reports to: none, or one shared by its tasks.
#[derive(Clone, Default)]
pub(crate) struct Reporter(Option<Arc<dyn PullProgress>>);

impl Reporter {
    pub(crate) fn new(p: Option<Arc<dyn PullProgress>>) -> Self {
        Reporter(p)
    }

    pub(crate) fn report(&self, layer: &Digest, event: LayerEvent) {
        if let Some(p) = &self.0 {
            p.layer(layer, event);
        }
    }
}
