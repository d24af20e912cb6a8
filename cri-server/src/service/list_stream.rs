//! List streaming (KEP-5825): StreamPodSandboxes, StreamContainers, StreamContainerStats,
//! StreamPodSandboxStats, StreamPodSandboxMetrics and StreamImages send the records of their
//! unary List counterpart — built by the same function, with the same filter — as a server
//! stream, so that a node with many thousand exited containers never meets gRPC's message
//! size limit (16 MiB in the kubelet; tonic's default decode limit is 4 MiB).
//!
//! Each streamed response carries a batch of records in its repeated field (field 1 in all
//! six messages). A batch is cut so that its message encodes to at most [`BATCH_BYTES`]; a
//! single record larger than that goes alone. Batches leave through a bounded channel
//! ([`CHANNEL_DEPTH`] messages), so a slow client holds the sender back instead of berthd
//! buffering the whole list as messages; a client that goes away (the stream dropped) ends
//! the task, at the next send or while the records are still being built.

use std::future::Future;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// The most a streamed response encodes to (but a single record larger than this): a
/// quarter of tonic's default 4 MiB decode limit, a sixteenth of the kubelet's 16 MiB.
pub const BATCH_BYTES: usize = 1 << 20;

/// Responses queued ahead of the client.
pub const CHANNEL_DEPTH: usize = 4;

/// What a list-streaming RPC returns.
pub type ListStream<R> = ReceiverStream<Result<R, Status>>;

