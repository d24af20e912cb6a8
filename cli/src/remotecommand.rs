//! The client side of exec/attach on berthd's streaming server: Kubernetes'
//! `v5.channel.k8s.io` over WebSocket (one channel byte before every message: 0 stdin,
//! 1 stdout, 2 stderr, 3 error — the final `Status` JSON —, 4 resize; `[255, 0]` closes stdin).
//!
//! stdin is read on a thread of its own (a blocking read that never holds up berth's exit);
//! with a TTY the local terminal is raw for the session, its size goes on the resize channel
//! (again on SIGWINCH), and Ctrl-P Ctrl-Q detaches. SIGTERM/SIGHUP/SIGINT end the session
//! cleanly, so the terminal is always restored.

use std::io::{Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::terminal::{self, RawMode};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
pub const PROTOCOL: &str = "v5.channel.k8s.io";
/// Ctrl-P, then Ctrl-Q: detach (as docker).
const DETACH: [u8; 2] = [0x10, 0x11];

/// What a session sends and expects.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    pub stdin: bool,
    pub tty: bool,
    /// Ctrl-P Ctrl-Q leaves the session (attach, run -it) instead of reaching the process.
    pub detach_keys: bool,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The process exited with this code (0 on success).
    Exited(i32),
    /// The user detached (Ctrl-P Ctrl-Q); the process runs on.
    Detached,
    /// berth got SIGINT, SIGTERM or SIGHUP and left the session (an exec'd process is then
    /// killed by berthd, an attached container runs on).
    Interrupted,
    /// The server closed the connection without a status.
    Closed,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// The error channel's `Status`: the exit code, or the failure as an error.
pub fn parse_status(bytes: &[u8]) -> Result<i32> {
    let s: Status = serde_json::from_slice(bytes).with_context(|| {
        format!(
            "unreadable status from the streaming server: {}",
            String::from_utf8_lossy(bytes)
        )
    })?;
    if s.status == "Success" {
        return Ok(0);
    }
    if s.reason == "NonZeroExitCode" {
        let code = s
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .find(|c| c.reason == "ExitCode")
            .and_then(|c| c.message.parse::<i32>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    bail!("{}", s.message)
}

/// `http://…` / `https://…` (what berthd answers) as the WebSocket URL.
pub fn ws_url(url: &str) -> Result<String> {
    if let Some(rest) = url.strip_prefix("http://") {
        return Ok(format!("ws://{rest}"));
    }
    if let Some(rest) = url.strip_prefix("https://") {
        return Ok(format!("wss://{rest}"));
    }
    Ok(url.to_owned())
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to a streaming URL with the sub-protocol `protocol`.
pub async fn connect(url: &str, protocol: &str) -> Result<Ws> {
    let url = ws_url(url)?;
    let mut req = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("streaming URL {url}"))?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocol)?);
    let connector = if url.starts_with("wss://") {
        Some(tokio_tungstenite::Connector::Rustls(
            crate::streaming_tls::client_config()?,
        ))
    } else {
        None
    };
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector)
        .await
        .map_err(|e| anyhow!("connect to berthd's streaming server at {url}: {e}"))?;
    Ok(ws)
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut b = Vec::with_capacity(data.len() + 1);
    b.push(channel);
    b.extend_from_slice(data);
    Message::Binary(b.into())
}

fn resize_frame() -> Option<Message> {
    let (w, h) = terminal::size()?;
    Some(frame(
        RESIZE,
        format!("{{\"Width\":{w},\"Height\":{h}}}").as_bytes(),
    ))
}

enum Input {
    Data(Vec<u8>),
    Eof,
    Detach,
}

/// Splits a chunk of typed bytes at the detach sequence: what to send, and whether the
/// sequence was typed. A Ctrl-P at a chunk's end is held back (`held`) until the next byte.
fn scan_detach(chunk: &[u8], held: &mut bool) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(chunk.len() + 1);
    for &b in chunk {
        if *held {
            *held = false;
            if b == DETACH[1] {
                return (out, true);
            }
            out.push(DETACH[0]);
        }
        if b == DETACH[0] {
            *held = true;
        } else {
            out.push(b);
        }
    }
    (out, false)
}

