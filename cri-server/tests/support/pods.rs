//! Test support for pod sandboxes: berthd's server in-process on temp dirs with a test-owned
//! CNI network (its own bridge name and /24, berth's plugins, no masquerade and no route
//! beyond the bridge), a CRI client, and a guard that removes whatever a test left behind —
//! processes (by PID from the shims' pid files), mounts under the temp dir, the pods'
//! cgroups and the bridge — also when the test fails.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_cri::config::Config;
use cri_api::v1 as cri;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::support::{connect, Server};

/// The state directory (`--state`) of the tests' berthds, under their temp dir: long on
/// purpose. Shim sockets once lived under it and overflowed sun_path (108 bytes) for any
/// state dir longer than ~15 characters (critest's first finding); every root test now runs
/// with a state dir no socket path could fit under.
pub const STATE_DIR: &str =
    "state-long-enough-that-no-unix-socket-path-under-it-would-fit-in-sun-path";

/// Binaries the server needs next to the test's target dir.
const BINARIES: &[&str] = &[
    "berth-shim",
    "berth-runtime",
    "berth-pause",
    "berth-cni-bridge",
    "berth-cni-host-local",
    "berth-cni-loopback",
];

/// `target/<profile>`: the test binary lives in its `deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// Whether the test can run here; prints why it skips when not (not counted as passed).
pub fn can_run(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP {test}: needs root (netns, bridges, mounts, cgroups)");
        return false;
    }
    for b in BINARIES {
        if !bin_dir().join(b).is_file() {
            eprintln!(
                "SKIP {test}: {} missing (cargo build -p runtime -p berth-pause -p cni --bins into the same target dir)",
                bin_dir().join(b).display()
            );
            return false;
        }
    }
    true
}

/// The test's network: bridge `bs<pid%1000><n>` on 10.<200+n>.<pid%250>.0/24.
pub struct TestNet {
    pub bridge: String,
    pub prefix: String,
    pub subnet: String,
}

impl TestNet {
    pub fn new(n: u32) -> TestNet {
        let pid = std::process::id();
        let prefix = format!("10.{}.{}", 200 + n, pid % 250);
        TestNet {
            bridge: format!("bs{}x{n}", pid % 10000),
            subnet: format!("{prefix}.0/24"),
            prefix,
        }
    }

    fn conflist(&self, data_dir: &Path) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("berth-test-{}", self.bridge),
            "plugins": [
                {
                    "type": "berth-cni-bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "berth-cni-host-local",
                        "dataDir": data_dir,
                        "ranges": [[{ "subnet": self.subnet, "gateway": format!("{}.1", self.prefix) }]]
                    }
                },
                { "type": "berth-cni-loopback" }
            ]
        })
        .to_string()
    }

    /// The host-side interfaces enslaved to the bridge.
    pub fn ports(&self) -> Vec<String> {
        fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A test's temp dir, network and server; everything is cleaned up on drop.
pub struct Pods {
    pub dir: tempfile::TempDir,
    pub net: TestNet,
    pub config: Config,
    server: Option<Server>,
}

impl Pods {
    pub async fn start(n: u32) -> Pods {
        Pods::start_with(n, |_| {}).await
    }

    /// The same, with `adjust` applied to the config first (insecure registries, a sandbox
    /// image…).
    pub async fn start_with(n: u32, adjust: impl FnOnce(&mut Config)) -> Pods {
        let mut pods = Pods::configure(n, adjust);
        pods.start_server().await;
        pods
    }

    /// The dirs, network and config, with no server started (for a berthd subprocess).
    pub fn configure(n: u32, adjust: impl FnOnce(&mut Config)) -> Pods {
        // Short paths: the shims' sockets live under <state>/sandboxes/<64 hex>/shim/.
        let dir = tempfile::Builder::new()
            .prefix("bp")
            .tempdir_in("/tmp")
            .unwrap();
        let net = TestNet::new(n);
        let conf_dir = dir.path().join("net.d");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::write(
            conf_dir.join("10-test.conflist"),
            net.conflist(&dir.path().join("ipam")),
        )
        .unwrap();
        let mut config = Config {
            root: dir.path().join("r"),
            state: dir.path().join(STATE_DIR),
            listen: dir.path().join("berth.sock"),
            // The shims' sockets in the test's own dir, removed with it.
            shim_socket_dir: dir.path().join("sockets"),
            ..Config::default()
        };
        config.cni.conf_dir = conf_dir;
        config.cni.bin_dirs = vec![bin_dir()];
        // A handler whose runtime fails every command: RunPodSandbox must undo its work.
        config.runtimes.insert(
            "broken".into(),
            berth_cri::config::RuntimeHandler {
                path: "/bin/false".into(),
                root: PathBuf::new(),
            },
        );
        adjust(&mut config);
        let config = config.with_detected_runtimes(Some(&bin_dir())).unwrap();
        Pods {
            dir,
            net,
            config,
            server: None,
        }
    }

    /// Starts berthd's server on the dirs (again).
    pub async fn start_server(&mut self) {
        self.server = Some(Server::start(self.config.clone()));
    }

    /// Stops the server; the pods keep running.
    pub async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    pub async fn client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// A channel to the CRI socket (for the image service too).
    pub async fn channel(&self) -> Channel {
        connect(&self.config.listen).await
    }

    pub fn state(&self) -> PathBuf {
        self.config.state.clone()
    }

    /// Kills by PID every shim and pause whose pid files are under the state dir, unmounts
    /// everything mounted under the temp dir, removes the pods' cgroups and the bridge.
    fn cleanup(&self) {
        let sandboxes = self.state().join("sandboxes");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&sandboxes).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            for file in ["shim/init.pid", "shim/shim.pid"] {
                if let Some(pid) = fs::read_to_string(entry.path().join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    eprintln!("cleanup: kill {file} {pid} of {id}");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            ids.push(id);
        }
        std::thread::sleep(Duration::from_millis(200));
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            eprintln!("cleanup: unmount {p}");
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        for id in &ids {
            for hierarchy in fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let pod = hierarchy.path().join("berth").join(id);
                if pod.exists() {
                    eprintln!("cleanup: remove cgroup {}", pod.display());
                    let _ = fs::remove_dir(pod.join(id));
                    let _ = fs::remove_dir(&pod);
                }
            }
        }
        if Path::new("/sys/class/net").join(&self.net.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.net.bridge])
                .status();
        }
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        // Dropping the server signals and aborts it.
        drop(self.server.take());
        self.cleanup();
    }
}

/// A pod config: `name` in namespace `test`, uid `uid-<name>`, hostname `name`.
pub fn pod(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        annotations: [("note".to_owned(), format!("pod {name}"))].into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["test.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        ..Default::default()
    }
}

/// The same with host network (and host IPC).
pub fn host_network_pod(name: &str) -> cri::PodSandboxConfig {
    let mut c = pod(name);
    c.hostname = String::new();
    c.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ipc: cri::NamespaceMode::Node as i32,
                pid: cri::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// Whether `pid` runs (not a zombie).
pub fn alive(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

/// Whether `path` is a mount point (in our mount namespace).
pub fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// Every cgroup dir of the pod, in every hierarchy.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join("berth").join(id))
        .filter(|p| p.exists())
        .collect()
}
