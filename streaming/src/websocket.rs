//! The WebSocket transport: Kubernetes' channel protocols (`channel.k8s.io` family, v5 with its
//! close signal) multiplex numbered channels over one connection, one channel byte in front of
//! every message (an ASCII digit and base64 payload in the base64 variants).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::remotecommand::{self, Action, Ends, Options, Version};

/// The close signal channel of v5.channel.k8s.io: `[255, channel]` closes that channel.
const CLOSE_SIGNAL: u8 = 255;
const CHUNK: usize = 32 * 1024;
const PIPE: usize = 64 * 1024;

/// How payloads are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Binary,
    Base64,
}

/// One negotiable WebSocket sub-protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsProtocol {
    pub(crate) name: &'static str,
    pub(crate) version: Version,
    pub(crate) codec: Codec,
}

const fn p(name: &'static str, version: Version, codec: Codec) -> WsProtocol {
    WsProtocol {
        name,
        version,
        codec,
    }
}

/// Sub-protocols of exec/attach ("" is a client that names none).
pub(crate) const REMOTECOMMAND: [WsProtocol; 6] = [
    p("v5.channel.k8s.io", Version::V5, Codec::Binary),
    p("v4.channel.k8s.io", Version::V4, Codec::Binary),
    p("v4.base64.channel.k8s.io", Version::V4, Codec::Base64),
    p("channel.k8s.io", Version::V1, Codec::Binary),
    p("base64.channel.k8s.io", Version::V1, Codec::Base64),
    p("", Version::V1, Codec::Binary),
];

/// Sub-protocols of port-forward.
pub(crate) const PORTFORWARD: [WsProtocol; 4] = [
    p("v2.portforward.k8s.io", Version::V4, Codec::Binary),
    p("v4.channel.k8s.io", Version::V4, Codec::Binary),
    p("v4.base64.channel.k8s.io", Version::V4, Codec::Base64),
    p("", Version::V4, Codec::Binary),
];

enum WsOut {
    Msg(Message),
    Close,
}

/// Channels multiplexed over one WebSocket connection.
struct Mux {
    ends: Vec<Option<DuplexStream>>,
    flushed: Vec<Option<oneshot::Receiver<()>>>,
    out: mpsc::Sender<WsOut>,
    closed: watch::Receiver<bool>,
}

fn encode(codec: Codec, channel: u8, data: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut b = BytesMut::with_capacity(data.len() + 1);
            b.put_u8(channel);
            b.extend_from_slice(data);
            Message::Binary(b.freeze())
        }
        Codec::Base64 => {
            let text = format!(
                "{}{}",
                (b'0' + channel) as char,
                base64::engine::general_purpose::STANDARD.encode(data)
            );
            Message::Text(text.into())
        }
    }
}

