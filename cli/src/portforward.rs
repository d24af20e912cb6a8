//! The client side of port-forward on berthd's streaming server: one WebSocket
//! (`v2.portforward.k8s.io`) per forwarded TCP connection, from a URL of its own (CRI
//! PortForward URLs work once). Channel 0 carries the data both ways, channel 1 the server's
//! error text; the server's first message on each starts with the port (2 bytes, LE).

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::remotecommand;

pub const PROTOCOL: &str = "v2.portforward.k8s.io";
const DATA: u8 = 0;
const ERROR: u8 = 1;
/// The port prefix of each channel's first server message.
const PREFIX: usize = 2;

/// Relays `tcp` through the streaming URL until either side closes; the server's error text
/// (e.g. nothing listens on the pod's port) as the error.
pub async fn forward(url: &str, mut tcp: TcpStream) -> Result<()> {
    let ws = remotecommand::connect(url, PROTOCOL).await?;
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tcp.split();
    // Bytes of each channel's port prefix still to skip.
    let mut skip = [PREFIX, PREFIX];
    let mut error = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut local_open = true;
    loop {
        tokio::select! {
            n = rd.read(&mut buf), if local_open => {
                match n {
                    Ok(0) | Err(_) => {
                        // The v2 protocol has no half-close: wait for the pod side to end.
                        local_open = false;
                    }
                    Ok(n) => {
                        let mut frame = Vec::with_capacity(n + 1);
                        frame.push(DATA);
                        frame.extend_from_slice(&buf[..n]);
                        sink.send(Message::Binary(frame.into())).await.context("send to the pod")?;
                    }
                }
            }
            msg = source.next() => {
                let data = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Some((&ch, mut payload)) = data.split_first() else { continue };
                let Some(left) = skip.get_mut(usize::from(ch)) else { continue };
                let n = (*left).min(payload.len());
                *left -= n;
                payload = &payload[n..];
                match ch {
                    DATA if wr.write_all(payload).await.is_err() => break,
                    ERROR => error.extend_from_slice(payload),
                    _ => {}
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = sink.close().await;
    if !error.is_empty() {
        bail!("{}", String::from_utf8_lossy(&error));
    }
    Ok(())
}

/// `LOCAL:REMOTE`, `REMOTE` (same local port) or `:REMOTE` (a free local port: 0).
pub fn parse_ports(spec: &str) -> Result<(u16, u16)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| anyhow!("{spec}: {p:?} is not a port"))
    };
    let (local, remote) = match spec.split_once(':') {
        Some(("", r)) => (0, port(r)?),
        Some((l, r)) => (port(l)?, port(r)?),
        None => {
            let p = port(spec)?;
            (p, p)
        }
    };
    if remote == 0 {
        bail!("{spec}: the pod's port must be 1-65535");
    }
    Ok((local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_ports("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_ports("5432").unwrap(), (5432, 5432));
        assert_eq!(parse_ports(":80").unwrap(), (0, 80));
        assert_eq!(parse_ports("0:80").unwrap(), (0, 80));
        for bad in ["80:0", "x:80", "80:", "1:2:3"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }
}
