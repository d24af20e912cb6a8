//! One SPDY/3.1 server connection: a reader task that dispatches frames, a writer task that owns
//! the compressed sending direction, and an idle watchdog. Streams are created by the client and
//! handed to the protocol layer as [`IncomingStream`]s to accept or reject.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::frame::{self, Frame, FrameEncoder, FrameReader};
use super::stream::IncomingStream;
use super::window::{Window, DEFAULT_WINDOW};

/// Limits of one SPDY connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    /// No frame read or written for this long ends the connection.
    pub idle_timeout: Duration,
    /// One socket write that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// Streams open at once; more are refused (RST_STREAM REFUSED_STREAM).
    pub max_streams: usize,
}

pub(crate) enum Out {
    Frame(Frame),
    Close,
}

pub(crate) struct Entry {
    pub(crate) inbound: Option<mpsc::Sender<Bytes>>,
    pub(crate) window: Arc<Window>,
    pub(crate) reset: watch::Sender<bool>,
    pub(crate) out_done: bool,
}

pub(crate) struct Inner {
    pub(crate) out: mpsc::Sender<Out>,
    pub(crate) streams: Mutex<HashMap<u32, Entry>>,
    pub(crate) enforce: AtomicBool,
    pub(crate) session_window: Window,
    initial_window: Mutex<i64>,
    last_stream: AtomicU32,
    closed: watch::Sender<bool>,
    activity: Mutex<Instant>,
}

/// A cheap handle on a live session.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) inner: Arc<Inner>,
}

impl Inner {
    pub(crate) fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.activity.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Marks the session closed and tears every stream down.
    fn shut(&self) {
        self.closed.send_replace(true);
        let entries: Vec<Entry> = self.streams().drain().map(|(_, e)| e).collect();
        for e in entries {
            e.window.close();
            e.reset.send_replace(true);
        }
        self.session_window.close();
    }

    /// Forgets a stream once both directions are done.
    pub(crate) fn finish(&self, id: u32, inbound_done: bool, out_done: bool) {
        let mut streams = self.streams();
        if let Some(e) = streams.get_mut(&id) {
            if inbound_done {
                e.inbound = None;
            }
            if out_done {
                e.out_done = true;
            }
            if e.inbound.is_none() && e.out_done {
                streams.remove(&id);
            }
        }
    }
}

impl Session {
    /// Starts the tasks of a connection; returns the handle and the streams the client opens.
    pub(crate) fn start<IO>(
        io: IO,
        limits: SessionLimits,
    ) -> (Session, mpsc::Receiver<IncomingStream>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::channel(128);
        let (closed, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            out: out_tx,
            streams: Mutex::new(HashMap::new()),
            enforce: AtomicBool::new(false),
            session_window: Window::new(DEFAULT_WINDOW),
            initial_window: Mutex::new(DEFAULT_WINDOW),
            last_stream: AtomicU32::new(0),
            closed,
            activity: Mutex::new(Instant::now()),
        });
        let (rd, wr) = tokio::io::split(io);
        let (incoming_tx, incoming_rx) = mpsc::channel(16);
        let session = Session { inner };
        tokio::spawn(write_loop(
            session.inner.clone(),
            wr,
            out_rx,
            limits.write_timeout,
        ));
        tokio::spawn(read_loop(
            session.clone(),
            rd,
            incoming_tx,
            limits.max_streams,
        ));
        tokio::spawn(idle_watchdog(session.inner.clone(), limits.idle_timeout));
        (session, incoming_rx)
    }

    /// Queues a frame; false once the session is gone.
    pub(crate) async fn send(&self, frame: Frame) -> bool {
        let mut closed = self.inner.closed.subscribe();
        if *closed.borrow() {
            return false;
        }
        tokio::select! {
            r = self.inner.out.send(Out::Frame(frame)) => r.is_ok(),
            _ = closed.wait_for(|c| *c) => false,
        }
    }

    /// Resolves when the connection has ended (client gone, idle, write stalled, or closed).
    pub(crate) async fn closed(&self) {
        let mut closed = self.inner.closed.subscribe();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Ends the connection: GOAWAY, flush of everything queued before it, then the socket closes.
    pub(crate) async fn close(&self) {
        let last = self.inner.last_stream.load(Ordering::SeqCst);
        self.send(Frame::GoAway {
            last_good_stream_id: last,
            status: frame::GOAWAY_OK,
        })
        .await;
        let _ = self.inner.out.send(Out::Close).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.closed()).await;
        self.inner.shut();
    }
}

async fn write_loop<W: AsyncWrite>(
    inner: Arc<Inner>,
    wr: tokio::io::WriteHalf<W>,
    mut rx: mpsc::Receiver<Out>,
    write_timeout: Duration,
) {
    let mut wr = wr;
    let mut enc = FrameEncoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut closed = inner.closed.subscribe();
    'outer: loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(mut msg) = first else { break };
        let mut close = false;
        loop {
            match msg {
                Out::Frame(f) => {
                    if let Err(e) = enc.encode(&f, &mut buf) {
                        warn!(error = %e, "spdy: cannot encode frame; closing connection");
                        break 'outer;
                    }
                }
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() >= 256 * 1024 {
                break;
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break,
            }
        }
        match tokio::time::timeout(write_timeout, wr.write_all(&buf)).await {
            Ok(Ok(())) => inner.touch(),
            Ok(Err(e)) => {
                debug!(error = %e, "spdy: write failed; closing connection");
                break;
            }
            Err(_) => {
                warn!(timeout = ?write_timeout, "spdy: client stopped reading; closing connection");
                break;
            }
        }
        buf.clear();
        if close {
            let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
            break;
        }
    }
    inner.shut();
}

