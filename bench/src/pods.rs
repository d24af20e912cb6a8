//! `berth-bench pods`: pod start and teardown through the CRI, berthd vs containerd + runc,
//! both private to the run and driven by this process as the kubelet would drive them.
//!
//! - start: RunPodSandbox + CreateContainer + StartContainer, until ContainerStatus says the
//!   container runs (a BestEffort pod on a CNI bridge network, one `sleep` container);
//!   teardown: StopPodSandbox + RemovePodSandbox.
//! - sequential: `-n` pods one after the other per side, interleaved (who goes first
//!   alternates); at once: `--concurrent` pods started together (then torn down together),
//!   `--rounds` times per side, alternating.
//! - memory: each daemon's RSS and PSS idle (images pulled, no pod) and with `--memory-pods`
//!   pods running, and its shims' (berth-shim: one per container and per sandbox;
//!   containerd-shim-runc-v2: one per pod).
//!
//! Ratios are containerd/berth of the medians: above 1, berth is faster or smaller.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::host::HostLoad;
use crate::pod_cri::{Client, StartTimes};
use crate::pod_daemon::{containerd_version, memory_of, Daemon, Memory};
use crate::pod_fixture::Fixture;
use crate::stats::Summary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured sequential pods per side.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub iterations: usize,
    /// Unmeasured pods per side first.
    #[arg(short = 'w', long, default_value_t = 2)]
    pub warmup: usize,
    /// Pods started at once.
    #[arg(long, default_value_t = 20)]
    pub concurrent: usize,
    /// Rounds of `--concurrent` pods per side.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Pods running while the daemons' memory is read.
    #[arg(long, default_value_t = 50)]
    pub memory_pods: usize,
    /// Keep the memory pods running this long after the reading, their daemon's and shims'
    /// PIDs printed, to look into them by hand (/proc/PID/smaps).
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Where everything of the run lives (a short temp dir inside: berth-shim's socket paths
    /// must fit in 108 bytes).
    #[arg(long, default_value = "/run")]
    pub workdir: PathBuf,
    /// berthd binary [default: berthd beside this binary].
    #[arg(long)]
    pub berthd: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/containerd")]
    pub containerd: PathBuf,
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub registry: PathBuf,
}