/// The bytes `record` takes in a response's repeated field 1: one tag byte, its length as a
/// varint, its encoding.
pub fn field_len<T: Message>(record: &T) -> usize {
    let len = record.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Cuts `records` into batches, in order, each at most `limit` bytes as a repeated field
/// ([`field_len`] summed; the message has no other field); a record larger than `limit` is
/// a batch of its own. No records, no batch.
pub fn batches<T: Message>(records: Vec<T>, limit: usize) -> Batches<T> {
    Batches {
        records: records.into_iter().peekable(),
        limit,
    }
}

/// The iterator [`batches`] returns.
pub struct Batches<T> {
    records: std::iter::Peekable<std::vec::IntoIter<T>>,
    limit: usize,
}

impl<T: Message> Iterator for Batches<T> {
    type Item = Vec<T>;

    fn next(&mut self) -> Option<Vec<T>> {
        let first = self.records.next()?;
        let mut bytes = field_len(&first);
        let mut batch = vec![first];
        while let Some(next) = self.records.peek() {
            let len = field_len(next);
            if bytes + len > self.limit {
                break;
            }
            bytes += len;
            batch.extend(self.records.next());
        }
        Some(batch)
    }
}

/// Serves one list-streaming RPC: `records` (the unary List's records) is awaited in a task
/// of its own, then sent as batches of at most [`BATCH_BYTES`], each wrapped by `wrap`. An
/// error of `records` ends the stream with that status.
pub fn serve<T, R, F>(rpc: &'static str, records: F, wrap: fn(Vec<T>) -> R) -> ListStream<R>
where
    T: Message + Send + 'static,
    R: Send + 'static,
    F: Future<Output = Result<Vec<T>, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(send(rpc, records, wrap, tx, BATCH_BYTES));
    ReceiverStream::new(rx)
}

/// The task of [`serve`], with its batch limit.
async fn send<T, R, F>(
    rpc: &'static str,
    records: F,
    wrap: fn(Vec<T>) -> R,
    tx: mpsc::Sender<Result<R, Status>>,
    limit: usize,
) where
    T: Message,
    F: Future<Output = Result<Vec<T>, Status>>,
{
    let records = tokio::select! {
        records = records => records,
        () = tx.closed() => {
            tracing::debug!(rpc, "list stream: the client went away before the list was built");
            return;
        }
    };
    let records = match records {
        Ok(records) => records,
        Err(status) => {
            tracing::debug!(rpc, error = %status.message(), "list stream: the list failed");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let total = records.len();
    let (mut sent, mut messages) = (0, 0);
    for batch in batches(records, limit) {
        let len = batch.len();
        if tx.send(Ok(wrap(batch))).await.is_err() {
            tracing::debug!(rpc, sent, total, "list stream: the client went away");
            return;
        }
        sent += len;
        messages += 1;
    }
    tracing::debug!(rpc, records = total, messages, "list stream: done");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cri_api::v1 as cri;
    use tokio_stream::StreamExt;

    use super::*;

    /// A container record of about `size` bytes (its annotation), named by `i`.
    fn record(i: usize, size: usize) -> cri::Container {
        cri::Container {
            id: format!("{i:064x}"),
            annotations: [("a".to_owned(), "x".repeat(size))].into(),
            ..Default::default()
        }
    }

    fn wrap(containers: Vec<cri::Container>) -> cri::StreamContainersResponse {
        cri::StreamContainersResponse { containers }
    }

    /// Streams `records` through [`send`] with `limit` and collects every item.
    async fn collect(
        records: Result<Vec<cri::Container>, Status>,
        limit: usize,
    ) -> Vec<Result<cri::StreamContainersResponse, Status>> {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let task = tokio::spawn(send("test", async { records }, wrap, tx, limit));
        let out = ReceiverStream::new(rx).collect().await;
        task.await.unwrap();
        out
    }

    #[tokio::test]
    async fn batches_are_bounded_ordered_and_complete() {
        let records: Vec<_> = (0..1000).map(|i| record(i, 100 + i % 300)).collect();
        let limit = 16 * 1024;
        let out = collect(Ok(records.clone()), limit).await;
        assert!(out.len() > 10, "{} messages", out.len());
        let mut got = Vec::new();
        for message in out {
            let message = message.unwrap();
            assert!(!message.containers.is_empty());
            assert!(
                message.encoded_len() <= limit,
                "{} bytes",
                message.encoded_len()
            );
            got.extend(message.containers);
        }
        assert_eq!(got, records);
    }

    #[tokio::test]
    async fn a_record_larger_than_the_limit_goes_alone() {
        let records = vec![record(0, 10), record(1, 5000), record(2, 10)];
        let out = collect(Ok(records.clone()), 1000).await;
        let sizes: Vec<_> = out
            .iter()
            .map(|m| m.as_ref().unwrap().containers.len())
            .collect();
        assert_eq!(sizes, [1, 1, 1]);
        let got: Vec<_> = out
            .into_iter()
            .flat_map(|m| m.unwrap().containers)
            .collect();
        assert_eq!(got, records);
    }

    #[tokio::test]
    async fn the_default_limit_fits_many_small_records_in_one_message() {
        let records: Vec<_> = (0..100).map(|i| record(i, 100)).collect();
        let out = collect(Ok(records), BATCH_BYTES).await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap().containers.len(), 100);
    }

    #[tokio::test]
    async fn an_empty_list_ends_the_stream_without_error() {
        let out = collect(Ok(Vec::new()), BATCH_BYTES).await;
        assert!(out.is_empty());
        assert_eq!(batches(Vec::<cri::Container>::new(), 10).count(), 0);
    }

    #[tokio::test]
    async fn a_failed_list_ends_the_stream_with_its_status() {
        let out = collect(Err(Status::internal("store broken")), BATCH_BYTES).await;
        assert_eq!(out.len(), 1);
        let e = out.into_iter().next().unwrap().unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        assert_eq!(e.message(), "store broken");
    }

    #[test]
    fn field_len_is_what_the_message_adds() {
        let small = record(1, 10);
        let big = record(2, 300);
        assert_eq!(
            field_len(&small) + field_len(&big),
            wrap(vec![small, big]).encoded_len()
        );
    }

    #[tokio::test]
    async fn a_slow_client_holds_the_sender_back_and_a_gone_one_ends_it() {
        // 100 messages of one record each, through a channel of 2.
        let records: Vec<_> = (0..100).map(|i| record(i, 1000)).collect();
        let (tx, mut rx) = mpsc::channel(2);
        let task = tokio::spawn(send("test", async { Ok(records) }, wrap, tx, 1000));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "the sender ran ahead of the client");
        assert_eq!(rx.len(), 2);
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(first.containers[0].id, format!("{:064x}", 0));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends once the client is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_gone_while_the_list_is_built_ends_the_task() {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let never = std::future::pending::<Result<Vec<cri::Container>, Status>>();
        let task = tokio::spawn(send("test", never, wrap, tx, BATCH_BYTES));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends once the client is gone")
            .unwrap();
    }
}
