//! The two daemons of the pods benchmark, each private to the run: berthd (its binary, with
//! berth-shim, berth-runtime, berth-pause and berth's CNI plugins beside it) and containerd
//! (Debian's, its CRI plugin with runc through io.containerd.runc.v2, the cgroupfs driver and
//! the reference CNI plugins), each on its own dirs, socket, bridge and /24, pulling from the
//! same registry through the same kind of certs.d. Their memory (RSS and PSS) and their
//! shims' are read from /proc. On drop, each is stopped by PID and whatever it left behind is
//! removed: containers and shims by the PIDs in their state dirs, the OCI runtime's records,
//! mounts, the pods' cgroup tree, the bridge.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cri_api::v1 as cri;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use test_registry::containerd::{write_plain_http_hosts, CriConfig};

use crate::pod_fixture::Proc;

pub const RUNC: &str = "/usr/sbin/runc";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Containerd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Containerd => "containerd",
        }
    }
}

/// Memory of a set of processes, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// The largest process's RSS (a set's sum hides an outlier).
    pub max_rss_kib: u64,
}

pub struct Daemon {
    pub kind: Kind,
    proc: Option<Proc>,
    /// Everything of this daemon lives under here (berthd's state: `<dir>/s`).
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub bridge: String,
    /// The pods' cgroup parent tree, relative to each hierarchy.
    pub cgroup_root: String,
    /// containerd's runc root, or berthd's runtimes root.
    runtime_roots: PathBuf,
}