/// One side's samples.
#[derive(Default)]
struct Side {
    start: Vec<f64>,
    /// The sequential starts per call: RunPodSandbox, CreateContainer, StartContainer.
    start_run: Vec<f64>,
    start_create: Vec<f64>,
    start_start: Vec<f64>,
    teardown: Vec<f64>,
    /// Per round: wall time to start `--concurrent` pods, and to tear them down.
    burst_start: Vec<f64>,
    burst_teardown: Vec<f64>,
    /// Each pod's start latency within the bursts.
    burst_pod_start: Vec<f64>,
    idle: Memory,
    loaded: Memory,
    shims: Memory,
    failures: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let berthd = match &args.berthd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary's dir")?
            .join("berthd"),
    };
    for tool in [&berthd, &args.containerd, &args.registry] {
        if !tool.exists() {
            bail!(
                "{} is missing (scripts/install-deps; cargo build --release -p cri-server)",
                tool.display()
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("bp")
        .rand_bytes(4)
        .tempdir_in(&args.workdir)
        .context("create the workdir")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let before = HostLoad::now();
    let sides = rt.block_on(bench(&args, &berthd, work.path()))?;
    let after = HostLoad::now();
    report(&args, &sides, &before, &after);
    Ok(())
}

async fn bench(args: &Args, berthd: &std::path::Path, work: &std::path::Path) -> Result<[Side; 2]> {
    eprintln!("building the fixture images…");
    let pause = berthd.with_file_name("berth-pause");
    let fx = Fixture::build(&work.join("fx"), &args.registry, &pause)?;
    // berthd's state is `<work>/b/s`: short, for the shims' sockets.
    let daemons = [
        Daemon::berthd(&work.join("b"), berthd, &fx.host).await?,
        Daemon::containerd(&work.join("c"), &args.containerd, &fx.host, &fx.pause).await?,
    ];
    let mut clients = Vec::new();
    for d in &daemons {
        let c = Client::new(d, &fx.image).await?;
        c.pull(&fx.image).await?;
        if d.kind == crate::pod_daemon::Kind::Containerd {
            // berthd's pause image is built in; containerd pulls its sandbox image.
            c.pull(&fx.pause).await?;
        }
        clients.push(c);
    }
    let mut sides = [Side::default(), Side::default()];
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (s, d) in sides.iter_mut().zip(&daemons) {
        s.idle = d.memory();
    }
    let result = measure(args, &clients, &daemons, &mut sides).await;
    for c in &clients {
        match c.remove_all().await {
            Ok(0) => {}
            Ok(n) => eprintln!("{}: removed {n} leftover pods", c.name),
            Err(e) => eprintln!("{}: removing leftover pods: {e:#}", c.name),
        }
    }
    drop(daemons);
    result?;
    Ok(sides)
}

async fn measure(
    args: &Args,
    clients: &[Client],
    daemons: &[Daemon; 2],
    sides: &mut [Side; 2],
) -> Result<()> {
    let mut n = 0usize;
    let mut name = |i: usize| {
        n += 1;
        format!("p{i}x{n}")
    };
    eprintln!(
        "sequential: {} warmup + {} pods per side…",
        args.warmup, args.iterations
    );
    for i in 0..args.warmup + args.iterations {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            match cycle(&clients[s], &name(s)).await {
                Ok((start, teardown)) if i >= args.warmup => {
                    sides[s].start.push(ms(start.total));
                    sides[s].start_run.push(ms(start.run));
                    sides[s].start_create.push(ms(start.create));
                    sides[s].start_start.push(ms(start.start));
                    sides[s].teardown.push(ms(teardown));
                }
                Ok(_) => {}
                Err(e) => sides[s].failures.push(format!("sequential: {e:#}")),
            }
        }
    }
    eprintln!(
        "at once: {} rounds of {} pods per side…",
        args.rounds, args.concurrent
    );
    for r in 0..args.rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            let names: Vec<String> = (0..args.concurrent).map(|_| name(s)).collect();
            let t = Instant::now();
            let started = burst_start(&clients[s], &names).await;
            let wall_start = t.elapsed();
            let mut pods = Vec::new();
            for r in started {
                match r {
                    Ok((pod, d)) => {
                        sides[s].burst_pod_start.push(ms(d.total));
                        pods.push(pod);
                    }
                    Err(e) => sides[s].failures.push(format!("at once: {e:#}")),
                }
            }
            let t = Instant::now();
            let failed = burst_teardown(&clients[s], &pods).await;
            let wall_teardown = t.elapsed();
            sides[s].failures.extend(failed);
            if pods.len() == args.concurrent {
                sides[s].burst_start.push(ms(wall_start));
                sides[s].burst_teardown.push(ms(wall_teardown));
            }
        }
    }
    eprintln!("memory: {} pods per side…", args.memory_pods);
    for s in 0..2 {
        let names: Vec<String> = (0..args.memory_pods).map(|_| name(s)).collect();
        let mut pods = Vec::new();
        for chunk in names.chunks(10) {
            for r in burst_start(&clients[s], chunk).await {
                match r {
                    Ok((pod, _)) => pods.push(pod),
                    Err(e) => sides[s].failures.push(format!("memory: {e:#}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        sides[s].loaded = daemons[s].memory();
        sides[s].shims = memory_of(&daemons[s].shim_pids());
        if args.hold_secs > 0 {
            eprintln!(
                "memory: holding {} pods of {} for {} s: daemon pid {:?}, shim pids {:?}",
                pods.len(),
                daemons[s].kind.name(),
                args.hold_secs,
                daemons[s].pid(),
                daemons[s].shim_pids()
            );
            tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
        }
        for chunk in pods.chunks(10) {
            let failed = burst_teardown(&clients[s], chunk).await;
            sides[s].failures.extend(failed);
        }
        if pods.len() != args.memory_pods {
            sides[s].failures.push(format!(
                "memory: only {} of {} pods ran",
                pods.len(),
                args.memory_pods
            ));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn cycle(c: &Client, name: &str) -> Result<(StartTimes, Duration)> {
    let (pod, start) = c.start_pod(name).await?;
    let teardown = c.teardown(&pod).await?;
    Ok((start, teardown))
}

async fn burst_start(c: &Client, names: &[String]) -> Vec<Result<(String, StartTimes)>> {
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let (c, n) = (c.clone(), n.clone());
            tokio::spawn(async move { c.start_pod(&n).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(e.into())));
    }
    out
}

/// Tears the pods down together; returns the failures.
async fn burst_teardown(c: &Client, pods: &[String]) -> Vec<String> {
    let tasks: Vec<_> = pods
        .iter()
        .map(|p| {
            let (c, p) = (c.clone(), p.clone());
            tokio::spawn(async move { c.teardown(&p).await })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("teardown: {e:#}")),
            Err(e) => failures.push(format!("teardown task: {e}")),
        }
    }
    failures
}

fn report(args: &Args, sides: &[Side; 2], before: &HostLoad, after: &HostLoad) {
    println!(
        "pod start (RunPodSandbox + CreateContainer + StartContainer → running) and teardown (StopPodSandbox + RemovePodSandbox): berthd vs containerd {} + runc",
        containerd_version(&args.containerd)
    );
    println!(
        "{} sequential pods per side after {} warmup, {} rounds of {} at once, memory with {} pods",
        args.iterations, args.warmup, args.rounds, args.concurrent, args.memory_pods
    );
    println!("before: {}", before.describe());
    println!("after:  {}", after.describe());
    println!(
        "\n  {:<34} {:>12} {:>12} {:>12} {:>12}  {:>16}",
        "", "berth med", "berth p95", "ctrd med", "ctrd p95", "containerd/berth"
    );
    let row = |label: &str, f: &dyn Fn(&Side) -> &Vec<f64>, unit: &str| {
        let (b, c) = (Summary::of(f(&sides[0])), Summary::of(f(&sides[1])));
        let cell = |s: &Option<Summary>, p95: bool| {
            s.map_or("-".to_owned(), |s| {
                format!("{:.1} {unit}", if p95 { s.p95 } else { s.median })
            })
        };
        let ratio = match (b, c) {
            (Some(b), Some(c)) if b.median > 0.0 => format!("{:.2}x", c.median / b.median),
            _ => "-".to_owned(),
        };
        println!(
            "  {:<34} {:>12} {:>12} {:>12} {:>12}  {:>16}",
            label,
            cell(&b, false),
            cell(&b, true),
            cell(&c, false),
            cell(&c, true),
            ratio
        );
    };
    row("start, sequential", &|s| &s.start, "ms");
    row("  RunPodSandbox", &|s| &s.start_run, "ms");
    row("  CreateContainer", &|s| &s.start_create, "ms");
    row("  StartContainer (+ status)", &|s| &s.start_start, "ms");
    row("teardown, sequential", &|s| &s.teardown, "ms");
    let at_once = format!("{} at once", args.concurrent);
    row(&format!("start {at_once}: wall"), &|s| &s.burst_start, "ms");
    row(
        &format!("start {at_once}: each pod"),
        &|s| &s.burst_pod_start,
        "ms",
    );
    row(
        &format!("teardown {at_once}: wall"),
        &|s| &s.burst_teardown,
        "ms",
    );
    println!(
        "\n  {:<34} {:>12} {:>12} {:>12} {:>12}  {:>16}",
        "memory (MiB)", "berth RSS", "berth PSS", "ctrd RSS", "ctrd PSS", "containerd/berth"
    );
    // MiB of a measurement divided by `per`.
    let mib = |m: Memory, per: usize| {
        let per = per.max(1) as f64;
        (
            m.rss_kib as f64 / 1024.0 / per,
            m.pss_kib as f64 / 1024.0 / per,
        )
    };
    let mem = |label: &str, (br, bp): (f64, f64), (cr, cp): (f64, f64)| {
        let ratio = if br > 0.0 && bp > 0.0 {
            format!("{:.2}x RSS, {:.2}x PSS", cr / br, cp / bp)
        } else {
            "-".to_owned()
        };
        println!(
            "  {:<34} {:>12.2} {:>12.2} {:>12.2} {:>12.2}  {:>16}",
            label, br, bp, cr, cp, ratio
        );
    };
    let (b, c) = (&sides[0], &sides[1]);
    mem("daemon, idle", mib(b.idle, 1), mib(c.idle, 1));
    mem(
        &format!("daemon, {} pods", args.memory_pods),
        mib(b.loaded, 1),
        mib(c.loaded, 1),
    );
    mem(
        &format!(
            "one shim ({} berth, {} containerd)",
            b.shims.processes, c.shims.processes
        ),
        mib(b.shims, b.shims.processes),
        mib(c.shims, c.shims.processes),
    );
    println!(
        "  {:<34} {:>12.2} {:>12} {:>12.2} {:>12}",
        "largest shim",
        b.shims.max_rss_kib as f64 / 1024.0,
        "",
        c.shims.max_rss_kib as f64 / 1024.0,
        ""
    );
    mem(
        "shims per pod",
        mib(b.shims, args.memory_pods),
        mib(c.shims, args.memory_pods),
    );
    mem(
        &format!("daemon + shims, {} pods", args.memory_pods),
        mib(
            Memory {
                processes: 0,
                rss_kib: b.loaded.rss_kib + b.shims.rss_kib,
                pss_kib: b.loaded.pss_kib + b.shims.pss_kib,
                max_rss_kib: 0,
            },
            1,
        ),
        mib(
            Memory {
                processes: 0,
                rss_kib: c.loaded.rss_kib + c.shims.rss_kib,
                pss_kib: c.loaded.pss_kib + c.shims.pss_kib,
                max_rss_kib: 0,
            },
            1,
        ),
    );
    for (s, name) in sides.iter().zip(["berth", "containerd"]) {
        if !s.failures.is_empty() {
            println!(
                "\n  {name}: {} failures, first: {}",
                s.failures.len(),
                s.failures[0]
            );
        }
    }
}
