//! berthd in-process for the streaming tests, with a hook to change its config (TLS for the
//! streaming server), and the helpers they share: exec URLs, process lookups by command line, a
//! test CA.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_cri::config::Config;
use berth_cri::server;
use cri_api::v1 as cri;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use test_registry::tls::TestCa;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub use super::calls::Rt;

/// berthd serving on `dir` with `tweak` applied to its config; stopped by [`StreamingNode::stop`].
pub struct StreamingNode {
    pub channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StreamingNode {
    pub async fn start(
        dir: &Path,
        bin_dir: &Path,
        insecure: &[String],
        tweak: impl FnOnce(&mut Config),
    ) -> StreamingNode {
        let mut config = Config {
            root: dir.join("root"),
            state: dir.join(super::pods::STATE_DIR),
            listen: dir.join("berth.sock"),
            // The shims' sockets in the test's own dir, removed with it.
            shim_socket_dir: dir.join("sockets"),
            ..Config::default()
        };
        config.registry.insecure = insecure.to_vec();
        config.cni.conf_dir = dir.join("net.d");
        tweak(&mut config);
        let config = config
            .with_detected_runtimes(Some(bin_dir))
            .expect("config");
        let listener = server::bind(&config.listen).expect("bind");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(Arc::new(config), listener, async {
                let _ = rx.await;
            })
            .await
            .expect("berthd serves");
        });
        let path = dir.join("berth.sock");
        let channel = tokio::time::timeout(
            Duration::from_secs(10),
            Endpoint::try_from("http://[::]:50051")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                })),
        )
        .await
        .expect("connect within 10 s")
        .expect("connect to the CRI socket");
        StreamingNode {
            channel,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn client(&self) -> Rt {
        RuntimeServiceClient::new(self.channel.clone())
    }

    /// Shuts berthd down (containers keep running under their shims).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("berthd stops within 30 s")
                .expect("berthd task ends cleanly");
        }
    }
}

impl Drop for StreamingNode {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub async fn exec_url(rt: &mut Rt, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    rt.exec(cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    })
    .await
    .expect("Exec")
    .into_inner()
    .url
}

/// PIDs of live (non-zombie) processes whose command line is exactly `args`.
pub fn pids_running(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want)
                && !is_zombie(*pid)
        })
        .collect()
}

pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

/// PIDs of processes (any state) whose command line contains every one of `words`.
pub fn pids_with_args(words: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                words.iter().all(|w| args.contains(&w.as_bytes()))
            })
        })
        .collect()
}

/// Zombie children of this (test) process: processes berthd forked and never reaped.
pub fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ").is_some_and(|(_, r)| {
                    let mut f = r.split(' ');
                    f.next() == Some("Z") && f.next() == Some(me.as_str())
                })
            })
        })
        .collect()
}

/// A test CA and a server certificate for 127.0.0.1 signed by it (test-registry's, made with
/// openssl). Returns (ca.pem, server.pem, server.key).
pub fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new(dir).expect("make a test CA");
    let server = ca
        .server_cert("server", &["IP:127.0.0.1"])
        .expect("make a server certificate");
    (ca.cert, server.cert, server.key)
}