impl Mux {
    /// Starts the reader, the writer and one pump per writable channel. `readable[i]`/
    /// `writable[i]` say what channel `i` carries; `initial` messages are sent first.
    fn start<IO>(
        ws: WebSocketStream<IO>,
        readable: &[bool],
        writable: &[bool],
        proto: WsProtocol,
        initial: Vec<(u8, Vec<u8>)>,
        limits: crate::server::Limits,
    ) -> Mux
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut source) = ws.split();
        let (out_tx, mut out_rx) = mpsc::channel::<WsOut>(64);
        let (closed_tx, closed) = watch::channel(false);
        let closed_tx = Arc::new(closed_tx);
        let activity = Arc::new(Mutex::new(Instant::now()));
        let (mut ends, mut writers, mut flushed) = (Vec::new(), Vec::new(), Vec::new());
        for (ch, (&r, &w)) in readable.iter().zip(writable).enumerate() {
            let (app, pump) = tokio::io::duplex(PIPE);
            let (mut pump_rd, pump_wr) = tokio::io::split(pump);
            ends.push(Some(app));
            writers.push(r.then_some(pump_wr));
            if w {
                let (tx, rx) = oneshot::channel();
                flushed.push(Some(rx));
                let out = out_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; CHUNK];
                    while let Ok(n) = pump_rd.read(&mut buf).await {
                        if n == 0
                            || out
                                .send(WsOut::Msg(encode(proto.codec, ch as u8, &buf[..n])))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                    let _ = tx.send(());
                });
            } else {
                flushed.push(None);
            }
        }
        for (ch, data) in initial {
            let _ = out_tx.try_send(WsOut::Msg(encode(proto.codec, ch, &data)));
        }

        // Writer: the only task that touches the sink.
        let done = closed_tx.clone();
        let act = activity.clone();
        let mut closed_w = closed.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = out_rx.recv() => m,
                    _ = closed_w.wait_for(|c| *c) => None,
                };
                let (msg, last) = match msg {
                    Some(WsOut::Msg(m)) => (m, false),
                    // A normal closure (1000), not a close frame without a status (1005):
                    // client-go (crictl, kubectl) takes only 1000 as the end of the streams and
                    // reports anything else as an error reading the error channel.
                    Some(WsOut::Close) => (
                        Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        })),
                        true,
                    ),
                    None => break,
                };
                match tokio::time::timeout(limits.write_timeout, sink.send(msg)).await {
                    Ok(Ok(())) => *act.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now(),
                    Ok(Err(e)) => {
                        debug!(error = %e, "websocket: write failed");
                        break;
                    }
                    Err(_) => {
                        warn!(timeout = ?limits.write_timeout, "websocket: client stopped reading; closing");
                        break;
                    }
                }
                if last {
                    let _ = tokio::time::timeout(limits.write_timeout, sink.close()).await;
                    break;
                }
            }
            done.send_replace(true);
        });

        // Reader: demultiplexes client messages into the readable channels.
        let done = closed_tx.clone();
        let act = activity.clone();
        let mut closed_r = closed.clone();
        tokio::spawn(async move {
            let mut writers: Vec<Option<WriteHalf<DuplexStream>>> = writers;
            loop {
                let msg = tokio::select! {
                    m = source.next() => m,
                    _ = closed_r.wait_for(|c| *c) => break,
                };
                *act.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                let raw: Vec<u8> = match msg {
                    Some(Ok(Message::Binary(b))) if proto.codec == Codec::Binary => b.to_vec(),
                    Some(Ok(Message::Text(t))) if proto.codec == Codec::Base64 && !t.is_empty() => {
                        let t = t.as_bytes();
                        let Ok(mut payload) =
                            base64::engine::general_purpose::STANDARD.decode(&t[1..])
                        else {
                            warn!("websocket: bad base64 payload ignored");
                            continue;
                        };
                        payload.insert(0, t[0].wrapping_sub(b'0'));
                        payload
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, data)) = raw.split_first() else {
                    continue;
                };
                if proto.version >= Version::V5 && channel == CLOSE_SIGNAL {
                    if let Some(&target) = data.first() {
                        if let Some(mut w) =
                            writers.get_mut(usize::from(target)).and_then(Option::take)
                        {
                            let _ = w.shutdown().await;
                        }
                    }
                    continue;
                }
                let Some(slot) = writers.get_mut(usize::from(channel)) else {
                    continue;
                };
                let Some(w) = slot.as_mut() else { continue };
                let ok = tokio::select! {
                    r = w.write_all(data) => r.is_ok(),
                    _ = closed_r.wait_for(|c| *c) => break,
                };
                if !ok {
                    *slot = None;
                }
            }
            done.send_replace(true);
        });

        // Idle watchdog.
        let done = closed_tx;
        let mut closed_i = closed.clone();
        tokio::spawn(async move {
            loop {
                let deadline =
                    *activity.lock().unwrap_or_else(|e| e.into_inner()) + limits.idle_timeout;
                if Instant::now() >= deadline {
                    debug!("websocket: connection idle; closing");
                    done.send_replace(true);
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = closed_i.wait_for(|c| *c) => return,
                }
            }
        });

        Mux {
            ends,
            flushed,
            out: out_tx,
            closed,
        }
    }

    fn take(&mut self, ch: usize) -> Option<DuplexStream> {
        self.ends.get_mut(ch).and_then(Option::take)
    }

    fn take_flushed(&mut self, ch: usize) -> Option<oneshot::Receiver<()>> {
        self.flushed.get_mut(ch).and_then(Option::take)
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut closed = self.closed.clone();
        async move {
            let _ = closed.wait_for(|c| *c).await;
        }
    }

    /// Sends a close frame after everything queued and waits (bounded) for the writer.
    async fn close(self, limit: Duration) {
        let _ = self.out.send(WsOut::Close).await;
        let mut closed = self.closed.clone();
        let _ = tokio::time::timeout(limit, closed.wait_for(|c| *c)).await;
    }
}

const STDIN: usize = 0;
const STDOUT: usize = 1;
const STDERR: usize = 2;
const ERROR: usize = 3;
const RESIZE: usize = 4;

