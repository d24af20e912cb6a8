//! `berth-bench pull`: pull + unpack of a multi-layer image from a local `docker-registry`,
//! berth's ImageStore vs containerd (`ctr images pull`, which unpacks into its overlayfs
//! snapshotter), side by side in one run, interleaved (who goes first alternates), each pull
//! into a fresh root (a fresh containerd daemon per containerd pull).
//!
//! The fixture is built here: `--layers` layers totalling about `--size-mb` of generated files
//! (random bytes, compressible text, many small files), made into an OCI image by umoci (gzip)
//! and pushed by skopeo as `bench:gzip` and recompressed as `bench:zstd`. Both sides find the
//! registry through the same certs.d directory whose hosts.toml marks it as plain HTTP.
//!
//! berth's side runs in a child process (this binary with `--once`), so that both sides are
//! timed the same way — from spawn to `wait4` — and so that its peak RSS (`ru_maxrss`) is its
//! own. For containerd, the client's (`ctr`) peak RSS is `ru_maxrss` and the daemon's is its
//! `VmHWM` after the pull.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use test_registry::RegistryConfig;

use crate::host::HostLoad;
use crate::image_fixture::{self, require_tools, Compression};
use crate::stats::Summary;
use crate::sys;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured pulls per side and variant.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub runs: usize,
    /// Unmeasured pulls per side and variant first.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub warmup: usize,
    /// Number of layers of the fixture image.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Approximate size of the fixture's files, MB.
    #[arg(long, default_value_t = 160)]
    pub size_mb: u64,
    /// Which layer compressions to compare.
    #[arg(long, value_delimiter = ',', default_value = "gzip,zstd")]
    pub variants: Vec<String>,
    /// Where the registry, the fixture and the pull roots live (a temp dir inside). Both
    /// sides unpack onto this filesystem.
    #[arg(long, default_value = "/var/tmp")]
    pub workdir: PathBuf,
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub registry: PathBuf,
    #[arg(long, default_value = "/usr/bin/containerd")]
    pub containerd: PathBuf,
    #[arg(long, default_value = "/usr/bin/ctr")]
    pub ctr: PathBuf,
    /// Limit for one pull, seconds.
    #[arg(long, default_value_t = 600)]
    pub pull_timeout: u64,
    /// Internal: pull `--reference` once into this ImageStore root and exit.
    #[arg(long, hide = true)]
    pub once: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub reference: Option<String>,
    #[arg(long, hide = true)]
    pub hosts_dir: Option<PathBuf>,
    /// For profiling: build and push the fixture, print the references and the certs.d
    /// directory, and keep the registry serving for this many seconds (no pulls are timed).
    #[arg(long)]
    pub serve_secs: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(root) = &args.once {
        return pull_once(root, &args);
    }
    for tool in [&args.registry, &args.containerd, &args.ctr] {
        if !tool.exists() {
            bail!("{} is not installed (scripts/install-deps)", tool.display());
        }
    }
    require_tools(&["umoci", "skopeo"])?;
    let variants = args
        .variants
        .iter()
        .map(|v| Compression::parse(v))
        .collect::<Result<Vec<_>>>()?;
    fs::create_dir_all(&args.workdir)?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-pull-")
        .tempdir_in(&args.workdir)
        .context("create workdir")?;
    let w = work.path();
    let before = HostLoad::now();
    eprintln!(
        "building the fixture ({} layers, ~{} MB)…",
        args.layers, args.size_mb
    );
    let layout = image_fixture::build_large_files(
        w,
        "bench",
        args.layers,
        args.size_mb,
        &std::sync::atomic::AtomicBool::new(false),
    )?;
    let reg = RegistryConfig::in_dir(&w.join("registry"))
        .binary(&args.registry)
        .start()?;
    let hosts_dir = w.join("certs.d");
    test_registry::containerd::write_plain_http_hosts(&hosts_dir, &reg.host)?;
    if let Some(secs) = args.serve_secs {
        for variant in &variants {
            let reference = format!("{}/bench:{}", reg.host, variant.name());
            layout.push(&reference, *variant)?;
            println!("{reference}");
        }
        println!("certs.d: {}", hosts_dir.display());
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(secs));
        return Ok(());
    }
    let mut reports = Vec::new();
    for &compression in &variants {
        let variant = compression.name();
        let reference = format!("{}/bench:{variant}", reg.host);
        layout.push(&reference, compression)?;
        let mut side = [Side::new("berth"), Side::new("containerd")];
        let total = args.warmup + args.runs;
        for i in 0..total {
            let measured = i >= args.warmup;
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for s in order {
                let dir = w.join(format!("run-{variant}-{i}-{s}"));
                let r = if s == 0 {
                    berth_pull(&args, &dir, &reference, &hosts_dir)
                } else {
                    containerd_pull(&args, &dir, &reference, &hosts_dir)
                };
                let _ = fs::remove_dir_all(&dir);
                match r {
                    Ok(sample) => {
                        eprintln!(
                            "{variant} {}{} {:.2} s",
                            side[s].name,
                            if measured { "" } else { " (warmup)" },
                            sample.secs
                        );
                        if measured {
                            side[s].samples.push(sample);
                        }
                    }
                    Err(e) => {
                        eprintln!("{variant} {}: failed: {e:#}", side[s].name);
                        side[s].failures += 1;
                    }
                }
            }
        }
        reports.push((variant, side));
    }
    let registry = reg.host.clone();
    drop(reg);
    let after = HostLoad::now();
    println!(
        "pull + unpack of {registry}/bench ({} layers, ~{} MB of files), {} runs each after {} warmup, interleaved",
        args.layers, args.size_mb, args.runs, args.warmup
    );
    println!("before: {}", before.describe());
    println!("after:  {}", after.describe());
    for (variant, side) in &reports {
        print_variant(variant, side);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    /// The puller process's peak RSS (berth's process, or ctr), KiB.
    rss_kib: u64,
    /// containerd's daemon peak RSS, KiB (0 for berth).
    daemon_rss_kib: u64,
}

