//! Port-forward for the streaming server: a TCP connection to 127.0.0.1:<port> inside the
//! sandbox's network namespace, made on a short-lived thread of its own that enters the netns
//! (a socket keeps the namespace it was created in, so it is then used from any thread), then
//! copied both ways until the pod's side is done. Dropping the future closes the connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use berth_streaming::{BackendError, PortForwardStream};
use nix::sched::{setns, CloneFlags};
use tokio::io::AsyncWriteExt;

use crate::store::sandbox::Sandbox;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn forward(
    sandbox: &Sandbox,
    port: u16,
    stream: PortForwardStream,
) -> Result<(), BackendError> {
    let netns = netns_path(sandbox);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-portforward".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns, port));
        })?;
    let conn = rx
        .await
        .map_err(|_| BackendError::Runtime("port-forward: connect thread died".into()))?
        .map_err(|source| BackendError::PortUnreachable { port, source })?;
    conn.set_nonblocking(true)?;
    let mut conn = tokio::net::TcpStream::from_std(conn)?;
    let (mut pod_rd, mut pod_wr) = conn.split();
    let (mut client_rd, mut client_wr) = tokio::io::split(stream);
    // The client's end of input half-closes towards the pod; the connection is over when the
    // pod's side ends (as containerd): a WebSocket client (v2.portforward) has no half-close,
    // so waiting for its EOF too would never end an HTTP/1.0 exchange.
    let to_pod = async {
        let _ = tokio::io::copy(&mut client_rd, &mut pod_wr).await;
        let _ = pod_wr.shutdown().await;
        std::future::pending::<()>().await;
    };
    let from_pod = async {
        let r = tokio::io::copy(&mut pod_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
        r
    };
    let copied = tokio::select! {
        r = from_pod => r,
        () = to_pod => unreachable!("to_pod never completes"),
    };
    match copied {
        Ok(_) => Ok(()),
        // The client or the pod ended the connection abruptly: it is over either way.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The sandbox's pinned network namespace; `None` for a hostNetwork pod (berthd's own).
fn netns_path(sandbox: &Sandbox) -> Option<PathBuf> {
    sandbox.meta.netns.clone()
}

/// Runs on a thread that exits afterwards: the namespace switch dies with it.
fn connect_in(netns: Option<PathBuf>, port: u16) -> io::Result<TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(&path)?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    }
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        CONNECT_TIMEOUT,
    )
}