impl Daemon {
    /// berthd pulling from the plain-HTTP registry `registry_host` (`127.0.0.1:PORT`).
    pub async fn berthd(dir: &Path, bin: &Path, registry_host: &str) -> Result<Daemon> {
        let bin_dir = bin.parent().context("berthd's dir")?;
        for helper in [
            "berth-shim",
            "berth-runtime",
            "berth-pause",
            "berth-cni-bridge",
            "berth-cni-host-local",
            "berth-cni-loopback",
        ] {
            if !bin_dir.join(helper).exists() {
                bail!(
                    "{} is missing beside berthd (cargo build --release -p cri-server -p runtime -p berth-pause -p cni)",
                    bin_dir.join(helper).display()
                );
            }
        }
        let mut d = Daemon::new(Kind::Berth, dir)?;
        d.runtime_roots = dir.join("s/runtimes");
        d.write_net("berth-cni-")?;
        write_plain_http_hosts(&dir.join("certs.d"), registry_host)?;
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "root = \"{d}/r\"\nstate = \"{d}/s\"\nlisten = \"{sock}\"\n\n[registry]\nconfig_path = \"{d}/certs.d\"\n\n[cni]\nconf_dir = \"{d}/net.d\"\nbin_dirs = [\"{bins}\"]\n",
                d = dir.display(),
                sock = d.sock.display(),
                bins = bin_dir.display()
            ),
        )?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(dir.join("daemon.log"))?))
            .spawn()
            .context("start berthd")?;
        d.proc = Some(Proc(child));
        d.wait_ready().await?;
        Ok(d)
    }

    /// containerd pulling from the plain-HTTP registry `registry_host`, its pods' sandboxes
    /// running `sandbox_image` (pulled at the first RunPodSandbox).
    pub async fn containerd(
        dir: &Path,
        bin: &Path,
        registry_host: &str,
        sandbox_image: &str,
    ) -> Result<Daemon> {
        let mut d = Daemon::new(Kind::Containerd, dir)?;
        d.runtime_roots = dir.join("runc");
        d.write_net("")?;
        let certs = dir.join("certs.d");
        write_plain_http_hosts(&certs, registry_host)?;
        let config = dir.join("config.toml");
        let toml = CriConfig {
            dir,
            socket: &d.sock,
            sandbox_image,
            runc: Path::new(RUNC),
            cni_bin: Path::new("/usr/lib/cni"),
            certs_d: &certs,
            // containerd's default, unlike the containerd_compare test's 1 s (which reads
            // fresh stats): the benchmark measures containerd as a node runs it.
            stats_collect_period: 10,
        }
        .toml();
        fs::write(&config, toml)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(dir.join("daemon.log"))?))
            .spawn()
            .context("start containerd")?;
        d.proc = Some(Proc(child));
        d.wait_ready().await?;
        Ok(d)
    }

    fn new(kind: Kind, dir: &Path) -> Result<Daemon> {
        fs::create_dir_all(dir)?;
        let pid = std::process::id();
        let tag = match kind {
            Kind::Berth => 'b',
            Kind::Containerd => 'c',
        };
        Ok(Daemon {
            kind,
            proc: None,
            dir: dir.to_owned(),
            sock: dir.join("cri.sock"),
            bridge: format!("bp{tag}{}", pid % 100_000),
            cgroup_root: format!("berthbench{pid}{tag}"),
            runtime_roots: PathBuf::new(),
        })
    }

    /// The /24 of this daemon's pods.
    fn prefix(&self) -> String {
        let pid = std::process::id();
        let second = if self.kind == Kind::Berth { 252 } else { 253 };
        format!("10.{second}.{}", pid % 250)
    }

    fn write_net(&self, plugin_prefix: &str) -> Result<()> {
        let net_d = self.dir.join("net.d");
        fs::create_dir_all(&net_d)?;
        let prefix = self.prefix();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("bench-{}", self.bridge),
            "plugins": [
                {
                    "type": format!("{plugin_prefix}bridge"),
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": format!("{plugin_prefix}host-local"),
                        "dataDir": self.dir.join("ipam"),
                        "ranges": [[{ "subnet": format!("{prefix}.0/24"), "gateway": format!("{prefix}.1") }]]
                    }
                },
                { "type": format!("{plugin_prefix}loopback") }
            ]
        });
        fs::write(net_d.join("10-bench.conflist"), conf.to_string())?;
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.sock.exists() {
                if let Ok(ch) = self.channel().await {
                    let v = tokio::time::timeout(
                        Duration::from_secs(5),
                        RuntimeServiceClient::new(ch).version(cri::VersionRequest::default()),
                    )
                    .await;
                    if matches!(v, Ok(Ok(_))) {
                        return Ok(());
                    }
                }
            }
            if self.proc.as_mut().is_some_and(Proc::exited) {
                bail!(
                    "{} exited (see {})",
                    self.kind.name(),
                    self.dir.join("daemon.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer Version in 30 s (see {})",
                    self.kind.name(),
                    self.dir.join("daemon.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn channel(&self) -> Result<Channel> {
        let path = self.sock.clone();
        let ch = tokio::time::timeout(
            Duration::from_secs(10),
            Endpoint::try_from("http://[::]:50051")?.connect_with_connector(tower::service_fn(
                move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                },
            )),
        )
        .await
        .context("connect: timed out")??;
        Ok(ch)
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.pid())
    }

    /// The daemon's own memory.
    pub fn memory(&self) -> Memory {
        self.proc
            .as_ref()
            .map_or_else(Memory::default, |p| memory_of(&[p.pid() as i32]))
    }

    /// PIDs of the shims running the daemon's pods (one per container and per sandbox for
    /// berth, from their pid files; one per pod for containerd, whose runc shim serves all of
    /// a pod's containers: the processes started with `-address <our socket>`).
    pub fn shim_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = match self.kind {
            Kind::Berth => self
                .pid_dirs()
                .iter()
                .filter_map(|d| read_pid(&d.join("shim.pid")))
                .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                .collect(),
            Kind::Containerd => {
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
        };
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Dirs that hold `init.pid` / `shim.pid` files of the daemon's containers and shims.
    fn pid_dirs(&self) -> Vec<PathBuf> {
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
            Kind::Berth => ["containers", "sandboxes"]
                .iter()
                .flat_map(|k| subdirs(self.dir.join("s").join(k)))
                .map(|d| d.join("shim"))
                .collect(),
        }
    }

    /// Removes what the daemon left: stops it, kills its containers and shims by PID, deletes
    /// the OCI runtime's records, unmounts, removes cgroups and the bridge.
    fn cleanup(&mut self) {
        drop(self.proc.take());
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let dirs = self.pid_dirs();
        for d in &dirs {
            for file in ["init.pid", "shim.pid"] {
                if let Some(pid) = read_pid(&d.join(file)).filter(|p| *p > 1) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if !dirs.is_empty() {
            eprintln!(
                "{}: cleaned up {} leftover container/shim dirs",
                self.kind.name(),
                dirs.len()
            );
        }
        let berth_runtime = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("berth-runtime")));
        for ns in fs::read_dir(&self.runtime_roots)
            .into_iter()
            .flatten()
            .flatten()
        {
            let bin = match (&self.kind, &berth_runtime) {
                (Kind::Berth, Some(b)) if ns.file_name() != "runc" => b.clone(),
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
        let prefix = self.dir.to_string_lossy().into_owned();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_cgroup_tree(&self.cgroup_root);
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

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// RSS (VmRSS) and PSS (smaps_rollup) of `pids`, summed.
pub fn memory_of(pids: &[i32]) -> Memory {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let mut m = Memory::default();
    for pid in pids {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        m.processes += 1;
        let rss = field(&status, "VmRSS:");
        m.rss_kib += rss;
        m.max_rss_kib = m.max_rss_kib.max(rss);
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        m.pss_kib += field(&rollup, "Pss:");
    }
    m
}

/// rmdir's `rel` and its sub-cgroups (deepest first) in every hierarchy; bounded.
fn remove_cgroup_tree(rel: &str) {
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

/// The version containerd reports (`containerd --version`'s third word).
pub fn containerd_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
