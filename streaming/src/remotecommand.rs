//! remotecommand (exec and attach): the streams of protocols v1..v5, running the backend, and
//! reporting how it ended on the error stream. The SPDY transport lives here; the WebSocket one
//! in `websocket.rs` shares [`run`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::backend::{Backend, Output, Stdin, StreamIo, TerminalSize};
use crate::spdy::frame::rst;
use crate::spdy::session::{Session, SessionLimits};
use crate::status::Outcome;

/// remotecommand protocol versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Version {
    /// Resize stream/channel exists from v3 on.
    pub(crate) fn resizes(self) -> bool {
        self >= Version::V3
    }
}

/// SPDY sub-protocols served, in kubelet's order.
pub(crate) const SPDY_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

pub(crate) fn spdy_version(protocol: &str) -> Version {
    match protocol {
        "v4.channel.k8s.io" => Version::V4,
        "v3.channel.k8s.io" => Version::V3,
        "v2.channel.k8s.io" => Version::V2,
        _ => Version::V1,
    }
}

/// Which streams the CRI request asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

/// What to run once the streams are there.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

/// The protocol layer's ends of the client's streams.
#[derive(Default)]
pub(crate) struct Ends {
    pub(crate) stdin: Option<DuplexStream>,
    pub(crate) stdout: Option<DuplexStream>,
    pub(crate) stderr: Option<DuplexStream>,
    pub(crate) resize: Option<DuplexStream>,
}

/// Decodes the resize stream: concatenated `{"Width":w,"Height":h}` objects.
async fn decode_resizes<R: AsyncRead + Unpin>(mut rd: R, tx: mpsc::Sender<TerminalSize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    used = it.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    warn!(error = %e, "resize stream: bad terminal size; ignoring the stream");
                    return;
                }
                None => {
                    used = buf.len();
                    break;
                }
            }
        }
        buf.drain(..used);
        if buf.len() > 64 * 1024 {
            return;
        }
    }
}

/// Runs the backend on the streams. `None` if the client went away first (the backend's
/// future is dropped then).
pub(crate) async fn run(
    backend: Arc<dyn Backend>,
    action: Action,
    tty: bool,
    ends: Ends,
    gone: impl std::future::Future<Output = ()>,
) -> Option<Outcome> {
    let resize = ends.resize.filter(|_| tty).map(|stream| {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(decode_resizes(stream, tx));
        rx
    });
    let io = StreamIo {
        stdin: ends.stdin.map(|s| Box::new(s) as Stdin),
        stdout: ends.stdout.map(|s| Box::new(s) as Output),
        stderr: if tty {
            None
        } else {
            ends.stderr.map(|s| Box::new(s) as Output)
        },
        resize,
    };
    let work = async {
        match &action {
            Action::Exec { container_id, cmd } => {
                match backend.exec(container_id, cmd.clone(), tty, io).await {
                    Ok(status) if status.success() => Outcome::Success,
                    Ok(status) => Outcome::NonZeroExit(status.code()),
                    Err(e) => {
                        warn!(container = %container_id, error = %e, "exec failed");
                        Outcome::Internal(format!("error executing command in container: {e}"))
                    }
                }
            }
            Action::Attach { container_id } => match backend.attach(container_id, tty, io).await {
                Ok(()) => Outcome::Success,
                Err(e) => {
                    warn!(container = %container_id, error = %e, "attach failed");
                    Outcome::Internal(format!("error attaching to container: {e}"))
                }
            },
        }
    };
    tokio::select! {
        outcome = work => Some(outcome),
        _ = gone => {
            debug!(?action, "client went away; backend call dropped");
            None
        }
    }
}

/// The bytes written on the error stream: the Status JSON from v4 on, the message before.
pub(crate) fn status_bytes(version: Version, outcome: &Outcome) -> Option<Vec<u8>> {
    if version >= Version::V4 {
        Some(outcome.to_json())
    } else {
        outcome.message().map(String::into_bytes)
    }
}

/// Waits (bounded) for streams to flush their last bytes.
pub(crate) async fn wait_flushed(flushed: Vec<oneshot::Receiver<()>>, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        for f in flushed {
            let _ = f.await;
        }
    })
    .await;
}

/// Serves exec/attach on an upgraded SPDY/3.1 connection.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_spdy<IO>(
    io: IO,
    version: Version,
    opts: Options,
    action: Action,
    backend: Arc<dyn Backend>,
    limits: SessionLimits,
    creation_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, mut incoming) = Session::start(io, limits);
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty && version.resizes());
    let mut ends = Ends::default();
    let mut error = None;
    let mut flushed = Vec::new();
    let mut received = 0;
    let deadline = tokio::time::sleep(creation_timeout);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            s = incoming.recv() => s,
            _ = &mut deadline => {
                warn!(received, expected, timeout = ?creation_timeout, "remotecommand: timed out waiting for client streams");
                session.close().await;
                return;
            }
        };
        let Some(stream) = stream else {
            debug!("remotecommand: connection ended before all streams were created");
            session.close().await;
            return;
        };
        let kind = stream.headers.get("streamtype").unwrap_or("").to_owned();
        let slot = match kind.as_str() {
            "error" if error.is_none() => None,
            "stdin" if ends.stdin.is_none() => Some(&mut ends.stdin),
            "stdout" if ends.stdout.is_none() => Some(&mut ends.stdout),
            "stderr" if ends.stderr.is_none() => Some(&mut ends.stderr),
            "resize" if version.resizes() && ends.resize.is_none() => Some(&mut ends.resize),
            _ => {
                warn!(stream_type = %kind, "remotecommand: unexpected or duplicate stream; closing connection");
                stream.reject(rst::PROTOCOL_ERROR).await;
                session.close().await;
                return;
            }
        };
        let accepted = stream.accept().await;
        match slot {
            None => error = Some((accepted.io, accepted.flushed)),
            Some(slot) => {
                if kind == "stdout" || kind == "stderr" {
                    flushed.push(accepted.flushed);
                }
                *slot = Some(accepted.io);
            }
        }
        received += 1;
    }
    // Streams beyond the expected ones are refused for the rest of the connection.
    tokio::spawn(async move {
        while let Some(extra) = incoming.recv().await {
            extra.refuse().await;
        }
    });
    let gone = {
        let session = session.clone();
        async move { session.closed().await }
    };
    let Some(outcome) = run(backend, action, opts.tty, ends, gone).await else {
        session.close().await;
        return;
    };
    wait_flushed(flushed, limits.write_timeout).await;
    if let Some((mut error, error_flushed)) = error {
        if let Some(bytes) = status_bytes(version, &outcome) {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
        drop(error);
        wait_flushed(vec![error_flushed], limits.write_timeout).await;
    }
    session.close().await;
}
