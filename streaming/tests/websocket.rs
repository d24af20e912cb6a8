//! Protocol-level tests of the WebSocket transport with tokio-tungstenite as the client.

mod support;

use std::sync::Arc;

use berth_streaming::{Config, StreamingServer};
use cri_api::v1::{ExecRequest, PortForwardRequest};
use futures_util::{SinkExt, StreamExt};
use support::{echo_server, FakeBackend};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

async fn server() -> StreamingServer {
    StreamingServer::bind(Config::default(), Arc::new(FakeBackend::default()))
        .await
        .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn dial(
    url: &str,
    protocol: &str,
) -> Result<(Ws, String), tokio_tungstenite::tungstenite::Error> {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Ok((ws, proto))
}

/// Reads until the server closes; returns the bytes per channel.
async fn drain(ws: &mut Ws) -> Vec<Vec<u8>> {
    let mut channels = vec![Vec::new(); 8];
    while let Ok(Some(msg)) =
        tokio::time::timeout(std::time::Duration::from_secs(20), ws.next()).await
    {
        match msg.unwrap() {
            Message::Binary(b) => channels[b[0] as usize].extend_from_slice(&b[1..]),
            Message::Close(frame) => {
                // client-go ends the streams only on a normal closure (1000); a close frame
                // without a status (1005) made `crictl exec -r websocket` fail after the output.
                let code = frame.map(|f| u16::from(f.code));
                assert_eq!(code, Some(1000), "the server's close frame");
                break;
            }
            _ => {}
        }
    }
    channels
}

fn exec(cmd: &[&str], stdin: bool, stderr: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        stdout: true,
        stderr,
        tty: false,
    }
}

#[tokio::test]
async fn v5_exec_with_stdin_close_signal() {
    let srv = server().await;
    let url = srv.exec_url(&exec(&["cat"], true, false)).unwrap();
    let (mut ws, proto) = dial(&url, "v5.channel.k8s.io, v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(proto, "v5.channel.k8s.io");
    ws.send(Message::Binary(b"\x00hello ".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00v5".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let ch = drain(&mut ws).await;
    assert_eq!(ch[1], b"hello v5");
    assert_eq!(ch[3], br#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn v4_exec_nonzero_exit_and_stderr() {
    let srv = server().await;
    let url = srv.exec_url(&exec(&["exit", "7"], false, true)).unwrap();
    let (mut ws, proto) = dial(&url, "v4.channel.k8s.io").await.unwrap();
    assert_eq!(proto, "v4.channel.k8s.io");
    let ch = drain(&mut ws).await;
    assert_eq!(ch[2], b"bye\n");
    let status: serde_json::Value = serde_json::from_slice(&ch[3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn v4_base64_exec_echo() {
    let srv = server().await;
    let url = srv.exec_url(&exec(&["echo", "b64"], false, false)).unwrap();
    let (mut ws, _) = dial(&url, "v4.base64.channel.k8s.io").await.unwrap();
    let mut out = String::new();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            if t.starts_with('1') && t.len() > 1 {
                use base64::Engine;
                out.push_str(
                    &String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(&t[1..])
                            .unwrap(),
                    )
                    .unwrap(),
                );
            }
        } else if msg.is_close() {
            break;
        }
    }
    assert_eq!(out, "b64\n");
}

#[tokio::test]
async fn ws_large_output() {
    let srv = server().await;
    let n = 10 * 1024 * 1024;
    let url = srv
        .exec_url(&exec(&["big", &n.to_string()], false, false))
        .unwrap();
    let (mut ws, _) = dial(&url, "v5.channel.k8s.io").await.unwrap();
    let ch = drain(&mut ws).await;
    assert_eq!(ch[1].len(), n);
    assert!(ch[1] == support::pattern(n));
}

#[tokio::test]
async fn ws_port_forward_sends_port_prefix_then_data() {
    let srv = server().await;
    let port = echo_server().await;
    let req = PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        port: vec![i32::from(port)],
    };
    let url = srv.port_forward_url(&req).unwrap();
    let (mut ws, proto) = dial(&url, "v2.portforward.k8s.io").await.unwrap();
    assert_eq!(proto, "v2.portforward.k8s.io");
    let mut firsts = Vec::new();
    for _ in 0..2 {
        let Message::Binary(b) = ws.next().await.unwrap().unwrap() else {
            panic!("binary expected")
        };
        firsts.push(b.to_vec());
    }
    firsts.sort();
    let le = port.to_le_bytes();
    assert_eq!(firsts, vec![vec![0, le[0], le[1]], vec![1, le[0], le[1]]]);
    ws.send(Message::Binary(b"\x00ping".to_vec().into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < "echo:ping".len() {
        let Message::Binary(b) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        assert_eq!(b[0], 0);
        got.extend_from_slice(&b[1..]);
    }
    assert_eq!(got, b"echo:ping");
}

#[tokio::test]
async fn ws_unsupported_protocol_is_refused_with_the_list() {
    let srv = server().await;
    let url = srv.exec_url(&exec(&["echo", "x"], false, false)).unwrap();
    match dial(&url, "v9.channel.k8s.io").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("v5.channel.k8s.io"), "{body}");
        }
        other => panic!("expected 403, got {:?}", other.map(|(_, p)| p)),
    }
    // And the token is spent.
    assert!(dial(&url, "v5.channel.k8s.io").await.is_err());
}
