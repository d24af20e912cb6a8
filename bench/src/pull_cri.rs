//! `berth-bench pull-cri`: PullImage through each daemon's CRI socket, berthd vs containerd's
//! CRI plugin, both private to the run (the pods benchmark's daemons, [`crate::pod_daemon`]),
//! pulling from one private `docker-registry` on 127.0.0.1 — the same tonic ImageService client
//! and the same request for both.
//!
//! Images of several shapes ([`Shape`]) in gzip and zstd are built and pushed first. Each
//! iteration then pulls an image that is absent from the daemon: after every pull the image
//! is removed through the CRI (RemoveImage) and the bench waits until the daemon's content
//! store and snapshotter hold no more than at its start; a daemon whose store does not get
//! there (its GC kept something) is restarted on a fresh root. Who pulls first alternates. With
//! `--cold`, caches are dropped before every pull.
//!
//! Per shape and compression: wall time of PullImage (client side, from the request to the
//! reply), the daemon's CPU time and peak RSS during it, and containerd/berth ratios of the
//! medians (above 1: berth is faster or smaller).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cri_api::v1 as cri;
use cri_api::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

use test_registry::RegistryConfig;

use crate::fixture_files::TreeStats;
use crate::host::HostLoad;
use crate::image_fixture::{self, require_tools, Compression, Shape};
use crate::pod_daemon::{containerd_version, Daemon, Kind};
use crate::pull_cri_report::{report, Group, Sample, Side};
use crate::scratch_fs::ScratchFs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured pulls per side, shape and compression.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub runs: usize,
    /// Unmeasured pulls per side, shape and compression first.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub warmup: usize,
    /// Image shapes to pull (big: ~1 GB, off by default).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "small-files,large-files"
    )]
    pub shapes: Vec<Shape>,
    /// Layer compressions to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "gzip,zstd")]
    pub variants: Vec<Compression>,
    /// Drop the page cache, dentries and inodes (`echo 3 > /proc/sys/vm/drop_caches`) before
    /// every pull: the registry's files too, and the daemons' own code pages.
    #[arg(long)]
    pub cold: bool,
    /// Where the registry, the fixtures and both daemons' roots live (a temp dir inside): both
    /// daemons unpack onto this filesystem.
    #[arg(long, default_value = "/var/tmp")]
    pub workdir: PathBuf,
    /// berthd binary [default: berthd beside this binary].
    #[arg(long)]
    pub berthd: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/containerd")]
    pub containerd: PathBuf,
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub registry: PathBuf,
    /// Limit for one PullImage, seconds.
    #[arg(long, default_value_t = 600)]
    pub pull_timeout: u64,
    /// How long a daemon may take, after RemoveImage, to empty its store (else it is restarted
    /// on a fresh root), seconds.
    #[arg(long, default_value_t = 120)]
    pub gc_timeout: u64,
    /// Put the registry, the fixtures and both daemons' roots on a private ext4 of this many
    /// GiB (a sparse image file in the workdir, loop-mounted), so that a daemon's syncfs
    /// flushes the benchmark's writes only, not those of everything else writing to the
    /// workdir's filesystem.
    #[arg(long, value_name = "GIB")]
    pub own_fs: Option<u64>,
    /// Keep the temp dir (the daemons' logs and roots, the registry) after the run; the
    /// daemons are stopped and their mounts removed all the same (with --own-fs, its image
    /// goes too).
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: Args) -> Result<()> {
    let berthd = match &args.berthd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary's dir")?
            .join("berthd"),
    };
    for (tool, hint) in [
        (
            &berthd,
            "cargo build --release -p cri-server -p runtime -p berth-pause -p cni",
        ),
        (&args.containerd, "scripts/install-deps"),
        (&args.registry, "scripts/install-deps"),
    ] {
        if !tool.exists() {
            bail!("{} is missing ({hint})", tool.display());
        }
    }
    require_tools(&["umoci", "skopeo"])?;
    if !nix::unistd::geteuid().is_root() {
        bail!("pull-cri runs two daemons that mount overlays: run it as root");
    }
    if args.cold {
        fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/vm/drop_caches")
            .context("--cold: /proc/sys/vm/drop_caches is not writable")?;
    }
    if args.runs == 0 || args.shapes.is_empty() || args.variants.is_empty() {
        bail!("nothing to measure: -n, --shapes and --variants must not be empty");
    }
    fs::create_dir_all(&args.workdir)?;
    let work = tempfile::Builder::new()
        .prefix("bpc")
        .rand_bytes(4)
        .tempdir_in(&args.workdir)
        .context("create the workdir")?;
    let scratch = match args.own_fs {
        Some(gib) => Some(ScratchFs::create(work.path(), gib)?),
        None => None,
    };
    let w = scratch
        .as_ref()
        .map_or_else(|| work.path().to_owned(), |s| s.mnt.clone());
    let w = w.as_path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // SIGINT / SIGTERM: stop between steps, then clean up as on any error.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(tokio::sync::Notify::new());
    rt.spawn(on_signal(stop.clone(), stopped.clone()));

    let before = HostLoad::now();
    let reg = RegistryConfig::in_dir(&w.join("registry"))
        .binary(&args.registry)
        .start()?;
    let mut groups = Vec::new();
    let fx = w.join("fx");
    fs::create_dir_all(&fx)?;
    for &shape in &args.shapes {
        eprintln!("building the {} image…", shape.name());
        let layout = image_fixture::build(&fx, shape, &stop)?;
        for &compression in &args.variants {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let reference = format!("{}/bench/{}:{}", reg.host, shape.name(), compression.name());
            eprintln!("pushing {reference}…");
            layout.push(&reference, compression)?;
            groups.push(Group {
                shape,
                compression,
                compressed_bytes: image_fixture::compressed_size(&reference)?,
                layers: layout.layers,
                tree: layout.tree,
                reference,
                load_before: None,
                load_after: None,
                sides: [Side::default(), Side::default()],
            });
        }
        fs::remove_dir_all(&layout.path)?;
    }
    let measured = rt.block_on(async {
        tokio::select! {
            r = measure(&args, &berthd, w, &reg.host, &mut groups) => r,
            _ = stopped.notified() => Err(anyhow!("interrupted")),
        }
    });
    drop(reg);
    drop(scratch);
    let after = HostLoad::now();
    if args.keep {
        eprintln!("kept {}", work.keep().display());
    }
    measured?;
    report(
        &args,
        &containerd_version(&args.containerd),
        &groups,
        &before,
        &after,
    );
    Ok(())
}

