//! Exec, Attach and PortForward through berthd's streaming server (root): a hostNetwork pod
//! with busybox containers, driven over WebSocket with tokio-tungstenite as the client
//! (`v5.channel.k8s.io`, `v2.portforward.k8s.io`) — output, exit codes, stdin to EOF, a TTY
//! resize seen by `stty size`, an exec'd process killed when its client goes away, attach to a
//! container reading stdin, parallel forwarded connections to an HTTP server in the pod; and a
//! forwarded connection into a pod's own network namespace (CNI on a test bridge).

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
#[path = "support/streaming_node.rs"]
mod streaming_node;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use calls::{container_config, pod_config, remove_pod, run_container, run_pod, Busybox};
use cri_api::v1 as cri;
use futures_util::{SinkExt, StreamExt};
use node::{Leftovers, Node};
use streaming_node::{exec_url, pids_running};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn can_run(test: &str) -> bool {
    support::can_run(test) && node::binaries_ready(test)
}

async fn dial(url: &str, protocol: &str) -> Ws {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("websocket handshake within 10 s")
    .expect("websocket handshake");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some(protocol)
    );
    ws
}

/// Reads until the server closes (at most 30 s); the bytes per channel.
async fn drain(ws: &mut Ws) -> Vec<Vec<u8>> {
    let mut channels = vec![Vec::new(); 256];
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        match msg {
            Ok(Message::Binary(b)) if !b.is_empty() => {
                channels[b[0] as usize].extend_from_slice(&b[1..])
            }
            Ok(Message::Close(_)) | Err(_) => break,
            _ => {}
        }
    }
    channels
}

/// Reads channel `ch` until `want` shows up (at most 20 s); everything read on it.
async fn read_until(ws: &mut Ws, ch: u8, want: &str) -> String {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&got).contains(want) {
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&ch) => {
                got.extend_from_slice(&b[1..])
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            _ => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn status(ch: &[u8]) -> serde_json::Value {
    serde_json::from_slice(ch)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(ch)))
}

/// berthd on a short temp dir with the busybox image pulled, and a hostNetwork pod (`name`,
/// under `handler`) running `main` (`sleep 300`).
struct StreamPod {
    busybox: Busybox,
    dir: tempfile::TempDir,
    guard: Leftovers,
    node: Node,
    rt: calls::Rt,
    pod_cfg: cri::PodSandboxConfig,
    pod: String,
    main: String,
}

