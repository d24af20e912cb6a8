//! Protocol-level tests of the SPDY/3.1 transport with an independent client.

mod support;

use std::sync::Arc;
use std::time::Duration;

use berth_streaming::{Config, StreamingServer};
use cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use support::spdy_client::{connect, SpdyConn};
use support::{echo_server, pattern, FakeBackend};

async fn server(config: Config) -> (StreamingServer, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::default());
    (
        StreamingServer::bind(config, backend.clone())
            .await
            .unwrap(),
        backend,
    )
}

fn exec(cmd: &[&str], stdin: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}

async fn open(conn: &SpdyConn, kind: &str) -> u32 {
    conn.open(&[("streamType", kind)], false).await
}

#[tokio::test]
async fn exec_echo_v4_reports_success_status() {
    let (srv, _) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["echo", "hello", "world"], false, true, false))
        .unwrap();
    let (code, head, conn) = connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"], true).await;
    assert_eq!(code, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let stdout = open(&conn, "stdout").await;
    let stderr = open(&conn, "stderr").await;
    assert_eq!(conn.finished(stdout).await.data, b"hello world\n");
    assert!(conn.finished(stderr).await.data.is_empty());
    let status = conn.finished(error).await;
    assert!(status.replied);
    assert_eq!(status.data, br#"{"metadata":{},"status":"Success"}"#);
    assert!(conn.wait(|s| s.goaway).await, "server ends with GOAWAY");
}

#[tokio::test]
async fn exec_nonzero_exit_is_a_status_with_the_code() {
    let (srv, _) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["exit", "3"], false, true, false))
        .unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let _stdout = open(&conn, "stdout").await;
    let stderr = open(&conn, "stderr").await;
    assert_eq!(conn.finished(stderr).await.data, b"bye\n");
    let status: serde_json::Value =
        serde_json::from_slice(&conn.finished(error).await.data).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_v2_reports_failure_as_text() {
    let (srv, _) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["exit", "2"], false, false, false))
        .unwrap();
    let (_, head, conn) = connect(&url, &["v2.channel.k8s.io"], true).await;
    assert!(head.contains("v2.channel.k8s.io"));
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let _stdout = open(&conn, "stdout").await;
    let text = String::from_utf8(conn.finished(error).await.data).unwrap();
    assert!(
        text.contains("non-zero exit code") && text.contains('2'),
        "{text}"
    );
}

#[tokio::test]
async fn exec_stdin_to_eof_reaches_the_process() {
    let (srv, _) = server(Config::default()).await;
    let url = srv.exec_url(&exec(&["cat"], true, false, false)).unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let stdin = open(&conn, "stdin").await;
    let stdout = open(&conn, "stdout").await;
    conn.data(stdin, b"line one\n", false).await;
    conn.ping(1).await;
    conn.data(stdin, b"line two\n", true).await;
    assert_eq!(conn.finished(stdout).await.data, b"line one\nline two\n");
    assert_eq!(
        conn.finished(error).await.data,
        br#"{"metadata":{},"status":"Success"}"#
    );
    assert!(conn.state.lock().unwrap().pings.contains(&1), "ping echoed");
}

#[tokio::test]
async fn exec_large_output_without_client_flow_control() {
    // Like Go's spdystream: never sends WINDOW_UPDATE.
    let (srv, _) = server(Config::default()).await;
    let n = 10 * 1024 * 1024;
    let url = srv
        .exec_url(&exec(&["big", &n.to_string()], false, false, false))
        .unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let stdout = open(&conn, "stdout").await;
    let out = conn.finished(stdout).await.data;
    assert_eq!(out.len(), n);
    assert!(out == pattern(n));
    assert!(!conn.finished(error).await.data.is_empty());
}