async fn on_signal(stop: Arc<AtomicBool>, stopped: Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    eprintln!("{name}: stopping and cleaning up…");
    stop.store(true, Ordering::Relaxed);
    stopped.notify_one();
}

async fn measure(
    args: &Args,
    berthd: &Path,
    work: &Path,
    registry: &str,
    groups: &mut [Group],
) -> Result<()> {
    let mut subjects = [
        Subject::start(Kind::Berth, berthd, work, registry).await?,
        Subject::start(Kind::Containerd, &args.containerd, work, registry).await?,
    ];
    for g in groups.iter_mut() {
        eprintln!(
            "{} {}: {} warmup + {} pulls per side…",
            g.shape.name(),
            g.compression.name(),
            args.warmup,
            args.runs
        );
        g.load_before = Some(HostLoad::now());
        for i in 0..args.warmup + args.runs {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for s in order {
                let sub = &mut subjects[s];
                let side = &mut g.sides[s];
                if let Err(e) = sub.ensure_absent(&g.reference, args).await {
                    side.failures.push(format!("before the pull: {e:#}"));
                    continue;
                }
                prepare(args.cold)?;
                let warm = i < args.warmup;
                match sub.pull(&g.reference, args.pull_timeout).await {
                    Ok(mut sample) => {
                        sample.removal_secs = sub.remove(&g.reference, args).await;
                        eprintln!(
                            "  {:<10}{} {:.2} s (daemon cpu {:.2} s, {:.2} s of it system, peak rss {:.0} MiB)",
                            sub.kind.name(),
                            if warm { " (warmup)" } else { "" },
                            sample.secs,
                            sample.cpu_secs,
                            sample.sys_secs,
                            sample.peak_rss_kib as f64 / 1024.0
                        );
                        if !warm {
                            side.samples.push(sample);
                        }
                    }
                    Err(e) => {
                        eprintln!("  {}: pull failed: {e:#}", sub.kind.name());
                        side.failures.push(format!("{e:#}"));
                        sub.remove(&g.reference, args).await;
                    }
                }
                side.peak_is_lifetime |= !sub.peak_reset;
            }
        }
        g.load_after = Some(HostLoad::now());
        for (side, sub) in g.sides.iter_mut().zip(&mut subjects) {
            side.restarts = std::mem::take(&mut sub.restarts);
        }
    }
    Ok(())
}