async fn idle_watchdog(inner: Arc<Inner>, idle: Duration) {
    let mut closed = inner.closed.subscribe();
    loop {
        let last = *inner.activity.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = last + idle;
        if Instant::now() >= deadline {
            debug!(idle = ?idle, "spdy: connection idle; closing");
            inner.shut();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

async fn read_loop<R: AsyncRead>(
    session: Session,
    rd: tokio::io::ReadHalf<R>,
    incoming: mpsc::Sender<IncomingStream>,
    max_streams: usize,
) {
    let inner = session.inner.clone();
    let mut reader = FrameReader::new(tokio::io::BufReader::with_capacity(64 * 1024, rd));
    let mut incoming = Some(incoming);
    let mut closed = inner.closed.subscribe();
    loop {
        let next = tokio::select! {
            f = reader.read() => f,
            _ = closed.wait_for(|c| *c) => break,
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => {
                debug!("spdy: client closed the connection");
                break;
            }
            Err(e) => {
                debug!(error = %e, "spdy: read failed");
                if matches!(
                    e,
                    frame::FrameError::Version(_) | frame::FrameError::HeaderBlock(_)
                ) {
                    let status = frame::GOAWAY_PROTOCOL_ERROR;
                    let last = inner.last_stream.load(Ordering::SeqCst);
                    session
                        .send(Frame::GoAway {
                            last_good_stream_id: last,
                            status,
                        })
                        .await;
                    let _ = inner.out.send(Out::Close).await;
                }
                break;
            }
        };
        inner.touch();
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let last = inner.last_stream.load(Ordering::SeqCst);
                if stream_id == 0 || stream_id % 2 == 0 || stream_id <= last {
                    session
                        .send(Frame::RstStream {
                            stream_id,
                            status: frame::rst::PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                }
                inner.last_stream.store(stream_id, Ordering::SeqCst);
                let Some(tx) = incoming.as_ref() else {
                    session
                        .send(Frame::RstStream {
                            stream_id,
                            status: frame::rst::REFUSED_STREAM,
                        })
                        .await;
                    continue;
                };
                if inner.streams().len() >= max_streams {
                    warn!(
                        stream = stream_id,
                        max_streams, "spdy: too many streams; refusing"
                    );
                    session
                        .send(Frame::RstStream {
                            stream_id,
                            status: frame::rst::REFUSED_STREAM,
                        })
                        .await;
                    continue;
                }
                let (data_tx, data_rx) = mpsc::channel(256);
                let window = Arc::new(Window::new(
                    *inner
                        .initial_window
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                ));
                let (reset, reset_rx) = watch::channel(false);
                let fin = flags & frame::FLAG_FIN != 0;
                inner.streams().insert(
                    stream_id,
                    Entry {
                        inbound: (!fin).then_some(data_tx),
                        window: window.clone(),
                        reset,
                        out_done: false,
                    },
                );
                let stream = IncomingStream::new(
                    stream_id,
                    headers,
                    session.clone(),
                    data_rx,
                    window,
                    reset_rx,
                );
                if let Err(refused) = tx.send(stream).await {
                    refused.0.refuse().await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let sender = inner
                    .streams()
                    .get(&stream_id)
                    .and_then(|e| e.inbound.clone());
                if let Some(sender) = sender {
                    if !data.is_empty() {
                        tokio::select! {
                            _ = sender.send(data) => {}
                            _ = closed.wait_for(|c| *c) => break,
                        }
                    }
                    if flags & frame::FLAG_FIN != 0 {
                        inner.finish(stream_id, true, false);
                    }
                } else {
                    debug!(
                        stream = stream_id,
                        "spdy: data for a closed or unknown stream ignored"
                    );
                }
            }
            Frame::RstStream { stream_id, status } => {
                debug!(stream = stream_id, status, "spdy: client reset stream");
                if let Some(e) = inner.streams().remove(&stream_id) {
                    e.window.close();
                    e.reset.send_replace(true);
                }
            }
            Frame::Settings { entries } => {
                for (id, value) in entries {
                    if id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                        let value = i64::from(value.min(0x7fff_ffff));
                        let delta = {
                            let mut initial = inner
                                .initial_window
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            let delta = value - *initial;
                            *initial = value;
                            delta
                        };
                        inner.enforce.store(true, Ordering::SeqCst);
                        for e in inner.streams().values() {
                            e.window.add(delta);
                        }
                    }
                }
            }
            Frame::Ping { id } => {
                if id % 2 == 1 {
                    session.send(Frame::Ping { id }).await;
                }
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                debug!(
                    last_good_stream_id,
                    status, "spdy: client sent GOAWAY; no new streams"
                );
                incoming = None;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                inner.enforce.store(true, Ordering::SeqCst);
                if stream_id == 0 {
                    inner.session_window.add(i64::from(delta));
                } else if let Some(e) = inner.streams().get(&stream_id) {
                    e.window.add(i64::from(delta));
                }
            }
            Frame::SynReply { stream_id, .. } => {
                // The server opens no streams, so a reply is a protocol error on that stream.
                session
                    .send(Frame::RstStream {
                        stream_id,
                        status: frame::rst::INVALID_STREAM,
                    })
                    .await;
            }
            Frame::Headers { .. } | Frame::Unknown { .. } => {}
        }
    }
    inner.shut();
}