#[tokio::test]
async fn exec_output_respects_the_client_window() {
    let (srv, _) = server(Config::default()).await;
    let n = 1024 * 1024;
    let url = srv
        .exec_url(&exec(&["big", &n.to_string()], false, false, false))
        .unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    let window = 16 * 1024;
    conn.settings_initial_window(window).await;
    let error = open(&conn, "error").await;
    let stdout = open(&conn, "stdout").await;
    assert!(
        conn.wait(|s| s
            .streams
            .get(&stdout)
            .is_some_and(|st| st.data.len() >= window as usize))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = conn.state.lock().unwrap().streams[&stdout].data.len();
    assert_eq!(
        got, window as usize,
        "server must stop at the stream window"
    );
    // Grant the rest; the session window (64 KiB) needs credit too.
    conn.window_update(stdout, n as u32).await;
    conn.window_update(0, n as u32).await;
    let out = conn.finished(stdout).await.data;
    assert_eq!(out.len(), n);
    conn.finished(error).await;
}

#[tokio::test]
async fn tty_resize_reaches_the_backend() {
    let (srv, backend) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["resize", "2"], true, false, true))
        .unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let _stdin = open(&conn, "stdin").await;
    let stdout = open(&conn, "stdout").await;
    let resize = open(&conn, "resize").await;
    conn.data(resize, br#"{"Width":80,"Height":24}"#, false)
        .await;
    conn.data(resize, br#"{"Width":120,"#, false).await;
    conn.data(resize, br#""Height":40}"#, false).await;
    assert_eq!(conn.finished(stdout).await.data, b"80x24\n120x40\n");
    conn.finished(error).await;
    assert_eq!(backend.resizes.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn attach_streams_stdin_and_stdout() {
    let (srv, _) = server(Config::default()).await;
    let req = AttachRequest {
        container_id: "c1".into(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: false,
    };
    let url = srv.attach_url(&req).unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    let error = open(&conn, "error").await;
    let stdin = open(&conn, "stdin").await;
    let stdout = open(&conn, "stdout").await;
    conn.data(stdin, b"typed", true).await;
    assert_eq!(conn.finished(stdout).await.data, b"attached\ntyped");
    conn.finished(error).await;
}

#[tokio::test]
async fn port_forward_several_connections_in_parallel() {
    let (srv, _) = server(Config::default()).await;
    let port = echo_server().await;
    let other = echo_server().await;
    let req = PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        port: vec![],
    };
    let url = srv.port_forward_url(&req).unwrap();
    let (code, head, conn) = connect(&url, &["portforward.k8s.io"], true).await;
    assert_eq!(code, 101, "{head}");
    let conn = conn.unwrap();
    let mut pairs = Vec::new();
    for i in 0..6 {
        let p = if i % 2 == 0 { port } else { other }.to_string();
        let rid = i.to_string();
        let err = conn
            .open(
                &[("streamType", "error"), ("port", &p), ("requestID", &rid)],
                false,
            )
            .await;
        let data = conn
            .open(
                &[("streamType", "data"), ("port", &p), ("requestID", &rid)],
                false,
            )
            .await;
        pairs.push((err, data));
    }
    for (i, (_, data)) in pairs.iter().enumerate() {
        conn.data(*data, format!("conn {i}").as_bytes(), true).await;
    }
    for (i, (err, data)) in pairs.iter().enumerate() {
        assert_eq!(
            conn.finished(*data).await.data,
            format!("echo:conn {i}").as_bytes()
        );
        assert!(conn.finished(*err).await.data.is_empty());
    }
    // A port nothing listens on: the error stream says so.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = closed.to_string();
    let err = conn
        .open(
            &[("streamType", "error"), ("port", &p), ("requestID", "x")],
            false,
        )
        .await;
    let _data = conn
        .open(
            &[("streamType", "data"), ("port", &p), ("requestID", "x")],
            false,
        )
        .await;
    let msg = String::from_utf8(conn.finished(err).await.data).unwrap();
    assert!(
        msg.contains(&format!("error forwarding port {closed} to pod pod1")),
        "{msg}"
    );
    // A stream without a port header is reset.
    let bad = conn.open(&[("streamType", "data")], false).await;
    assert!(conn.finished(bad).await.reset.is_some());
}

#[tokio::test]
async fn a_url_works_once() {
    let (srv, _) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["echo", "x"], false, false, false))
        .unwrap();
    let (code, _, _conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    assert_eq!(code, 101);
    let (code, body, _) = connect(&url, &["v4.channel.k8s.io"], true).await;
    assert_eq!(code, 404);
    assert!(body.contains("unknown, expired or already used"), "{body}");
}

#[tokio::test]
async fn an_expired_url_is_refused() {
    let (srv, _) = server(Config {
        token_ttl: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let url = srv
        .exec_url(&exec(&["echo", "x"], false, false, false))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (code, body, _) = connect(&url, &["v4.channel.k8s.io"], true).await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test]
async fn bad_handshakes_are_refused_clearly() {
    let (srv, _) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["echo", "x"], false, false, false))
        .unwrap();
    let (code, body, _) = connect(&url, &["v9.channel.k8s.io"], true).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{body}"
    );
    assert!(body.contains("unable to negotiate protocol"), "{body}");

    let url = srv
        .exec_url(&exec(&["echo", "x"], false, false, false))
        .unwrap();
    let (code, body, _) = connect(&url, &["v4.channel.k8s.io"], false).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("missing upgrade headers"), "{body}");

    assert!(srv
        .exec_url(&ExecRequest {
            container_id: "c1".into(),
            tty: true,
            stderr: true,
            ..Default::default()
        })
        .is_err());
    let (code, _, _) = connect(&format!("{}/nothing/here", srv.base_url()), &[], true).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_client_cancels_the_exec() {
    let (srv, backend) = server(Config::default()).await;
    let url = srv
        .exec_url(&exec(&["sleep"], false, false, false))
        .unwrap();
    let (_, _, conn) = connect(&url, &["v4.channel.k8s.io"], true).await;
    let conn = conn.unwrap();
    open(&conn, "error").await;
    open(&conn, "stdout").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(conn);
    for _ in 0..50 {
        if *backend.dropped_execs.lock().unwrap() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("exec future not dropped after the client went away");
}