/// Flushes what earlier pulls and removals left dirty (so that it is not written back during
/// the next pull), and for a cold pull drops the caches.
fn prepare(cold: bool) -> Result<()> {
    nix::unistd::sync();
    if cold {
        fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches")?;
    }
    Ok(())
}

/// One daemon under test, its ImageService client, and what its store held at its start.
struct Subject {
    kind: Kind,
    bin: PathBuf,
    work: PathBuf,
    registry: String,
    daemon: Daemon,
    images: ImageServiceClient<Channel>,
    /// Entries in the blob dir and in the snapshots dir right after the start.
    baseline: (usize, usize),
    /// Fresh roots so far (the first start is generation 0).
    generation: usize,
    /// Restarts on a fresh root because removal left the store fuller than at the start.
    restarts: usize,
    /// Whether the last peak-RSS reset (clear_refs) worked.
    peak_reset: bool,
}

impl Subject {
    async fn start(kind: Kind, bin: &Path, work: &Path, registry: &str) -> Result<Subject> {
        let (daemon, images, baseline) =
            launch(kind, bin, &dir_of(kind, work, 0), registry).await?;
        Ok(Subject {
            kind,
            bin: bin.to_owned(),
            work: work.to_owned(),
            registry: registry.to_owned(),
            daemon,
            images,
            baseline,
            generation: 0,
            restarts: 0,
            peak_reset: true,
        })
    }

    /// Stops the daemon, removes its root and starts it again on a fresh one.
    async fn restart(&mut self) -> Result<()> {
        let old = self.daemon.dir.clone();
        self.generation += 1;
        let dir = dir_of(self.kind, &self.work, self.generation);
        let (daemon, images, baseline) = launch(self.kind, &self.bin, &dir, &self.registry).await?;
        // Dropping the old one stops it and removes its mounts; then its files go.
        let _ = std::mem::replace(&mut self.daemon, daemon);
        let _ = fs::remove_dir_all(&old);
        self.images = images;
        self.baseline = baseline;
        self.restarts += 1;
        Ok(())
    }

    fn pid(&self) -> Result<i32> {
        let pid = self.daemon.pid().context("daemon not running")? as i32;
        Ok(pid)
    }