/// Reads stdin on a thread; chunks go to the session (which may be gone: then it stops).
fn spawn_stdin(detach_keys: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        let mut held = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(Input::Eof);
                    return;
                }
                Ok(n) => n,
            };
            let (data, detach) = if detach_keys {
                scan_detach(&buf[..n], &mut held)
            } else {
                (buf[..n].to_vec(), false)
            };
            if !data.is_empty() && tx.blocking_send(Input::Data(data)).is_err() {
                return;
            }
            if detach {
                let _ = tx.blocking_send(Input::Detach);
                return;
            }
        }
    });
    rx
}

/// Runs an exec/attach session on `url` until the process ends or the user detaches.
pub async fn session(url: &str, streams: Streams) -> Result<End> {
    let ws = connect(url, PROTOCOL).await?;
    let (mut sink, mut source) = ws.split();
    // Raw mode only when the local stdin is a terminal too (`-t` with a pipe stays cooked).
    let _raw = if streams.tty && streams.stdin && terminal::stdin_is_tty() {
        Some(RawMode::enable()?)
    } else {
        None
    };
    if streams.tty {
        if let Some(m) = resize_frame() {
            sink.send(m).await.context("send the terminal size")?;
        }
    }
    let mut input = if streams.stdin {
        Some(spawn_stdin(streams.detach_keys && streams.tty))
    } else {
        None
    };
    let mut winch = signal(SignalKind::window_change())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut error = Vec::new();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        tokio::select! {
            msg = source.next() => {
                let data = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        // A connection reset after the status is just the end.
                        if error.is_empty() {
                            return Err(anyhow!("streaming connection: {e}"));
                        }
                        break;
                    }
                };
                let Some((&ch, payload)) = data.split_first() else { continue };
                match ch {
                    STDOUT => { out.write_all(payload)?; out.flush()?; }
                    STDERR => { err.write_all(payload)?; err.flush()?; }
                    ERROR => error.extend_from_slice(payload),
                    _ => {}
                }
            }
            chunk = async { input.as_mut()?.recv().await }, if input.is_some() => {
                match chunk {
                    Some(Input::Data(d)) => sink.send(frame(STDIN, &d)).await.context("send stdin")?,
                    Some(Input::Eof) | None => {
                        sink.send(frame(CLOSE, &[STDIN])).await.context("close stdin")?;
                        input = None;
                    }
                    Some(Input::Detach) => {
                        let _ = sink.send(Message::Close(None)).await;
                        return Ok(End::Detached);
                    }
                }
            }
            _ = winch.recv(), if streams.tty => {
                if let Some(m) = resize_frame() {
                    sink.send(m).await.context("send the terminal size")?;
                }
            }
            _ = term.recv() => return Ok(End::Interrupted),
            _ = hup.recv() => return Ok(End::Interrupted),
            _ = int.recv() => return Ok(End::Interrupted),
        }
    }
    if error.is_empty() {
        return Ok(End::Closed);
    }
    Ok(End::Exited(parse_status(&error)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            parse_status(br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            0
        );
        let three = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(parse_status(three).unwrap(), 3);
        let internal = br#"{"metadata":{},"status":"Failure","message":"Internal error occurred: no such container","reason":"InternalError","code":500}"#;
        let e = parse_status(internal).unwrap_err().to_string();
        assert!(e.contains("no such container"), "{e}");
        assert!(parse_status(b"not json").is_err());
    }

    #[test]
    fn detach_sequence() {
        let mut held = false;
        assert_eq!(scan_detach(b"ab", &mut held), (b"ab".to_vec(), false));
        assert_eq!(scan_detach(b"x\x10\x11y", &mut held), (b"x".to_vec(), true));
        let mut held = false;
        assert_eq!(scan_detach(b"a\x10", &mut held), (b"a".to_vec(), false));
        assert!(held);
        assert_eq!(scan_detach(b"b", &mut held), (b"\x10b".to_vec(), false));
        let mut held = false;
        assert_eq!(scan_detach(b"\x10", &mut held), (vec![], false));
        assert_eq!(scan_detach(b"\x11", &mut held), (vec![], true));
    }

    #[test]
    fn urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:1234/exec/abc").unwrap(),
            "ws://127.0.0.1:1234/exec/abc"
        );
        assert_eq!(ws_url("https://x:1/exec/a").unwrap(), "wss://x:1/exec/a");
    }
}
