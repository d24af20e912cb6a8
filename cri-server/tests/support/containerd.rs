//! Test support for comparing berthd with containerd: a private containerd (Debian's
//! /usr/bin/containerd) with only its CRI plugin in use, configured by the test — its own
//! root, state, gRPC socket and runc root under a temp dir, a sandbox image from the test's
//! registry, that registry reached through a certs.d `hosts.toml` (plain HTTP), Debian's CNI
//! plugins (/usr/lib/cni) on a test-owned bridge and /24, runc through io.containerd.runc.v2
//! with the cgroupfs driver — and a pause image built from berth's static `berth-pause`.
//!
//! berthd runs the same way beside it: its binary as a process, on its own temp dir, with
//! berth's CNI plugins on another test-owned bridge and /24 and the same certs.d.
//!
//! A [`Daemon`] is stopped by PID on drop; whatever it left behind is removed then too:
//! containers and shims (by the PIDs in their state dirs, then the OCI runtime's `delete
//! --force`), mounts under the temp dir, the network namespaces the test registered, the
//! test's cgroup tree and the bridge.

#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use test_registry::containerd::{write_plain_http_hosts, CriConfig};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub const CONTAINERD: &str = "/usr/bin/containerd";
pub const RUNC: &str = "/usr/sbin/runc";
pub const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
pub const CNI_BIN: &str = "/usr/lib/cni";

/// Whether containerd, its runc shim, runc and the reference CNI plugins are installed;
/// prints why the test skips when not.
pub fn installed(test: &str) -> bool {
    for p in [
        CONTAINERD,
        SHIM,
        RUNC,
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
    ] {
        if !Path::new(p).exists() {
            eprintln!("SKIP {test}: {p} is not installed (scripts/install-deps installs it)");
            return false;
        }
    }
    true
}

/// An OCI layout under `work` with tag `v1`: `berth-pause` as `/pause`, its entrypoint.
pub fn build_pause(work: &Path, berth_pause: &Path) -> PathBuf {
    let layout = work.join("pause-layout");
    let src = work.join("pause-rootfs");
    fs::create_dir_all(&src).unwrap();
    fs::copy(berth_pause, src.join("pause")).unwrap();
    let img = format!("{}:v1", layout.display());
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&src)
        .arg("/"));
    run(Command::new("umoci").args(["config", "--image", &img, "--config.entrypoint", "/pause"]));
    layout
}

/// A certs.d directory (containerd's hosts.toml layout) that marks `host` as plain HTTP.
pub fn write_hosts_dir(dir: &Path, host: &str) {
    write_plain_http_hosts(dir, host).expect("write hosts.toml");
}

/// A bridge network for the CNI plugins in `bin` (`bridge`, `host-local`, `loopback`, or
/// berth's `berth-cni-*`): no masquerade, IPAM data under `ipam_dir`.
pub fn conflist(
    name: &str,
    bridge: &str,
    prefix: &str,
    plugin_prefix: &str,
    ipam_dir: &Path,
) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": format!("{plugin_prefix}bridge"),
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": format!("{plugin_prefix}host-local"),
                    "dataDir": ipam_dir,
                    "ranges": [[{ "subnet": format!("{prefix}.0/24"), "gateway": format!("{prefix}.1") }]]
                }
            },
            { "type": format!("{plugin_prefix}loopback") }
        ]
    })
    .to_string()
}

/// Which daemon a [`Daemon`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Berthd,
    Containerd,
}

/// A daemon of the comparison — berthd (the binary, berth's CNI plugins) or containerd (its
/// CRI plugin, runc, Debian's CNI plugins) — on a temp dir with a test-owned bridge and /24;
/// stopped by PID and cleaned up on drop.
pub struct Daemon {
    pub kind: Kind,
    child: Option<Child>,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub bridge: String,
    /// The /24's first three octets.
    pub prefix: String,
    /// The cgroup tree (relative to each hierarchy) the test puts its pods under.
    pub cgroup_parent: String,
    /// Network namespaces of the test's pods outside `dir` (removed on drop if still there).
    pub netns: Mutex<Vec<PathBuf>>,
}

