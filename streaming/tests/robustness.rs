//! What the server does with clients that misbehave or go quiet, with the independent SPDY
//! client and raw HTTP: clients that stop reading, idle connections, client GOAWAY and
//! RST_STREAM, pings, and handshakes that are refused with a clear status.

mod support;

use std::sync::Arc;
use std::time::Duration;

use berth_streaming::{Config, StreamingServer};
use cri_api::v1::{ExecRequest, PortForwardRequest};
use support::spdy_client::{connect, SpdyConn};
use support::{echo_server, FakeBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn server(config: Config) -> (StreamingServer, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::default());
    (
        StreamingServer::bind(config, backend.clone())
            .await
            .unwrap(),
        backend,
    )
}

fn exec(cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdout: true,
        ..Default::default()
    }
}

async fn dropped(backend: &FakeBackend, n: u32) -> bool {
    for _ in 0..100 {
        if *backend.dropped_execs.lock().unwrap() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_its_exec_dropped() {
    let (srv, backend) = server(Config {
        write_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let n = 32 * 1024 * 1024;
    let url = srv.exec_url(&exec(&["big", &n.to_string()])).unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    conn.pause_reading(true);
    conn.open(&[("streamType", "error")], false).await;
    let stdout = conn.open(&[("streamType", "stdout")], false).await;
    assert!(
        dropped(&backend, 1).await,
        "the exec was not dropped after the client stopped reading"
    );
    conn.pause_reading(false);
    assert!(conn.wait(|s| s.eof).await, "the connection was not closed");
    assert!(
        conn.received(stdout) < n,
        "all of the output arrived anyway"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_its_exec_dropped() {
    let (srv, backend) = server(Config {
        idle_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let url = srv.exec_url(&exec(&["sleep"])).unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    conn.open(&[("streamType", "error")], false).await;
    conn.open(&[("streamType", "stdout")], false).await;
    assert!(dropped(&backend, 1).await, "idle exec not dropped");
    assert!(conn.wait(|s| s.eof).await, "idle connection not closed");
}

#[tokio::test]
async fn a_client_that_never_opens_its_streams_is_timed_out() {
    let (srv, _) = server(Config {
        stream_creation_timeout: Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let url = srv.exec_url(&exec(&["echo", "x"])).unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    conn.open(&[("streamType", "error")], false).await;
    // No stdout stream: the server gives up.
    assert!(conn.wait(|s| s.goaway && s.eof).await);
}

async fn pair(conn: &SpdyConn, port: u16, id: &str) -> (u32, u32) {
    let p = port.to_string();
    let error = conn
        .open(
            &[("streamType", "error"), ("port", &p), ("requestID", id)],
            false,
        )
        .await;
    let data = conn
        .open(
            &[("streamType", "data"), ("port", &p), ("requestID", id)],
            false,
        )
        .await;
    (error, data)
}

async fn data_until(conn: &SpdyConn, id: u32, want: &[u8]) -> bool {
    conn.wait(|s| {
        s.streams
            .get(&id)
            .is_some_and(|st| st.data.windows(want.len()).any(|w| w == want))
    })
    .await
}

#[tokio::test]
async fn ping_goaway_and_reset_from_the_client() {
    let (srv, _) = server(Config::default()).await;
    let port = echo_server().await;
    let url = srv
        .port_forward_url(&PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            port: vec![],
        })
        .unwrap();
    let (code, head, conn) = connect(&url, &["portforward.k8s.io"], true).await;
    assert_eq!(code, 101, "{head}");
    let conn = conn.unwrap();

    // PING: client pings (odd ids) are echoed.
    conn.ping(7).await;
    assert!(conn.wait(|s| s.pings.contains(&7)).await, "ping not echoed");

    // RST_STREAM of one forwarded connection ends that one only.
    let (err1, data1) = pair(&conn, port, "1").await;
    let (_err2, data2) = pair(&conn, port, "2").await;
    conn.data(data1, b"one", false).await;
    assert!(data_until(&conn, data1, b"echo:one").await);
    conn.reset(data1, 5).await;
    let e1 = conn.finished(err1).await;
    assert!(
        e1.fin && e1.data.is_empty(),
        "reset connection not ended: {e1:?}"
    );
    conn.data(data2, b"two", false).await;
    assert!(
        data_until(&conn, data2, b"echo:two").await,
        "the other connection broke"
    );

    // GOAWAY: no new streams, but the running connection keeps working.
    conn.goaway(0).await;
    let (err3, data3) = pair(&conn, port, "3").await;
    assert_eq!(conn.finished(err3).await.reset, Some(3), "REFUSED_STREAM");
    assert_eq!(conn.finished(data3).await.reset, Some(3), "REFUSED_STREAM");
    conn.data(data2, b"three", true).await;
    assert!(data_until(&conn, data2, b"three").await);
    // Once its last connection ends, the server closes the session.
    assert!(conn.wait(|s| s.goaway && s.eof).await);
}

/// Sends a raw HTTP request; the status code and the whole response.
async fn raw(addr: std::net::SocketAddr, request: String) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn bad_handshakes_get_a_clear_status() {
    let (srv, _) = server(Config::default()).await;
    let addr = srv.local_addr();
    let path = |url: String| url[url.find("/exec/").unwrap()..].to_owned();

    // A WebSocket upgrade without Sec-WebSocket-Key / version 13.
    let p = path(srv.exec_url(&exec(&["echo", "x"])).unwrap());
    let (code, body) = raw(
        addr,
        format!(
            "GET {p} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Sec-WebSocket-Key"), "{body}");

    // A method other than GET/POST.
    let p = path(srv.exec_url(&exec(&["echo", "x"])).unwrap());
    let (code, body) = raw(
        addr,
        format!("PUT {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 405, "{body}");

    // An exec token on the attach path: refused, and spent.
    let url = srv.exec_url(&exec(&["echo", "x"])).unwrap();
    let wrong = url.replacen("/exec/", "/attach/", 1);
    let (code, _, _) = connect(&wrong, &["v4.channel.k8s.io"], true).await;
    assert_eq!(code, 404);
    let (code, body, _) = connect(&url, &["v4.channel.k8s.io"], true).await;
    assert_eq!(code, 404, "{body}");

    // A port-forward WebSocket without a port.
    let url = srv
        .port_forward_url(&PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            port: vec![],
        })
        .unwrap();
    let p = &url[url.find("/portforward/").unwrap()..];
    let (code, body) = raw(
        addr,
        format!(
            "GET {p} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v2.portforward.k8s.io\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("port"), "{body}");

    // Not an HTTP request at all.
    let (code, _) = raw(addr, "\x16\x03\x01garbage\r\n\r\n".into()).await;
    assert_eq!(code, 400);
}
