//! `port-forward POD|CONTAINER [LOCAL:]REMOTE…`: listens on local ports; every accepted
//! connection gets a fresh CRI PortForward URL and its own WebSocket to berthd's streaming
//! server, so any number of connections run at once. Runs until Ctrl-C (or SIGTERM).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use cri_api::v1 as cri;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::client::{answer, Cri};
use crate::portforward::{self, parse_ports};
use crate::PortForwardArgs;

/// The pod of a pod or container query.
async fn target_pod(c: &mut Cri, query: &str) -> Result<String> {
    match c.resolve_pod(query).await {
        Ok(pod) => Ok(pod),
        Err(e) if e.to_string().starts_with("no such") => {
            let id = c
                .resolve_container(query)
                .await
                .map_err(|_| anyhow::anyhow!("no such pod or container: {query}"))?;
            let k = c
                .containers()
                .await?
                .into_iter()
                .find(|k| k.id == id)
                .with_context(|| format!("no such container: {id}"))?;
            Ok(k.pod_sandbox_id)
        }
        Err(e) => Err(e),
    }
}

async fn serve(c: Cri, pod: String, listener: TcpListener, remote: u16) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("berth: port-forward: accept: {e}");
                continue;
            }
        };
        let mut c = c.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            eprintln!("Handling connection for {remote} from {peer}");
            let r =
                c.rt.port_forward(cri::PortForwardRequest {
                    pod_sandbox_id: pod.clone(),
                    port: vec![i32::from(remote)],
                })
                .await;
            let result = match answer(r, "port-forward") {
                Ok(r) => portforward::forward(&r.url, tcp).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                eprintln!("berth: port-forward {remote}: {e:#}");
            }
        });
    }
}

pub async fn run(c: &mut Cri, args: &PortForwardArgs) -> Result<()> {
    let pod = target_pod(c, &args.target).await?;
    let mut tasks = Vec::new();
    for spec in &args.ports {
        let (local, remote) = parse_ports(spec)?;
        let addr = SocketAddr::new(args.bind, local);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        println!(
            "Forwarding from {} -> {remote}",
            listener.local_addr().unwrap_or(addr)
        );
        tasks.push(tokio::spawn(serve(
            c.clone(),
            pod.clone(),
            listener,
            remote,
        )));
    }
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
