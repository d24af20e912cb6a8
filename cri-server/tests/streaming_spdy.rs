//! Exec, Attach and PortForward through berthd's streaming server over SPDY/3.1 (root), with
//! the SPDY client written from the SPDY/3 draft independently of the server's framing
//! (streaming/tests/support/spdy_client.rs): what kubelet and crictl speak by default.
//!
//! - berth-runtime: exec with and without a TTY (echo, exit codes in the v4 Status JSON, large
//!   output with and without client flow control, stdin to EOF, resizes seen by `stty size`),
//!   remotecommand v1..v3 (text errors, no Status on success, resize from v3 on), an exec'd
//!   process killed and reaped by PID when its client vanishes, two attachers at once, attach
//!   to a TTY, port-forward to busybox httpd with parallel connections;
//! - runc and crun: a TTY exec reports the real exit code (subreaper helper), resizes, and a
//!   vanished TTY client's process is killed, with the helper reaped;
//! - TLS: `[streaming] tls_cert_file/tls_key_file` make the URLs https, served with the
//!   test CA's certificate.

#[path = "support/calls.rs"]
mod calls;
#[path = "support/node.rs"]
mod node;
#[path = "support/pods.rs"]
mod pods;
#[allow(dead_code)]
#[path = "../../streaming/tests/support/spdy_client.rs"]
mod spdy_client;
#[path = "support/streaming_node.rs"]
mod streaming_node;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calls::{container_config, pod_config, pull, remove_pod, run_container, run_pod, Busybox, Rt};
use cri_api::v1 as cri;
use node::Leftovers;
use spdy_client::{connect_tls, SpdyConn};
use streaming_node::{
    exec_url, pids_running, pids_with_args, test_ca, zombie_children, StreamingNode,
};
use tokio_rustls::TlsConnector;

const V4: &str = "v4.channel.k8s.io";

fn can_run(test: &str) -> bool {
    support::can_run(test) && node::binaries_ready(test)
}

/// The client's side of one exec/attach over SPDY: the streams it opened.
struct Remote {
    conn: SpdyConn,
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

#[derive(Clone, Copy, Default)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

const OUT: Streams = Streams {
    stdin: false,
    stdout: true,
    stderr: true,
    resize: false,
};

/// Upgrades `url` to SPDY with `protocol` and opens the streams as kubectl does (error first).
async fn remote(url: &str, protocol: &str, s: Streams, tls: Option<TlsConnector>) -> Remote {
    let (code, head, conn) = connect_tls(url, &[protocol], true, tls).await;
    assert_eq!(code, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-stream-protocol-version: {protocol}")),
        "{head}"
    );
    let conn = conn.unwrap();
    let open = |kind: &'static str, want: bool| {
        let conn = &conn;
        async move {
            if want {
                Some(conn.open(&[("streamType", kind)], false).await)
            } else {
                None
            }
        }
    };
    let error = conn.open(&[("streamType", "error")], false).await;
    let stdin = open("stdin", s.stdin).await;
    let stdout = open("stdout", s.stdout).await;
    let stderr = open("stderr", s.stderr).await;
    let resize = open("resize", s.resize).await;
    Remote {
        conn,
        error,
        stdin,
        stdout,
        stderr,
        resize,
    }
}

