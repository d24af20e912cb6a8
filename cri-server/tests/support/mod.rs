//! Test support: a real `docker-registry` on 127.0.0.1 (the test-registry crate), a busybox
//! fixture image built with umoci and pushed with skopeo, and berthd's server run in-process
//! on temp dirs and a temp socket (stopped on drop).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth_cri::config::Config;
use berth_cri::server;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/bin/busybox",
];

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the test can run here; prints why it skips when not (the test then does not count
/// as passed: it says SKIP).
pub fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root (layer owners and device nodes when unpacking)");
        return false;
    }
    for t in TOOLS {
        if !Path::new(t).exists() {
            eprintln!("SKIP {test}: {t} is not installed (scripts/install-deps installs it)");
            return false;
        }
    }
    true
}

pub fn free_port() -> u16 {
    test_registry::free_port().expect("a free port on 127.0.0.1")
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub use test_registry::Registry;

/// A `docker-registry` serving from a temp dir on a free loopback port; stopped on drop.
pub fn registry() -> Registry {
    test_registry::RegistryConfig::temp()
        .start()
        .expect("start docker-registry")
}

/// The same, requiring HTTP basic auth (htpasswd) for `user`/`password`.
pub fn registry_with_auth(user: &str, password: &str) -> Registry {
    test_registry::RegistryConfig::temp()
        .basic_auth(user, password)
        .start()
        .expect("start docker-registry")
}

/// An OCI layout under `work` with tag `v1`: busybox-static with `sh` and `ls` links, run as
/// user `1000:1000`. Returns the layout path.
pub fn build_busybox(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let src = work.join("rootfs");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", src.join("bin/ls")).unwrap();
    fs::write(src.join("etc/hostname"), b"berth\n").unwrap();
    let img = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&src)
        .arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.user",
        "1000:1000",
        "--config.cmd",
        "sh",
    ]));
    layout
}

/// Pushes `layout:tag` to `dest` (`host/repo:tag`) over plain HTTP.
pub fn push(layout: &Path, tag: &str, dest: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}")));
}

/// The config digest (the CRI image ID) of `layout:tag`.
pub fn config_digest(layout: &Path, tag: &str) -> String {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in layout");
    let hex = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest = read(layout.join("blobs/sha256").join(hex));
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

/// The manifest digest the registry serves for `image` (`host/repo:tag`).
pub fn registry_digest(image: &str, extra: &[&str]) -> String {
    run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .args(extra)
        .arg(format!("docker://{image}")))
    .trim()
    .to_owned()
}

/// berthd's CRI server in-process on `config` (its socket bound before this returns).
/// Stopped (bounded) with [`Server::stop`]; on drop (a failed test) signalled and aborted.
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        let listener = server::bind(&config.listen).expect("bind the CRI socket");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(Arc::new(config), listener, async {
                let _ = rx.await;
            })
            .await
            .expect("berthd serves");
        });
        Server {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Shuts the server down and waits (bounded) for it to end; pods and containers keep
    /// running under their shims.
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

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A channel to the CRI socket at `path` (bounded wait).
pub async fn connect(path: &Path) -> Channel {
    let path = path.to_owned();
    tokio::time::timeout(
        Duration::from_secs(10),
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    // The socket file appears at bind(2), a moment before listen(2): a
                    // connect in between is refused (seen under load). Bounded by the
                    // timeout around it.
                    loop {
                        match UnixStream::connect(&path).await {
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                tokio::time::sleep(Duration::from_millis(20)).await
                            }
                            other => return Ok::<_, std::io::Error>(TokioIo::new(other?)),
                        }
                    }
                }
            })),
    )
    .await
    .expect("connect within 10 s")
    .expect("connect to the CRI socket")
}

/// berthd's CRI server, in-process, with its root, state and socket in a temp dir.
pub struct Berthd {
    pub dir: tempfile::TempDir,
    pub channel: Channel,
    server: Server,
}

impl Berthd {
    pub async fn start(insecure: &[&str]) -> Berthd {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            listen: dir.path().join("berth.sock"),
            // The shims' sockets in the test's own dir, removed with it.
            shim_socket_dir: dir.path().join("sockets"),
            ..Config::default()
        };
        config.registry.insecure = insecure.iter().map(|h| h.to_string()).collect();
        let config = config
            .with_detected_runtimes(Some(Path::new(env!("CARGO_MANIFEST_DIR"))))
            .unwrap();
        let server = Server::start(config);
        let channel = connect(&dir.path().join("berth.sock")).await;
        Berthd {
            dir,
            channel,
            server,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Shuts the server down and waits (bounded) for it to end.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}
