//! port-forward over SPDY (`portforward.k8s.io`): the client opens an error and a data stream
//! per connection, tied by the `requestID` header and naming the pod port in `port`; any number
//! of ports and connections share one SPDY connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::spdy::frame::rst;
use crate::spdy::session::{Session, SessionLimits};
use crate::spdy::stream::{IncomingStream, SpdyStream};

/// The SPDY sub-protocol of port-forward.
pub(crate) const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];

struct Pair {
    port: u16,
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
    expires: Instant,
}

/// Checks the headers kubelet requires; returns (port, is_data, request id).
fn classify(stream: &IncomingStream) -> Result<(u16, bool, String), String> {
    let port = stream
        .headers
        .get("port")
        .ok_or("\"port\" header is required")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    let is_data = match stream.headers.get("streamtype") {
        Some("data") => true,
        Some("error") => false,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    // Old clients send no requestID: the error stream comes first, its data stream 2 ids later.
    let request_id = match stream.headers.get("requestid") {
        Some(id) => id.to_owned(),
        None if is_data => stream.id.saturating_sub(2).to_string(),
        None => stream.id.to_string(),
    };
    Ok((port, is_data, request_id))
}

async fn forward(
    backend: Arc<dyn Backend>,
    sandbox: Arc<str>,
    port: u16,
    data: SpdyStream,
    error: SpdyStream,
) {
    let mut error_io = error.io;
    if let Err(e) = backend.port_forward(&sandbox, port, data.io).await {
        let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
        warn!(pod = %sandbox, port, error = %e, "port-forward failed");
        let _ = error_io.write_all(msg.as_bytes()).await;
    }
    let _ = error_io.shutdown().await;
}

/// Serves port-forward on an upgraded SPDY/3.1 connection until the client closes it.
pub(crate) async fn serve_spdy<IO>(
    io: IO,
    sandbox: String,
    backend: Arc<dyn Backend>,
    limits: SessionLimits,
    creation_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let sandbox: Arc<str> = sandbox.into();
    let (session, mut incoming) = Session::start(io, limits);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_millis(500));
    let mut open = true;
    while open || !tasks.is_empty() {
        tokio::select! {
            stream = incoming.recv(), if open => {
                // No more streams (client GOAWAY or connection gone): finish what runs.
                let Some(stream) = stream else { open = false; continue };
                let (port, is_data, request_id) = match classify(&stream) {
                    Ok(c) => c,
                    Err(msg) => {
                        warn!(pod = %sandbox, stream = stream.id, "port-forward: stream rejected: {msg}");
                        stream.reject(rst::CANCEL).await;
                        continue;
                    }
                };
                let accepted = stream.accept().await;
                let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
                    port,
                    data: None,
                    error: None,
                    expires: Instant::now() + creation_timeout,
                });
                let slot = if is_data { &mut pair.data } else { &mut pair.error };
                if slot.is_some() {
                    warn!(pod = %sandbox, request = %request_id, "port-forward: duplicate stream ignored");
                    continue;
                }
                *slot = Some(accepted);
                if pair.data.is_some() && pair.error.is_some() {
                    if let Some(Pair { port, data: Some(data), error: Some(error), .. }) = pairs.remove(&request_id) {
                        debug!(pod = %sandbox, port, request = %request_id, "port-forward: connection");
                        tasks.spawn(forward(backend.clone(), sandbox.clone(), port, data, error));
                    }
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                let expired: Vec<String> = pairs.iter().filter(|(_, p)| p.expires <= now).map(|(k, _)| k.clone()).collect();
                for id in expired {
                    if let Some(pair) = pairs.remove(&id) {
                        warn!(pod = %sandbox, request = %id, port = pair.port, "port-forward: timed out waiting for the other stream");
                        if let Some(mut error) = pair.error {
                            let msg = format!("timed out waiting for streams for request {id}");
                            let _ = error.io.write_all(msg.as_bytes()).await;
                        }
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = session.closed() => break,
        }
    }
    tasks.shutdown().await;
    session.close().await;
}