impl Remote {
    async fn out(&self) -> String {
        text(self.conn.finished(self.stdout.unwrap()).await.data)
    }
    async fn err(&self) -> String {
        text(self.conn.finished(self.stderr.unwrap()).await.data)
    }
    async fn status(&self) -> Vec<u8> {
        self.conn.finished(self.error).await.data
    }
    async fn status_json(&self) -> serde_json::Value {
        let raw = self.status().await;
        serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&raw)))
    }
    async fn resize(&self, width: u16, height: u16) {
        let json = format!(r#"{{"Width":{width},"Height":{height}}}"#);
        self.conn
            .data(self.resize.unwrap(), json.as_bytes(), false)
            .await;
    }
    async fn type_in(&self, data: &[u8], eof: bool) {
        self.conn.data(self.stdin.unwrap(), data, eof).await;
    }
    /// Waits (20 s) until stdout holds `want`; what it holds.
    async fn stdout_until(&self, want: &str) -> String {
        let id = self.stdout.unwrap();
        self.conn
            .wait(|s| {
                s.streams
                    .get(&id)
                    .is_some_and(|st| String::from_utf8_lossy(&st.data).contains(want))
            })
            .await;
        text(self.conn.state.lock().unwrap().streams[&id].data.clone())
    }
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

fn exit_code(status: &serde_json::Value) -> String {
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(
        status["details"]["causes"][0]["reason"], "ExitCode",
        "{status}"
    );
    status["details"]["causes"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `busybox seq 1 n`'s output.
fn seq(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// A registry with the busybox image, berthd on a short temp dir, the image pulled.
struct Setup {
    _busybox: Busybox,
    dir: tempfile::TempDir,
    guard: Leftovers,
    node: StreamingNode,
    image: String,
}

async fn setup(tweak: impl FnOnce(&mut berth_cri::config::Config)) -> Setup {
    let busybox = Busybox::push();
    let image = busybox.image.clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let guard = Leftovers::new(dir.path());
    let node =
        StreamingNode::start(dir.path(), &node::target_dir(), &[busybox.host()], tweak).await;
    pull(&node.channel, &image).await;
    Setup {
        _busybox: busybox,
        dir,
        guard,
        node,
        image,
    }
}

/// Waits until exactly one live process runs `args`; its PID.
async fn one_pid(args: &[&str]) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_running(args);
        if pids.len() == 1 {
            return pids[0];
        }
        assert!(Instant::now() < deadline, "{args:?} never ran: {pids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s) until `pid` is gone from /proc: killed and reaped.
async fn reaped(pid: i32) -> bool {
    node::wait_until(Duration::from_secs(10), || async move {
        !Path::new(&format!("/proc/{pid}")).exists()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spdy_exec_attach_port_forward_against_berthd() {
    let test = "spdy_exec_attach_port_forward_against_berthd";
    if !can_run(test) {
        return;
    }
    let s = setup(|_| {}).await;
    let mut rt = s.node.client();
    let pod_cfg = pod_config("spdy", &s.dir.path().join("logs"));
    let pod = run_pod(&mut rt, &pod_cfg, "").await;
    s.guard.sandbox(&pod);
    let main = run_container(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", &s.image, "exec sleep 300", false, false),
    )
    .await;

    exec_without_tty(&mut rt, &main).await;
    exec_with_tty(&mut rt, &main).await;
    older_protocols(&mut rt, &main).await;
    vanished_clients(&mut rt, &main).await;
    attach(&mut rt, &pod, &pod_cfg, &s.image).await;
    stalled_attacher(&mut rt, &pod, &pod_cfg, &s.image, s.dir.path()).await;
    port_forward(&mut rt, &pod, &pod_cfg, &s.image).await;

    remove_pod(&mut rt, &pod).await;
    s.node.stop().await;
    drop(s.guard);
}

async fn exec_without_tty(rt: &mut Rt, main: &str) {
    // Echo: stdout, empty stderr, the Success Status.
    let r = remote(
        &exec_url(rt, main, &["echo", "hi", "there"], false, false).await,
        V4,
        OUT,
        None,
    )
    .await;
    assert_eq!(r.out().await, "hi there\n");
    assert_eq!(r.err().await, "");
    assert_eq!(r.status().await, br#"{"metadata":{},"status":"Success"}"#);
    assert!(
        r.conn.closed_by_server().await,
        "server closes after the Status"
    );
    assert!(r.conn.state.lock().unwrap().goaway, "with a GOAWAY first");

    // A non-zero exit code and stderr.
    let cmd = ["sh", "-c", "echo out; echo oops >&2; exit 3"];
    let r = remote(&exec_url(rt, main, &cmd, false, false).await, V4, OUT, None).await;
    assert_eq!(r.out().await, "out\n");
    assert_eq!(r.err().await, "oops\n");
    assert_eq!(exit_code(&r.status_json().await), "3");
    // Killed by a signal: 128+9.
    let cmd = ["sh", "-c", "kill -9 $$"];
    let r = remote(&exec_url(rt, main, &cmd, false, false).await, V4, OUT, None).await;
    assert_eq!(exit_code(&r.status_json().await), "137");

    // Large output, the client never sending WINDOW_UPDATE (as Go's spdystream).
    let n = 200_000;
    let cmd = ["busybox", "seq", "1", "200000"];
    let r = remote(&exec_url(rt, main, &cmd, false, false).await, V4, OUT, None).await;
    let out = r.out().await;
    assert_eq!(out.len(), seq(n).len());
    assert!(out == seq(n), "large output corrupted");
    assert_eq!(r.status().await, br#"{"metadata":{},"status":"Success"}"#);

    // Large output with flow control: a 16 KiB stream window, credit given as data arrives;
    // the server never sends past the window.
    let r = remote(&exec_url(rt, main, &cmd, false, false).await, V4, OUT, None).await;
    let window = 16 * 1024;
    r.conn.settings_initial_window(window as u32).await;
    let id = r.stdout.unwrap();
    let (mut granted_stream, mut granted_session) = (window, 64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, fin) = {
            let st = r.conn.state.lock().unwrap();
            st.streams
                .get(&id)
                .map_or((0, false), |s| (s.data.len(), s.fin))
        };
        assert!(
            got <= granted_stream && got <= granted_session,
            "server sent {got} bytes past the windows ({granted_stream}, {granted_session})"
        );
        if fin {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow-controlled output stalled at {got}"
        );
        if granted_stream - got < window / 2 {
            let delta = got + window - granted_stream;
            r.conn.window_update(id, delta as u32).await;
            granted_stream += delta;
        }
        if granted_session - got < 32 * 1024 {
            let delta = got + 64 * 1024 - granted_session;
            r.conn.window_update(0, delta as u32).await;
            granted_session += delta;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(r.out().await == seq(n), "flow-controlled output corrupted");
    assert_eq!(r.status().await, br#"{"metadata":{},"status":"Success"}"#);

    // Stdin to EOF: 100 KiB in pieces, then FIN; wc sees them all and ends.
    let streams = Streams { stdin: true, ..OUT };
    let r = remote(
        &exec_url(rt, main, &["busybox", "wc", "-c"], true, false).await,
        V4,
        streams,
        None,
    )
    .await;
    let chunk = vec![b'x'; 10 * 1024];
    for i in 0..10 {
        r.type_in(&chunk, i == 9).await;
    }
    assert_eq!(r.out().await.trim(), "102400");
    assert_eq!(r.status().await, br#"{"metadata":{},"status":"Success"}"#);
}

async fn exec_with_tty(rt: &mut Rt, main: &str) {
    let tty = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        resize: true,
    };
    // Resizes reach the terminal while the command runs; the exit code is the command's.
    let script = "read a; busybox stty size; read b; busybox stty size; exit 5";
    let r = remote(
        &exec_url(rt, main, &["sh", "-c", script], true, true).await,
        V4,
        tty,
        None,
    )
    .await;
    r.resize(100, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.type_in(b"x\n", false).await;
    let out = r.stdout_until("30 100").await;
    assert!(out.contains("30 100"), "{out:?}");
    r.resize(132, 43).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.type_in(b"y\n", false).await;
    let out = r.out().await;
    assert!(out.contains("43 132"), "{out:?}");
    assert_eq!(exit_code(&r.status_json().await), "5");

    // Stdin's EOF reaches a command on a terminal (as Ctrl-D).
    let r = remote(
        &exec_url(rt, main, &["cat"], true, true).await,
        V4,
        tty,
        None,
    )
    .await;
    r.type_in(b"over the tty\n", true).await;
    let out = r.out().await;
    assert!(out.contains("over the tty"), "{out:?}");
    assert_eq!(r.status().await, br#"{"metadata":{},"status":"Success"}"#);
}

/// remotecommand v1..v3: failures as plain text on the error stream (no Status JSON), nothing
/// at all on success; the resize stream only from v3 on.
async fn older_protocols(rt: &mut Rt, main: &str) {
    for protocol in ["channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io"] {
        let cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"];
        let r = remote(
            &exec_url(rt, main, &cmd, false, false).await,
            protocol,
            OUT,
            None,
        )
        .await;
        assert_eq!(r.out().await, "out\n", "{protocol}");
        assert_eq!(r.err().await, "err\n", "{protocol}");
        let msg = text(r.status().await);
        assert!(
            msg.contains("command terminated with non-zero exit code") && msg.contains('3'),
            "{protocol}: {msg:?}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&msg).is_err(),
            "{protocol}: a Status JSON before v4: {msg}"
        );

        let r = remote(
            &exec_url(rt, main, &["echo", "fine"], false, false).await,
            protocol,
            OUT,
            None,
        )
        .await;
        assert_eq!(r.out().await, "fine\n", "{protocol}");
        assert_eq!(r.status().await, b"", "{protocol}: success writes nothing");
    }
    // v3 has the resize stream.
    let tty = Streams {
        stdin: false,
        stdout: true,
        stderr: false,
        resize: true,
    };
    let cmd = ["sh", "-c", "sleep 1; busybox stty size"];
    let r = remote(
        &exec_url(rt, main, &cmd, false, true).await,
        "v3.channel.k8s.io",
        tty,
        None,
    )
    .await;
    r.resize(90, 20).await;
    assert_eq!(r.out().await.trim(), "20 90");
    assert_eq!(r.status().await, b"");
    // v2 has none: a resize stream is a protocol error (the stream is reset).
    let r = remote(
        &exec_url(rt, main, &cmd, false, true).await,
        "v2.channel.k8s.io",
        tty,
        None,
    )
    .await;
    let resize = r.conn.finished(r.resize.unwrap()).await;
    assert!(resize.reset.is_some(), "v2 refuses a resize stream");
}

/// A client that vanishes mid-exec: the exec'd process is SIGKILLed and reaped (by PID), and
/// no runtime process is left behind.
async fn vanished_clients(rt: &mut Rt, main: &str) {
    for (tty, secs) in [(false, "4321"), (true, "4322")] {
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: !tty,
            resize: tty,
        };
        let r = remote(
            &exec_url(rt, main, &["sleep", secs], true, tty).await,
            V4,
            streams,
            None,
        )
        .await;
        let pid = one_pid(&["sleep", secs]).await;
        drop(r);
        assert!(
            reaped(pid).await,
            "tty={tty}: the exec'd sleep {pid} outlived its client"
        );
        let ok = node::wait_until(Duration::from_secs(10), || async {
            pids_with_args(&["exec", main]).is_empty()
        })
        .await;
        assert!(ok, "tty={tty}: a runtime exec process is left");
    }
}

async fn attach(rt: &mut Rt, pod: &str, pod_cfg: &cri::PodSandboxConfig, image: &str) {
    let reader = run_container(
        rt,
        pod,
        pod_cfg,
        container_config(
            "reader",
            image,
            "while read l; do echo \"got:$l\"; done",
            true,
            false,
        ),
    )
    .await;
    let attach_url = |rt: &mut Rt, stdin: bool, tty: bool| {
        let mut rt = rt.clone();
        let id = reader.clone();
        async move {
            rt.attach(cri::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url
        }
    };
    let typing = remote(
        &attach_url(rt, true, false).await,
        V4,
        Streams { stdin: true, ..OUT },
        None,
    )
    .await;
    let watching = remote(&attach_url(rt, false, false).await, V4, OUT, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    typing.type_in(b"ahoy\n", false).await;
    assert!(typing.stdout_until("got:ahoy").await.contains("got:ahoy\n"));
    assert!(watching
        .stdout_until("got:ahoy")
        .await
        .contains("got:ahoy\n"));
    drop(watching);
    // The first attacher keeps working after the second left.
    typing.type_in(b"again\n", false).await;
    assert!(typing
        .stdout_until("got:again")
        .await
        .contains("got:again\n"));
    drop(typing);

    // A shell on a terminal: the resize reaches its pty through the shim.
    let term = run_container(
        rt,
        pod,
        pod_cfg,
        container_config("term", image, "exec sh", true, true),
    )
    .await;
    let url = rt
        .attach(cri::AttachRequest {
            container_id: term,
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .expect("Attach with a TTY")
        .into_inner()
        .url;
    let r = remote(
        &url,
        V4,
        Streams {
            stdin: true,
            stdout: true,
            stderr: false,
            resize: true,
        },
        None,
    )
    .await;
    r.resize(61, 17).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.type_in(b"busybox stty size\n", false).await;
    let out = r.stdout_until("17 61").await;
    assert!(out.contains("17 61"), "{out:?}");
}

/// An attacher that stops reading (its SPDY window closed) does not hold up the container:
/// its output keeps reaching the log and a second attacher.
async fn stalled_attacher(
    rt: &mut Rt,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    image: &str,
    dir: &Path,
) {
    let chatty = run_container(
        rt,
        pod,
        pod_cfg,
        container_config(
            "chatty",
            image,
            "i=0; while true; do busybox seq $i $((i+3000)); i=$((i+3000)); sleep 0.1; done",
            false,
            false,
        ),
    )
    .await;
    let url = |rt: &mut Rt| {
        let mut rt = rt.clone();
        let id = chatty.clone();
        async move {
            rt.attach(cri::AttachRequest {
                container_id: id,
                stdin: false,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url
        }
    };
    let (_, _, stalled) = connect_tls(&url(rt).await, &[V4], true, None).await;
    let stalled = stalled.unwrap();
    stalled.settings_initial_window(1024).await;
    for kind in ["error", "stdout", "stderr"] {
        stalled.open(&[("streamType", kind)], false).await;
    }
    let watching = remote(&url(rt).await, V4, OUT, None).await;
    let log = dir.join("logs/chatty/0.log");
    let size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (log_before, seen_before) = (size(), watching.conn.received(watching.stdout.unwrap()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (log_after, seen_after) = (size(), watching.conn.received(watching.stdout.unwrap()));
    assert!(
        log_after > log_before + 100_000,
        "the container's output stalled: log {log_before} → {log_after} bytes"
    );
    assert!(
        seen_after > seen_before + 100_000,
        "the other attacher stalled: {seen_before} → {seen_after} bytes"
    );
    drop(stalled);
    drop(watching);
}

async fn port_forward(rt: &mut Rt, pod: &str, pod_cfg: &cri::PodSandboxConfig, image: &str) {
    let port = support::free_port();
    run_container(
        rt,
        pod,
        pod_cfg,
        container_config(
            "web",
            image,
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

    // Two SPDY connections, four forwarded connections each, all open at once.
    let mut conns = Vec::new();
    for _ in 0..2 {
        let url = rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: vec![i32::from(port)],
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url;
        let (code, head, conn) = connect_tls(&url, &["portforward.k8s.io"], true, None).await;
        assert_eq!(code, 101, "{head}");
        conns.push(conn.unwrap());
    }
    let p = port.to_string();
    let mut pairs = Vec::new();
    for (c, conn) in conns.iter().enumerate() {
        for i in 0..4 {
            let rid = format!("{c}-{i}");
            let headers = |kind| {
                [
                    ("streamType", kind),
                    ("port", p.as_str()),
                    ("requestID", rid.as_str()),
                ]
            };
            let error = conn.open(&headers("error"), false).await;
            let data = conn.open(&headers("data"), false).await;
            pairs.push((conn, error, data, rid));
        }
    }
    for (conn, _, data, rid) in &pairs {
        let req = format!("GET /index.html?{rid} HTTP/1.0\r\n\r\n");
        conn.data(*data, req.as_bytes(), false).await;
    }
    for (conn, error, data, rid) in &pairs {
        let got = text(conn.finished(*data).await.data);
        assert!(
            got.contains("200 OK") && got.ends_with("pong\n"),
            "{rid}: {got:?}"
        );
        conn.data(*data, b"", true).await;
        let err = conn.finished(*error).await;
        assert!(err.data.is_empty(), "{rid}: {:?}", text(err.data));
    }
    drop(pairs);
    drop(conns);

    // Nothing listens on the port: the error stream says so.
    let closed = support::free_port();
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![i32::from(closed)],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let (_, _, conn) = connect_tls(&url, &["portforward.k8s.io"], true, None).await;
    let conn = conn.unwrap();
    let p = closed.to_string();
    let error = conn
        .open(
            &[("streamType", "error"), ("port", &p), ("requestID", "0")],
            false,
        )
        .await;
    conn.open(
        &[("streamType", "data"), ("port", &p), ("requestID", "0")],
        false,
    )
    .await;
    let msg = text(conn.finished(error).await.data);
    assert!(
        msg.contains(&format!("error forwarding port {closed}")),
        "{msg:?}"
    );
}

/// runc and crun refuse `--console-socket` in the foreground: berthd runs them detached under
/// a subreaper helper, which must report the process's real exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spdy_tty_exec_exit_codes_under_runc_and_crun() {
    let test = "spdy_tty_exec_exit_codes_under_runc_and_crun";
    if !can_run(test) {
        return;
    }
    let handlers: Vec<&str> = [("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")]
        .into_iter()
        .filter(|(name, path)| {
            let there = Path::new(path).exists();
            if !there {
                eprintln!("SKIP {test} for {name}: {path} is not installed");
            }
            there
        })
        .map(|(name, _)| name)
        .collect();
    if handlers.is_empty() {
        return;
    }
    let s = setup(|_| {}).await;
    let mut rt = s.node.client();
    for handler in handlers {
        let pod_cfg = pod_config(handler, &s.dir.path().join("logs"));
        let pod = run_pod(&mut rt, &pod_cfg, handler).await;
        s.guard.sandbox(&pod);
        let main = run_container(
            &mut rt,
            &pod,
            &pod_cfg,
            container_config("main", &s.image, "exec sleep 300", false, false),
        )
        .await;
        let tty = Streams {
            stdin: false,
            stdout: true,
            stderr: false,
            resize: true,
        };
        // The exit code of a TTY exec.
        let cmd = ["sh", "-c", "echo on the tty; exit 7"];
        let r = remote(
            &exec_url(&mut rt, &main, &cmd, false, true).await,
            V4,
            tty,
            None,
        )
        .await;
        assert!(r.out().await.contains("on the tty"), "{handler}");
        assert_eq!(exit_code(&r.status_json().await), "7", "{handler}");
        // Killed by a signal on the TTY: 128+9.
        let cmd = ["sh", "-c", "kill -9 $$"];
        let r = remote(
            &exec_url(&mut rt, &main, &cmd, false, true).await,
            V4,
            tty,
            None,
        )
        .await;
        assert_eq!(exit_code(&r.status_json().await), "137", "{handler}");
        // Success, and the resize.
        let cmd = ["sh", "-c", "sleep 1; busybox stty size"];
        let r = remote(
            &exec_url(&mut rt, &main, &cmd, false, true).await,
            V4,
            tty,
            None,
        )
        .await;
        r.resize(81, 19).await;
        assert_eq!(r.out().await.trim(), "19 81", "{handler}");
        assert_eq!(
            r.status().await,
            br#"{"metadata":{},"status":"Success"}"#,
            "{handler}"
        );
        // Without a TTY the runtime runs in the foreground.
        let cmd = ["sh", "-c", "echo out; exit 3"];
        let r = remote(
            &exec_url(&mut rt, &main, &cmd, false, false).await,
            V4,
            OUT,
            None,
        )
        .await;
        assert_eq!(r.out().await, "out\n", "{handler}");
        assert_eq!(exit_code(&r.status_json().await), "3", "{handler}");
        // A client that vanishes: its process is killed (and reaped), with and without a
        // TTY (the helper, or the foreground runtime).
        for (with_tty, secs) in [(true, "4331"), (false, "4332")] {
            let secs = format!("{secs}{}", u8::from(handler == "crun"));
            let r = remote(
                &exec_url(&mut rt, &main, &["sleep", &secs], false, with_tty).await,
                V4,
                if with_tty { tty } else { OUT },
                None,
            )
            .await;
            let pid = one_pid(&["sleep", &secs]).await;
            drop(r);
            assert!(
                reaped(pid).await,
                "{handler} tty={with_tty}: the exec'd sleep outlived its client"
            );
            let ok = node::wait_until(Duration::from_secs(10), || async {
                pids_with_args(&["exec", main.as_str()]).is_empty()
            })
            .await;
            assert!(
                ok,
                "{handler} tty={with_tty}: a runtime exec process is left"
            );
        }
        let ok = node::wait_until(Duration::from_secs(10), || async {
            zombie_children().is_empty()
        })
        .await;
        assert!(ok, "{handler}: unreaped children {:?}", zombie_children());
        remove_pod(&mut rt, &pod).await;
    }
    s.node.stop().await;
    drop(s.guard);
}

/// `[streaming] tls_cert_file`/`tls_key_file`: the URLs are https, served with the configured
/// certificate (trusted through the test CA); a client that does not trust it gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spdy_exec_over_tls() {
    let test = "spdy_exec_over_tls";
    if !can_run(test) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let s = setup(|c| {
        c.streaming.tls_cert_file = cert.clone();
        c.streaming.tls_key_file = key.clone();
    })
    .await;
    let mut rt = s.node.client();
    let pod_cfg = pod_config("tls", &s.dir.path().join("logs"));
    let pod = run_pod(&mut rt, &pod_cfg, "").await;
    s.guard.sandbox(&pod);
    let main = run_container(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", &s.image, "exec sleep 300", false, false),
    )
    .await;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    for c in tokio_rustls::rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let trusting = TlsConnector::from(Arc::new(
        tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));

    let url = exec_url(
        &mut rt,
        &main,
        &["sh", "-c", "echo secret; exit 4"],
        false,
        false,
    )
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let r = remote(&url, V4, OUT, Some(trusting)).await;
    assert_eq!(r.out().await, "secret\n");
    assert_eq!(exit_code(&r.status_json().await), "4");

    // A client without the CA fails the handshake.
    let url = exec_url(&mut rt, &main, &["echo", "x"], false, false).await;
    let rest = url.strip_prefix("https://").unwrap();
    let host = &rest[..rest.find('/').unwrap()];
    let untrusting = TlsConnector::from(Arc::new(
        tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
            .with_no_client_auth(),
    ));
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    assert!(
        untrusting.connect(name, tcp).await.is_err(),
        "an untrusted certificate was accepted"
    );
    // Plain HTTP to the TLS port gets no upgrade.
    let plain = url.replacen("https://", "http://", 1);
    let upgraded = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let path = &plain[plain.find(host).unwrap() + host.len()..];
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {V4}\r\n\r\n"
        );
        let _ = tcp.write_all(req.as_bytes()).await;
        let mut buf = vec![0u8; 512];
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).contains(" 101 ")
    })
    .await
    .unwrap_or(false);
    assert!(!upgraded, "plain HTTP was upgraded on the TLS port");

    remove_pod(&mut rt, &pod).await;
    s.node.stop().await;
    drop(s.guard);
}