struct Side {
    name: &'static str,
    samples: Vec<Sample>,
    failures: usize,
}

impl Side {
    fn new(name: &'static str) -> Self {
        Side {
            name,
            samples: Vec::new(),
            failures: 0,
        }
    }

    fn summary(&self, f: impl Fn(&Sample) -> f64) -> Option<Summary> {
        Summary::of(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
}

fn print_variant(variant: &str, side: &[Side; 2]) {
    println!("\n{variant}:");
    println!(
        "  {:<11} {:>8} {:>8} {:>8} {:>8}  {:>14} {:>16}  failures",
        "", "median s", "mean s", "min s", "max s", "peak RSS MiB", "daemon RSS MiB"
    );
    for s in side {
        let Some(t) = s.summary(|x| x.secs) else {
            println!(
                "  {:<11} no successful pull ({} failures)",
                s.name, s.failures
            );
            continue;
        };
        let rss = s
            .summary(|x| x.rss_kib as f64 / 1024.0)
            .map_or(0.0, |r| r.median);
        let daemon = s
            .summary(|x| x.daemon_rss_kib as f64 / 1024.0)
            .map_or(0.0, |r| r.median);
        let daemon = if s.name == "berth" {
            "-".to_owned()
        } else {
            format!("{daemon:.1}")
        };
        println!(
            "  {:<11} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:>14.1} {:>16}  {}",
            s.name, t.median, t.mean, t.min, t.max, rss, daemon, s.failures
        );
    }
    let (Some(b), Some(c)) = (side[0].summary(|x| x.secs), side[1].summary(|x| x.secs)) else {
        return;
    };
    let rss = |s: &Side| {
        s.summary(|x| (x.rss_kib + x.daemon_rss_kib) as f64)
            .map_or(0.0, |r| r.median)
    };
    println!(
        "  containerd/berth time: {:.2}x median, {:.2}x mean (above 1: berth is faster); memory (ctr + daemon)/berth: {:.2}x",
        c.median / b.median,
        c.mean / b.mean,
        rss(&side[1]) / rss(&side[0]).max(1.0)
    );
}

fn measured_ok(cmd: Command, log: &Path, timeout: Duration) -> Result<sys::Measured> {
    let stderr = File::create(log)?;
    let m = sys::run_measured(cmd, stderr, timeout)?;
    if m.timed_out || m.code != 0 {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        bail!(
            "exit {}{}: {tail}",
            m.code,
            if m.timed_out { " (timed out)" } else { "" }
        );
    }
    Ok(m)
}

fn berth_pull(args: &Args, dir: &Path, reference: &str, hosts: &Path) -> Result<Sample> {
    fs::create_dir_all(dir)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("pull")
        .arg("--once")
        .arg(dir.join("root"))
        .args(["--reference", reference])
        .arg("--hosts-dir")
        .arg(hosts);
    let m = measured_ok(
        cmd,
        &dir.join("berth.log"),
        Duration::from_secs(args.pull_timeout),
    )?;
    Ok(Sample {
        secs: m.elapsed.as_secs_f64(),
        rss_kib: m.max_rss_kib,
        daemon_rss_kib: 0,
    })
}

/// The `--once` child: one pull with berth's ImageStore.
fn pull_once(root: &Path, args: &Args) -> Result<()> {
    let reference: image_store::Reference = args
        .reference
        .as_deref()
        .context("--once needs --reference")?
        .parse()?;
    let mut cfg = image_store::StoreConfig::new(root);
    cfg.registry.config_path = args.hosts_dir.clone();
    let store = image_store::ImageStore::open(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(store.pull(&reference, &image_store::PullOptions::default()))?;
    Ok(())
}

fn containerd_pull(args: &Args, dir: &Path, reference: &str, hosts: &Path) -> Result<Sample> {
    let daemon = Containerd::start(&args.containerd, &args.ctr, dir)?;
    let mut cmd = Command::new(&args.ctr);
    cmd.arg("-a")
        .arg(&daemon.sock)
        .args([
            "-n",
            "bench",
            "images",
            "pull",
            "--plain-http",
            "--hosts-dir",
        ])
        .arg(hosts)
        .arg(reference);
    let m = measured_ok(
        cmd,
        &dir.join("ctr.log"),
        Duration::from_secs(args.pull_timeout),
    )?;
    let daemon_rss_kib = daemon.peak_rss_kib();
    drop(daemon);
    Ok(Sample {
        secs: m.elapsed.as_secs_f64(),
        rss_kib: m.max_rss_kib,
        daemon_rss_kib,
    })
}

/// A child process stopped by PID (SIGTERM, then SIGKILL after 10 s) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private containerd: its own root, state, socket and config; stopped on drop.
struct Containerd {
    proc: Proc,
    sock: PathBuf,
}

impl Containerd {
    fn start(bin: &Path, ctr: &Path, dir: &Path) -> Result<Self> {
        let (root, state, sock) = (dir.join("root"), dir.join("state"), dir.join("c.sock"));
        fs::create_dir_all(&root)?;
        fs::create_dir_all(&state)?;
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = \"{}\"\n\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
                root.display(),
                state.display(),
                sock.display(),
                sock.display()
            ),
        )?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(dir.join("containerd.log"))?))
            .spawn()
            .context("start containerd")?;
        let d = Containerd {
            proc: Proc(child),
            sock,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = d.sock.exists()
                && Command::new(ctr)
                    .arg("-a")
                    .arg(&d.sock)
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if up {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not come up (see {})",
                    dir.join("containerd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's VmHWM, KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.proc.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}