    /// One PullImage, timed from the request to the reply, with the daemon's CPU time and
    /// peak RSS over it.
    async fn pull(&mut self, reference: &str, timeout_secs: u64) -> Result<Sample> {
        let pid = self.pid()?;
        self.peak_reset = fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let cpu0 = cpu_secs(pid)?;
        let req = cri::PullImageRequest {
            image: Some(spec(reference)),
            ..Default::default()
        };
        let t = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(timeout_secs),
            self.images.pull_image(req),
        )
        .await;
        let secs = t.elapsed().as_secs_f64();
        let cpu1 = cpu_secs(pid)?;
        let peak = status_kib(pid, "VmHWM:");
        let dirty = meminfo_kib("Dirty:");
        match reply {
            Err(_) => bail!("PullImage {reference}: no reply in {timeout_secs} s"),
            Ok(Err(s)) => bail!("PullImage {reference}: {:?}: {}", s.code(), s.message()),
            Ok(Ok(r)) if r.get_ref().image_ref.is_empty() => {
                bail!("PullImage {reference}: empty image_ref")
            }
            Ok(Ok(_)) => {}
        }
        Ok(Sample {
            secs,
            cpu_secs: (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1),
            sys_secs: cpu1.1 - cpu0.1,
            peak_rss_kib: peak,
            dirty_kib: dirty,
            removal_secs: None,
        })
    }

    /// RemoveImage, then waits until the daemon's store is back to its start; returns how long
    /// that took, or None (with the daemon restarted on a fresh root) if it did not get there.
    async fn remove(&mut self, reference: &str, args: &Args) -> Option<f64> {
        let t = Instant::now();
        let removed = self
            .images
            .remove_image(cri::RemoveImageRequest {
                image: Some(spec(reference)),
            })
            .await;
        if let Err(s) = &removed {
            eprintln!(
                "  {}: RemoveImage {reference}: {:?}: {}",
                self.kind.name(),
                s.code(),
                s.message()
            );
        }
        match self.wait_empty(reference, args.gc_timeout).await {
            Ok(()) => Some(t.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!(
                    "  {}: {e:#}; restarting it on a fresh root",
                    self.kind.name()
                );
                if let Err(e) = self.restart().await {
                    eprintln!("  {}: restart failed: {e:#}", self.kind.name());
                }
                None
            }
        }
    }

    /// The image must be unknown and the store back to its start before a pull.
    async fn ensure_absent(&mut self, reference: &str, args: &Args) -> Result<()> {
        if self.wait_empty(reference, 0).await.is_ok() {
            return Ok(());
        }
        if self.remove(reference, args).await.is_some() {
            return Ok(());
        }
        self.wait_empty(reference, 0).await
    }

    async fn wait_empty(&mut self, reference: &str, timeout_secs: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(timeout_secs);
        loop {
            let status = self
                .images
                .image_status(cri::ImageStatusRequest {
                    image: Some(spec(reference)),
                    verbose: false,
                })
                .await
                .map_err(|s| anyhow!("ImageStatus {reference}: {:?}: {}", s.code(), s.message()))?
                .into_inner();
            let now = store_count(&self.daemon);
            if status.image.is_none() && now.0 <= self.baseline.0 && now.1 <= self.baseline.1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "after RemoveImage {reference}: image {}, {} blobs and {} snapshots (at start: {} and {}) after {timeout_secs} s",
                    if status.image.is_some() { "still listed" } else { "gone" },
                    now.0,
                    now.1,
                    self.baseline.0,
                    self.baseline.1
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn dir_of(kind: Kind, work: &Path, generation: usize) -> PathBuf {
    let tag = match kind {
        Kind::Berth => 'b',
        Kind::Containerd => 'c',
    };
    work.join(format!("{tag}{generation}"))
}

async fn launch(
    kind: Kind,
    bin: &Path,
    dir: &Path,
    registry: &str,
) -> Result<(Daemon, ImageServiceClient<Channel>, (usize, usize))> {
    let daemon = match kind {
        Kind::Berth => Daemon::berthd(dir, bin, registry).await?,
        // No pod runs here: containerd never pulls its sandbox image.
        Kind::Containerd => {
            let pause = format!("{registry}/bench/pause:unused");
            Daemon::containerd(dir, bin, registry, &pause).await?
        }
    };
    let images = ImageServiceClient::new(daemon.channel().await?);
    let baseline = store_count(&daemon);
    Ok((daemon, images, baseline))
}

fn spec(reference: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: reference.into(),
        ..Default::default()
    }
}

/// Entries in the daemon's blob dir and snapshots dir.
fn store_count(d: &Daemon) -> (usize, usize) {
    let [blobs, snapshots] = match d.kind {
        Kind::Berth => [d.dir.join("r/content/sha256"), d.dir.join("r/snapshots")],
        Kind::Containerd => {
            let root = d.dir.join("root");
            [
                root.join("io.containerd.content.v1.content/blobs/sha256"),
                root.join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
            ]
        }
    };
    let count = |p: &Path| fs::read_dir(p).map_or(0, |r| r.count());
    (count(&blobs), count(&snapshots))
}

/// User and system CPU time of a process (all its threads), seconds.
fn cpu_secs(pid: i32) -> Result<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("daemon {pid} is gone"))?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    match f[..] {
        [user, sys] => Ok((user as f64 / tck, sys as f64 / tck)),
        _ => bail!("/proc/{pid}/stat: no utime and stime"),
    }
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: i32, field: &str) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// A `kB` field of /proc/meminfo.
fn meminfo_kib(field: &str) -> u64 {
    kib_field("/proc/meminfo", field)
}

fn kib_field(file: &str, field: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a group's image holds, for the report.
pub fn describe_tree(layers: usize, t: &TreeStats) -> String {
    let text = if t.text_files > 0 {
        format!(", {}% of them text", t.text_files * 100 / t.files.max(1))
    } else {
        String::new()
    };
    format!(
        "{layers} layers, {} files{text}, {} symlinks, {} dirs (depth {}), {:.1} MiB of files",
        t.files,
        t.symlinks,
        t.dirs,
        t.max_depth,
        t.bytes as f64 / (1 << 20) as f64
    )
}
