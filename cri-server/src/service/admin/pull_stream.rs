//! `PullWithProgress`: the image store's pull with its per-layer observer, forwarded to the
//! client as `PullProgress` messages. State changes go out at once; byte counts are coalesced
//! (at most one message per [`TICK`] for them), so a fast download does not flood the client.
//! The pull runs to its end even when the client goes away (as the CRI's PullImage does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use image_store::{Digest, ImageStore, LayerEvent, PullOptions, Reference};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::proto::{LayerProgress, PullProgress, PullResponse};

/// How often coalesced byte counts are sent.
const TICK: Duration = Duration::from_millis(100);
/// Messages in flight to the client.
const IN_FLIGHT: usize = 16;

/// One layer as the client last heard of it, and whether it changed since.
struct Layer {
    progress: LayerProgress,
    dirty: bool,
}

/// Every layer's state, in manifest order once resolved.
#[derive(Default)]
struct Layers(BTreeMap<String, Layer>);

impl Layers {
    /// Applies one event; true when it is a change of state (sent at once).
    fn apply(&mut self, digest: &Digest, event: LayerEvent) -> bool {
        let key = digest.to_string();
        let layer = self.0.entry(key.clone()).or_insert_with(|| Layer {
            progress: LayerProgress {
                digest: key,
                ..Default::default()
            },
            dirty: false,
        });
        layer.dirty = true;
        let p = &mut layer.progress;
        let state = match event {
            LayerEvent::Resolved { index, size } => {
                p.index = u32::try_from(index).unwrap_or(u32::MAX);
                p.size = size;
                "resolved"
            }
            LayerEvent::Exists => {
                p.bytes = p.size;
                "exists"
            }
            LayerEvent::Cached => {
                p.bytes = p.size;
                "cached"
            }
            LayerEvent::Downloading { offset } => {
                p.bytes = offset;
                "downloading"
            }
            LayerEvent::Downloaded { bytes } => {
                p.bytes = p.bytes.saturating_add(bytes);
                return false;
            }
            LayerEvent::Verified => "verified",
            LayerEvent::Unpacked => "unpacked",
            LayerEvent::Done => "done",
            LayerEvent::Failed { error } => {
                p.error = error;
                "failed"
            }
        };
        p.state = state.to_owned();
        true
    }

    /// The changed layers (in manifest order), now clean.
    fn take_dirty(&mut self) -> Vec<LayerProgress> {
        let mut out: Vec<LayerProgress> = self
            .0
            .values_mut()
            .filter(|l| l.dirty)
            .map(|l| {
                l.dirty = false;
                l.progress.clone()
            })
            .collect();
        out.sort_by_key(|p| p.index);
        out
    }
}

/// Starts the pull and returns the stream of its progress messages.
pub(super) fn pull_with_progress(
    store: Arc<ImageStore>,
    reference: Reference,
    opts: PullOptions,
) -> mpsc::Receiver<Result<PullProgress, Status>> {
    let (out, rx) = mpsc::channel(IN_FLIGHT);
    let (events_tx, mut events) = mpsc::unbounded_channel::<(Digest, LayerEvent)>();
    let pull = {
        let reference = reference.clone();
        tokio::spawn(async move {
            store
                .pull_with_progress(&reference, &opts, Arc::new(events_tx))
                .await
        })
    };
    tokio::spawn(async move {
        let mut layers = Layers::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut client_gone = false;
        // Ends when the pull has dropped its observer (it finished); every iteration
        // consumes an event or a tick.
        loop {
            let flush = tokio::select! {
                ev = events.recv() => match ev {
                    Some((digest, event)) => layers.apply(&digest, event),
                    None => break,
                },
                _ = tick.tick() => true,
            };
            if flush && !client_gone {
                let changed = layers.take_dirty();
                if !changed.is_empty() {
                    let msg = PullProgress {
                        layers: changed,
                        done: None,
                    };
                    client_gone = out.send(Ok(msg)).await.is_err();
                }
            }
        }
        let pending = layers.take_dirty();
        let last = match pull.await {
            Ok(Ok(image)) => {
                info!(image = %reference, id = %image.config_digest, "image pulled (admin)");
                Ok(PullProgress {
                    layers: pending,
                    done: Some(PullResponse {
                        name: reference.to_string(),
                        image_id: image.config_digest.to_string(),
                    }),
                })
            }
            Ok(Err(e)) => {
                warn!(image = %reference, error = %e, "pull failed (admin)");
                // The layers' last states first (a failed layer says which).
                if !client_gone && !pending.is_empty() {
                    let msg = PullProgress {
                        layers: pending,
                        done: None,
                    };
                    client_gone = out.send(Ok(msg)).await.is_err();
                }
                Err(Status::unavailable(e.to_string()))
            }
            Err(e) => Err(Status::internal(format!("pull {reference}: {e}"))),
        };
        if !client_gone {
            let _ = out.send(last).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    #[test]
    fn bytes_are_coalesced_and_states_flush() {
        let mut l = Layers::default();
        assert!(l.apply(&d(2), LayerEvent::Resolved { index: 1, size: 10 }));
        assert!(l.apply(&d(1), LayerEvent::Resolved { index: 0, size: 7 }));
        let first = l.take_dirty();
        assert_eq!(
            first.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 1],
            "manifest order"
        );
        assert!(l.take_dirty().is_empty());
        assert!(l.apply(&d(2), LayerEvent::Downloading { offset: 4 }));
        assert!(!l.apply(&d(2), LayerEvent::Downloaded { bytes: 3 }));
        assert!(!l.apply(&d(2), LayerEvent::Downloaded { bytes: 3 }));
        let p = l.take_dirty();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].bytes, p[0].state.as_str()), (10, "downloading"));
        assert!(l.apply(&d(1), LayerEvent::Exists));
        assert!(l.apply(
            &d(2),
            LayerEvent::Failed {
                error: "boom".into()
            }
        ));
        let p = l.take_dirty();
        assert_eq!(p[0].state, "exists");
        assert_eq!(p[0].bytes, 7);
        assert_eq!(
            (p[1].state.as_str(), p[1].error.as_str()),
            ("failed", "boom")
        );
    }
}
