//! A client-created SPDY stream: accepting it (SYN_REPLY) or refusing it (RST_STREAM), and the
//! two pumps that connect it to a bounded in-memory pipe the protocol layer reads and writes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::{self, Frame};
use super::headers::Headers;
use super::session::Session;
use super::window::{Window, DEFAULT_WINDOW};

/// Bytes buffered between a pump and the protocol layer, per direction.
const PIPE: usize = 64 * 1024;
/// Largest DATA frame sent.
const CHUNK: usize = 32 * 1024;

/// A stream the client opened, not yet answered.
pub(crate) struct IncomingStream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    session: Session,
    inbound: mpsc::Receiver<Bytes>,
    window: Arc<Window>,
    reset: watch::Receiver<bool>,
}

/// An accepted stream: `io` reads what the client sends (EOF on its FIN) and writes DATA frames
/// (dropping or shutting it down sends FIN). `flushed` resolves once the FIN is queued.
pub(crate) struct SpdyStream {
    pub(crate) io: DuplexStream,
    pub(crate) flushed: oneshot::Receiver<()>,
}

impl IncomingStream {
    pub(crate) fn new(
        id: u32,
        headers: Headers,
        session: Session,
        inbound: mpsc::Receiver<Bytes>,
        window: Arc<Window>,
        reset: watch::Receiver<bool>,
    ) -> Self {
        Self {
            id,
            headers,
            session,
            inbound,
            window,
            reset,
        }
    }

    /// Refuses the stream (RST_STREAM REFUSED_STREAM).
    pub(crate) async fn refuse(self) {
        self.reject(frame::rst::REFUSED_STREAM).await;
    }

    /// Rejects the stream with a RST_STREAM status.
    pub(crate) async fn reject(self, status: u32) {
        self.session.inner.streams().remove(&self.id);
        self.session
            .send(Frame::RstStream {
                stream_id: self.id,
                status,
            })
            .await;
    }

    /// Replies (SYN_REPLY) and starts the pumps.
    pub(crate) async fn accept(self) -> SpdyStream {
        let Self {
            id,
            session,
            mut inbound,
            window,
            reset,
            ..
        } = self;
        session
            .send(Frame::SynReply {
                stream_id: id,
                flags: 0,
                headers: Headers::new(),
            })
            .await;
        let (app, pump) = tokio::io::duplex(PIPE);
        let (mut pump_rd, mut pump_wr) = tokio::io::split(pump);
        let (flushed_tx, flushed) = oneshot::channel();

        // Client → app, crediting the client's window as the app consumes.
        let s = session.clone();
        let mut reset_in = reset.clone();
        tokio::spawn(async move {
            let mut pending = 0usize;
            loop {
                let chunk = tokio::select! {
                    c = inbound.recv() => c,
                    _ = reset_in.wait_for(|r| *r) => return,
                };
                let Some(chunk) = chunk else { break };
                let ok = tokio::select! {
                    r = pump_wr.write_all(&chunk) => r.is_ok(),
                    _ = reset_in.wait_for(|r| *r) => return,
                };
                if !ok {
                    break;
                }
                pending += chunk.len();
                if pending as i64 >= DEFAULT_WINDOW / 4 || inbound.is_empty() {
                    let delta = pending as u32;
                    pending = 0;
                    s.send(Frame::WindowUpdate {
                        stream_id: id,
                        delta,
                    })
                    .await;
                    s.send(Frame::WindowUpdate {
                        stream_id: 0,
                        delta,
                    })
                    .await;
                }
            }
            let _ = pump_wr.shutdown().await;
            s.inner.finish(id, true, false);
        });

        // App → client, within the client's windows.
        let mut reset_out = reset;
        tokio::spawn(async move {
            let inner = session.inner.clone();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = tokio::select! {
                    r = pump_rd.read(&mut buf) => r.unwrap_or(0),
                    _ = reset_out.wait_for(|r| *r) => return,
                };
                if n == 0 {
                    break;
                }
                let mut off = 0;
                while off < n {
                    let Some(k) = window.take(n - off, &inner.enforce).await else {
                        return;
                    };
                    let Some(k2) = inner.session_window.take(k, &inner.enforce).await else {
                        return;
                    };
                    if k2 < k {
                        window.refund(k - k2);
                    }
                    let data = Bytes::copy_from_slice(&buf[off..off + k2]);
                    if !session
                        .send(Frame::Data {
                            stream_id: id,
                            flags: 0,
                            data,
                        })
                        .await
                    {
                        return;
                    }
                    off += k2;
                }
            }
            if !*reset_out.borrow() {
                session
                    .send(Frame::Data {
                        stream_id: id,
                        flags: frame::FLAG_FIN,
                        data: Bytes::new(),
                    })
                    .await;
            }
            inner.finish(id, false, true);
            let _ = flushed_tx.send(());
        });

        SpdyStream { io: app, flushed }
    }
}