/// Serves exec/attach over an accepted WebSocket.
pub(crate) async fn serve_remotecommand<IO>(
    ws: WebSocketStream<IO>,
    proto: WsProtocol,
    opts: Options,
    action: Action,
    backend: Arc<dyn Backend>,
    limits: crate::server::Limits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let readable = [opts.stdin, false, false, false, true];
    let writable = [false, opts.stdout, opts.stderr, true, false];
    // An empty message on the lowest writable channel tells the client the streams are up.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    let mut mux = Mux::start(
        ws,
        &readable,
        &writable,
        proto,
        vec![(first as u8, Vec::new())],
        limits,
    );
    let ends = Ends {
        stdin: mux.take(STDIN).filter(|_| opts.stdin),
        stdout: mux.take(STDOUT).filter(|_| opts.stdout),
        stderr: mux.take(STDERR).filter(|_| opts.stderr),
        resize: mux.take(RESIZE),
    };
    let flushed: Vec<_> = [STDOUT, STDERR]
        .into_iter()
        .filter_map(|c| mux.take_flushed(c))
        .collect();
    let Some(outcome) = remotecommand::run(backend, action, opts.tty, ends, mux.gone()).await
    else {
        mux.close(limits.write_timeout).await;
        return;
    };
    remotecommand::wait_flushed(flushed, limits.write_timeout).await;
    if let Some(mut error) = mux.take(ERROR) {
        if let Some(bytes) = remotecommand::status_bytes(proto.version, &outcome) {
            let _ = error.write_all(&bytes).await;
        }
        drop(error);
        if let Some(f) = mux.take_flushed(ERROR) {
            remotecommand::wait_flushed(vec![f], limits.write_timeout).await;
        }
    }
    mux.close(limits.write_timeout).await;
}

/// Serves port-forward over an accepted WebSocket: channel 2i carries port i's data, 2i+1 its
/// errors; both start with the port, little-endian, as kubelet sends.
pub(crate) async fn serve_portforward<IO>(
    ws: WebSocketStream<IO>,
    proto: WsProtocol,
    sandbox: String,
    ports: Vec<u16>,
    backend: Arc<dyn Backend>,
    limits: crate::server::Limits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let readable: Vec<bool> = ports.iter().flat_map(|_| [true, false]).collect();
    let writable: Vec<bool> = ports.iter().flat_map(|_| [true, true]).collect();
    let initial = ports
        .iter()
        .enumerate()
        .flat_map(|(i, port)| {
            let le = port.to_le_bytes().to_vec();
            [((2 * i) as u8, le.clone()), ((2 * i + 1) as u8, le)]
        })
        .collect();
    let mut mux = Mux::start(ws, &readable, &writable, proto, initial, limits);
    let sandbox: Arc<str> = sandbox.into();
    let mut tasks = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let (Some(data), Some(mut error)) = (mux.take(2 * i), mux.take(2 * i + 1)) else {
            continue;
        };
        // Both channels' last bytes go out before the connection closes (the error message
        // raced the close frame when only the data channel was waited for).
        let flushed: Vec<_> = [2 * i, 2 * i + 1]
            .into_iter()
            .filter_map(|ch| mux.take_flushed(ch))
            .collect();
        let (backend, sandbox) = (backend.clone(), sandbox.clone());
        let write_timeout = limits.write_timeout;
        tasks.spawn(async move {
            if let Err(e) = backend.port_forward(&sandbox, port, data).await {
                warn!(pod = %sandbox, port, error = %e, "port-forward failed");
                let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
                let _ = error.write_all(msg.as_bytes()).await;
            }
            drop(error);
            remotecommand::wait_flushed(flushed, write_timeout).await;
        });
    }
    let gone = mux.gone();
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = gone => debug!(pod = %sandbox, "port-forward: websocket client went away"),
    }
    tasks.shutdown().await;
    mux.close(limits.write_timeout).await;
}

/// The message a WebSocket client gets on negotiation failure.
pub(crate) fn unsupported(requested: &[String], supported: &[WsProtocol]) -> String {
    let names: Vec<&str> = supported
        .iter()
        .map(|p| p.name)
        .filter(|n| !n.is_empty())
        .collect();
    format!("requested protocol(s) are not supported: {requested:?}; supports {names:?}")
}

/// Picks the first client protocol the server supports (a client naming none gets "").
pub(crate) fn negotiate(requested: &[String], supported: &[WsProtocol]) -> Option<WsProtocol> {
    if requested.is_empty() {
        return supported.iter().find(|p| p.name.is_empty()).copied();
    }
    requested.iter().find_map(|r| {
        supported
            .iter()
            .find(|p| !p.name.is_empty() && p.name == r)
            .copied()
    })
}