impl StreamPod {
    async fn start(name: &str, handler: &str) -> StreamPod {
        let (busybox, dir, guard, node, mut rt, _) = calls::busybox_node().await;
        let pod_cfg = pod_config(name, &dir.path().join("logs"));
        let pod = run_pod(&mut rt, &pod_cfg, handler).await;
        guard.sandbox(&pod);
        let main = container_config("main", &busybox.image, "exec sleep 300", false, false);
        let main = run_container(&mut rt, &pod, &pod_cfg, main).await;
        StreamPod {
            busybox,
            dir,
            guard,
            node,
            rt,
            pod_cfg,
            pod,
            main,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_attach_port_forward_over_websocket() {
    let test = "exec_attach_port_forward_over_websocket";
    if !can_run(test) {
        return;
    }
    let StreamPod {
        busybox,
        dir: _dir,
        guard,
        node,
        mut rt,
        pod_cfg,
        pod,
        main,
    } = StreamPod::start("streaming", "").await;
    let image = busybox.image.clone();

    // Exec: output and success.
    let url = exec_url(&mut rt, &main, &["echo", "hi"], false, false).await;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    let ch = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&ch[1]), "hi\n");
    assert_eq!(status(&ch[3])["status"], "Success", "{:?}", status(&ch[3]));

    // Exit code 3 and stderr.
    let url = exec_url(
        &mut rt,
        &main,
        &["sh", "-c", "echo oops >&2; exit 3"],
        false,
        false,
    )
    .await;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    let ch = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&ch[2]), "oops\n");
    let st = status(&ch[3]);
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

    // Stdin to EOF (v5's close signal).
    let url = exec_url(&mut rt, &main, &["cat"], true, false).await;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(b"\x00hello ".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00stdin".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let ch = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&ch[1]), "hello stdin");
    assert_eq!(status(&ch[3])["status"], "Success");

    // TTY: the resize reaches the terminal before `stty size` reads it.
    let url = exec_url(
        &mut rt,
        &main,
        &["sh", "-c", "sleep 1; busybox stty size"],
        false,
        true,
    )
    .await;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(
        [&[4u8][..], br#"{"Width":123,"Height":45}"#]
            .concat()
            .into(),
    ))
    .await
    .unwrap();
    let ch = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&ch[1]).trim(), "45 123");
    assert_eq!(status(&ch[3])["status"], "Success");

    // A client that goes away takes its exec'd process with it.
    let url = exec_url(&mut rt, &main, &["sleep", "4321"], true, false).await;
    let ws = dial(&url, "v5.channel.k8s.io").await;
    let ok = node::wait_until(Duration::from_secs(10), || async {
        !pids_running(&["sleep", "4321"]).is_empty()
    })
    .await;
    assert!(ok, "the exec'd sleep never ran");
    drop(ws);
    let ok = node::wait_until(Duration::from_secs(10), || async {
        pids_running(&["sleep", "4321"]).is_empty()
    })
    .await;
    assert!(ok, "the exec'd sleep outlived its client");

    // Errors: an unknown container, no streams.
    let err = rt
        .exec(cri::ExecRequest {
            container_id: "f".repeat(64),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = rt
        .exec(cri::ExecRequest {
            container_id: main.clone(),
            cmd: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Attach to a container that reads its stdin.
    let reader = run_container(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config(
            "reader",
            &image,
            "while read l; do echo \"got:$l\"; done",
            true,
            false,
        ),
    )
    .await;
    let url = rt
        .attach(cri::AttachRequest {
            container_id: reader.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(b"\x00ahoy\n".to_vec().into()))
        .await
        .unwrap();
    let out = read_until(&mut ws, 1, "got:ahoy").await;
    assert!(out.contains("got:ahoy\n"), "{out:?}");
    // A second attacher (output only) sees what the first one's input produces.
    let url = rt
        .attach(cri::AttachRequest {
            container_id: reader.clone(),
            stdin: false,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("second Attach")
        .into_inner()
        .url;
    let mut watcher = dial(&url, "v5.channel.k8s.io").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::Binary(b"\x00again\n".to_vec().into()))
        .await
        .unwrap();
    let out = read_until(&mut ws, 1, "got:again").await;
    assert!(out.contains("got:again\n"), "{out:?}");
    let out = read_until(&mut watcher, 1, "got:again").await;
    assert!(out.contains("got:again\n"), "{out:?}");
    drop(watcher);
    drop(ws);

    // Attach to a shell on a terminal: a resize reaches the container's pty through the shim.
    let term_cfg = container_config("term", &image, "exec sh", true, true);
    let term = run_container(&mut rt, &pod, &pod_cfg, term_cfg).await;
    let url = rt
        .attach(cri::AttachRequest {
            container_id: term.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .expect("Attach with a TTY")
        .into_inner()
        .url;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(
        [&[4u8][..], br#"{"Width":77,"Height":22}"#].concat().into(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.send(Message::Binary(b"\x00busybox stty size\n".to_vec().into()))
        .await
        .unwrap();
    let out = read_until(&mut ws, 1, "22 77").await;
    assert!(out.contains("22 77"), "{out:?}");
    drop(ws);

    // Port-forward to an HTTP server in the (hostNetwork) pod, two connections at once.
    let port = support::free_port();
    let _web = run_container(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config(
            "web",
            &image,
            &format!(
                "mkdir -p /www && echo pong > /www/index.html && \
                 exec busybox httpd -f -p 127.0.0.1:{port} -h /www"
            ),
            false,
            false,
        ),
    )
    .await;
    let ok = node::wait_until(Duration::from_secs(10), || async move {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(ok, "httpd in the pod never listened on {port}");
    let mut conns = Vec::new();
    for _ in 0..2 {
        let url = rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![i32::from(port)],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        conns.push(dial(&url, "v2.portforward.k8s.io").await);
    }
    for ws in &mut conns {
        ws.send(Message::Binary(
            b"\x00GET /index.html HTTP/1.0\r\n\r\n".to_vec().into(),
        ))
        .await
        .unwrap();
    }
    for ws in &mut conns {
        let got = read_until(ws, 0, "pong").await;
        assert!(got.contains("200 OK") && got.contains("pong"), "{got:?}");
    }
    drop(conns);

    // Nothing listens on the port: the error channel says so.
    let closed = support::free_port();
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![i32::from(closed)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let mut ws = dial(&url, "v2.portforward.k8s.io").await;
    let err = read_until(&mut ws, 1, "refused").await;
    assert!(err.contains(&closed.to_string()), "{err:?}");
    drop(ws);

    remove_pod(&mut rt, &pod).await;
    node.stop().await;
    drop(guard);
}

/// Listens on 127.0.0.1 inside the network namespace at `netns` (from a thread that entered it)
/// and answers one connection with `echo:` and what it read. Returns the port.
fn echo_in_netns(netns: std::path::PathBuf) -> (u16, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let ns = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no connection in the pod's netns: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(&[b"echo:", &buf[..n]].concat()).unwrap();
    });
    (rx.recv().unwrap(), handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn port_forward_into_the_pod_network_namespace() {
    let test = "port_forward_into_the_pod_network_namespace";
    if !pods::can_run(test) {
        return;
    }
    let pods = pods::Pods::start(7).await;
    let mut rt = pods.client().await;
    let pod = run_pod(&mut rt, &pods::pod("pf"), "").await;
    let st = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let netns = std::path::PathBuf::from(info["netNamespacePath"].as_str().expect("a netns"));
    let (port, server) = echo_in_netns(netns);

    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![i32::from(port)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let mut ws = dial(&url, "v2.portforward.k8s.io").await;
    ws.send(Message::Binary(b"\x00ping".to_vec().into()))
        .await
        .unwrap();
    let got = read_until(&mut ws, 0, "echo:ping").await;
    assert!(got.ends_with("echo:ping"), "{got:?}");
    drop(ws);
    server.join().expect("echo server in the pod");

    // An unknown pod is refused up front.
    let err = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "f".repeat(64),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    remove_pod(&mut rt, &pod).await;
    drop(pods);
}

/// runc refuses `--console-socket` in the foreground: a TTY exec under the runc handler goes
/// detached and is waited for by its PID.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_under_runc_with_and_without_tty() {
    let test = "exec_under_runc_with_and_without_tty";
    if !can_run(test) {
        return;
    }
    if !Path::new("/usr/sbin/runc").exists() {
        eprintln!("SKIP {test}: /usr/sbin/runc is not installed");
        return;
    }
    let StreamPod {
        busybox: _busybox,
        dir: _dir,
        guard,
        node,
        mut rt,
        pod,
        main,
        ..
    } = StreamPod::start("runc", "runc").await;

    let url = exec_url(
        &mut rt,
        &main,
        &["sh", "-c", "echo out; exit 3"],
        false,
        false,
    )
    .await;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    let ch = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&ch[1]), "out\n");
    assert_eq!(status(&ch[3])["details"]["causes"][0]["message"], "3");

    let url = exec_url(
        &mut rt,
        &main,
        &["sh", "-c", "sleep 1; busybox stty size"],
        false,
        true,
    )
    .await;
    let mut ws = dial(&url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(
        [&[4u8][..], br#"{"Width":81,"Height":19}"#].concat().into(),
    ))
    .await
    .unwrap();
    let ch = drain(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&ch[1]).trim(), "19 81");
    assert_eq!(status(&ch[3])["status"], "Success");

    remove_pod(&mut rt, &pod).await;
    node.stop().await;
    drop(guard);
}
