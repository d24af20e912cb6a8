//! GetContainerEvents: created/started/stopped/deleted events, broadcast to every subscriber
//! (the kubelet's evented PLEG). A subscriber too slow to keep up misses events (and the
//! kubelet relists), as with containerd.

use cri_api::v1 as cri;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Containers, EventStream};
use crate::store::container::Container;

/// Publishes an event about `c`, with its pod's status and the statuses of every container
/// of the pod (as containerd does: the kubelet's evented PLEG updates its cache from them).
pub(super) fn publish(inner: &Containers, c: &Container, kind: cri::ContainerEventType) {
    let pod = inner
        .sandboxes
        .get()
        .and_then(|s| s.cri_status(&c.meta.sandbox_id));
    send(inner, c.id(), &c.meta.sandbox_id, kind, pod);
}

/// Publishes an event about a sandbox (its ID as the container ID).
pub(super) fn publish_sandbox(
    inner: &Containers,
    sandbox_id: &str,
    kind: cri::ContainerEventType,
    pod: Option<cri::PodSandboxStatus>,
) {
    send(inner, sandbox_id, sandbox_id, kind, pod);
}

fn send(
    inner: &Containers,
    id: &str,
    sandbox_id: &str,
    kind: cri::ContainerEventType,
    pod: Option<cri::PodSandboxStatus>,
) {
    if inner.events.receiver_count() == 0 {
        return;
    }
    let event = cri::ContainerEventResponse {
        container_id: id.to_owned(),
        container_event_type: kind as i32,
        created_at: super::status::now_ns(),
        pod_sandbox_status: pod,
        containers_statuses: inner
            .in_sandbox(sandbox_id)
            .iter()
            .map(|c| super::status::cri_status(c, false))
            .collect(),
    };
    // The last subscriber may have left meanwhile: nothing to do.
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
