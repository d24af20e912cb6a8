//! GetContainerEvents: created/started/stopped/deleted events, broadcast to every subscriber
//! (the kubelet's evented PLEG). A subscriber too slow to keep up misses events (and the
//! kubelet relists), as with containerd.

use k8s_cri::v1 as cri;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Containers, EventStream};
use crate::store::container::Container;

/// Publishes an event about `c` with its current status.
pub(super) fn publish(inner: &Containers, c: &Container, kind: cri::ContainerEventType) {
    let event = cri::ContainerEventResponse {
        container_id: c.id().to_owned(),
        container_event_type: kind as i32,
        created_at: super::status::now_ns(),
        pod_sandbox_status: None,
        containers_statuses: vec![super::status::cri_status(c, false)],
    };
    // No subscriber: nothing to do.
    let _ = inner.events.send(event);
}

/// A stream of every event from now on.
pub(super) fn subscribe(inner: &Containers) -> EventStream {
    let mut rx = inner.events.subscribe();
    let (tx, out) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    if tx.send(Ok(event)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "container event subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}