impl Daemon {
    /// Starts berthd (`bin`; berth-shim, berth-runtime, berth-pause and berth's CNI plugins
    /// beside it) on `dir` (the shims' sockets too, in `dir/sockets`); waits (at most 30 s)
    /// until its CRI answers Version.
    pub async fn berthd(dir: &Path, bin: &Path, registry_host: &str, n: u32) -> Daemon {
        let mut d = Daemon::new(Kind::Berthd, dir, n);
        let bin_dir = bin.parent().unwrap();
        d.write_net("berth-cni-");
        write_hosts_dir(&dir.join("certs.d"), registry_host);
        let config = format!(
            "root = \"{dir}/r\"\nstate = \"{dir}/s\"\nlisten = \"{sock}\"\nshim_socket_dir = \"{dir}/sockets\"\n\n[registry]\nconfig_path = \"{dir}/certs.d\"\n\n[cni]\nconf_dir = \"{dir}/net.d\"\nbin_dirs = [\"{bins}\"]\n",
            dir = dir.display(),
            sock = d.sock.display(),
            bins = bin_dir.display(),
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(dir.join("daemon.log")).unwrap()))
            .spawn()
            .expect("start berthd");
        d.child = Some(child);
        d.wait_ready().await;
        d
    }

    /// Starts containerd on `dir` with `sandbox_image` from `registry_host`; waits (at most
    /// 30 s) until its CRI answers Version.
    pub async fn containerd(
        dir: &Path,
        registry_host: &str,
        sandbox_image: &str,
        n: u32,
    ) -> Daemon {
        let mut d = Daemon::new(Kind::Containerd, dir, n);
        d.write_net("");
        let certs = dir.join("certs.d");
        write_hosts_dir(&certs, registry_host);
        let config = CriConfig {
            dir,
            socket: &d.sock,
            sandbox_image,
            runc: Path::new(RUNC),
            cni_bin: Path::new(CNI_BIN),
            certs_d: &certs,
            // Fresh stats for the metrics the comparison reads (berth-bench keeps containerd's
            // default 10 s: it measures containerd as a node runs it).
            stats_collect_period: 1,
        }
        .toml();
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(dir.join("daemon.log")).unwrap()))
            .spawn()
            .expect("start containerd");
        d.child = Some(child);
        d.wait_ready().await;
        d
    }

    fn new(kind: Kind, dir: &Path, n: u32) -> Daemon {
        let pid = std::process::id();
        let tag = match kind {
            Kind::Berthd => 'b',
            Kind::Containerd => 'c',
        };
        Daemon {
            kind,
            child: None,
            dir: dir.to_owned(),
            sock: dir.join("cri.sock"),
            bridge: format!("b{tag}{}x{n}", pid % 10000),
            prefix: format!(
                "10.{}.{}",
                if kind == Kind::Berthd { 230 } else { 240 } + n,
                pid % 250
            ),
            cgroup_parent: format!("berthcmp{pid}{tag}{n}"),
            netns: Mutex::new(Vec::new()),
        }
    }

    fn write_net(&self, plugin_prefix: &str) {
        let net_d = self.dir.join("net.d");
        fs::create_dir_all(&net_d).unwrap();
        fs::write(
            net_d.join("10-test.conflist"),
            conflist(
                &format!("cmp-test-{}", self.bridge),
                &self.bridge,
                &self.prefix,
                plugin_prefix,
                &self.dir.join("ipam"),
            ),
        )
        .unwrap();
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.sock.exists() {
                if let Ok(Ok(ch)) =
                    tokio::time::timeout(Duration::from_secs(2), connect(&self.sock)).await
                {
                    let v = RuntimeServiceClient::new(ch)
                        .version(cri::VersionRequest::default())
                        .await;
                    if v.is_ok() {
                        return;
                    }
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|ch| ch.try_wait()) {
                panic!("{:?} exited with {status}: {}", self.kind, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{:?}'s CRI did not come up in 30 s: {}",
                self.kind,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        tokio::time::timeout(Duration::from_secs(10), connect(&self.sock))
            .await
            .expect("connect within 10 s")
            .expect("connect to the daemon's socket")
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Dirs holding the `init.pid` and `shim.pid` of the daemon's containers and shims.
    pub fn pid_dirs(&self) -> Vec<PathBuf> {
        let subdirs = |p: PathBuf| -> Vec<PathBuf> {
            fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect()
        };
        match self.kind {
            Kind::Containerd => subdirs(self.dir.join("state/io.containerd.runtime.v2.task"))
                .into_iter()
                .flat_map(subdirs)
                .collect(),
            Kind::Berthd => ["containers", "sandboxes"]
                .iter()
                .flat_map(|k| subdirs(self.dir.join("s").join(k)))
                .map(|d| d.join("shim"))
                .collect(),
        }
    }

    /// Stops the daemon by PID: SIGTERM, SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// containerd's shims: the processes it started with `-address <our socket>` (they
    /// outlive containerd; their pid files are not where the container's are).
    pub fn containerd_shims(&self) -> Vec<i32> {
        if self.kind != Kind::Containerd {
            return Vec::new();
        }
        let needle = format!("-address\0{}\0", self.sock.display());
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .collect()
    }

    fn cleanup(&mut self) {
        self.stop();
        for pid in self.containerd_shims() {
            eprintln!("cleanup: kill containerd shim {pid}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Container inits and shims, by the PIDs in their state dirs.
        for d in self.pid_dirs() {
            for file in ["init.pid", "shim.pid"] {
                if let Some(pid) = fs::read_to_string(d.join(file))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .filter(|p| *p > 1)
                {
                    eprintln!("cleanup: kill {} {pid}", d.join(file).display());
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // The OCI runtimes' records (and the cgroups they made).
        let runtime_roots = match self.kind {
            Kind::Containerd => self.dir.join("runc"),
            Kind::Berthd => self.dir.join("s/runtimes"),
        };
        for ns in fs::read_dir(&runtime_roots).into_iter().flatten().flatten() {
            // containerd: `runc/<namespace>`; berthd: `s/runtimes/<handler>`.
            let bin = match self.kind {
                Kind::Berthd if ns.file_name() != "runc" => berth_runtime(),
                _ => PathBuf::from(RUNC),
            };
            for c in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let _ = Command::new(&bin)
                    .arg("--root")
                    .arg(ns.path())
                    .args(["delete", "--force"])
                    .arg(c.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let prefix = self.dir.to_string_lossy().into_owned();
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
        for ns in self.netns.lock().unwrap().iter() {
            if ns.exists() {
                eprintln!("cleanup: netns {}", ns.display());
                let _ = nix::mount::umount2(ns, nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_file(ns);
            }
        }
        remove_cgroup_tree(&self.cgroup_parent);
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// berth-runtime beside the test binary's target dir.
fn berth_runtime() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("berth-runtime")
}

/// rmdir's `rel` and its sub-cgroups (deepest first) in every cgroup hierarchy; bounded.
pub fn remove_cgroup_tree(rel: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for h in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let top = h.path().join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top];
        let mut i = 0;
        while i < dirs.len() {
            for e in fs::read_dir(&dirs[i]).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A gRPC channel over the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}
