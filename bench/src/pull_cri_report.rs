//! What `berth-bench pull-cri` measured, and its report: per shape and compression, each
//! daemon's PullImage times, CPU time and peak RSS, and containerd/berth ratios of the medians.

use crate::fixture_files::TreeStats;
use crate::host::HostLoad;
use crate::image_fixture::{Compression, Shape};
use crate::pull_cri::Args;
use crate::stats::Summary;

/// One measured pull.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// PullImage, from the request to the reply, seconds.
    pub secs: f64,
    /// The daemon's user + system CPU time over the pull, seconds.
    pub cpu_secs: f64,
    /// The system (kernel) part of `cpu_secs`.
    pub sys_secs: f64,
    /// The daemon's peak RSS over the pull (VmHWM after resetting it), KiB.
    pub peak_rss_kib: u64,
    /// The machine's dirty page cache right after the reply (the bench syncs before every
    /// pull): what the daemon wrote and left for writeback, KiB.
    pub dirty_kib: u64,
    /// RemoveImage until the store is back to its start (None: it did not get there).
    pub removal_secs: Option<f64>,
}

/// One daemon's pulls of one image.
#[derive(Debug, Default)]
pub struct Side {
    pub samples: Vec<Sample>,
    pub failures: Vec<String>,
    /// Restarts on a fresh root because RemoveImage did not empty the store.
    pub restarts: usize,
    /// The kernel refused to reset VmHWM: the peak is the daemon's lifetime peak.
    pub peak_is_lifetime: bool,
}

impl Side {
    fn summary(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<Summary> {
        Summary::of(&self.samples.iter().filter_map(f).collect::<Vec<_>>())
    }
}

/// One image (shape × compression) and both daemons' pulls of it.
pub struct Group {
    pub shape: Shape,
    pub compression: Compression,
    pub reference: String,
    pub layers: usize,
    pub tree: TreeStats,
    /// The layers' size as the registry serves them.
    pub compressed_bytes: u64,
    pub load_before: Option<HostLoad>,
    pub load_after: Option<HostLoad>,
    /// berth, containerd.
    pub sides: [Side; 2],
}

const NAMES: [&str; 2] = ["berth", "containerd"];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn report(
    args: &Args,
    containerd: &str,
    groups: &[Group],
    before: &HostLoad,
    after: &HostLoad,
) {
    println!(
        "PullImage through the CRI socket (client side, request to reply): berthd vs containerd {containerd} (CRI plugin, overlayfs), {}",
        if args.cold {
            "cold: caches dropped before every pull"
        } else {
            "warm page cache"
        }
    );
    println!(
        "{} pulls per side after {} warmup, interleaved (who goes first alternates); the image is removed (RemoveImage, store emptied) between pulls",
        args.runs, args.warmup
    );
    match args.own_fs {
        Some(gib) => println!(
            "registry, fixtures and daemons' roots on a private {gib} GiB ext4 (loop-mounted image in {})",
            args.workdir.display()
        ),
        None => println!(
            "registry, fixtures and daemons' roots in {} (its filesystem shared with whatever else writes to it)",
            args.workdir.display()
        ),
    }
    println!("before: {}", before.describe());
    println!("after:  {}", after.describe());
    for g in groups {
        print_group(g);
    }
    println!("\nsummary (medians; containerd/berth above 1: berth is faster or smaller)");
    println!(
        "  {:<12} {:<5} {:>9} {:>9} {:>10} {:>8} {:>8} {:>11} {:>11} {:>10} {:>10}",
        "shape",
        "",
        "berth s",
        "ctrd s",
        "ctrd/berth",
        "b spread",
        "c spread",
        "berth cpu s",
        "ctrd cpu s",
        "berth MiB",
        "ctrd MiB"
    );
    for g in groups {
        let t = [
            g.sides[0].summary(|s| Some(s.secs)),
            g.sides[1].summary(|s| Some(s.secs)),
        ];
        let cpu = |i: usize| g.sides[i].summary(|s| Some(s.cpu_secs));
        let rss = |i: usize| g.sides[i].summary(|s| Some(mib(s.peak_rss_kib)));
        let cell = |s: Option<Summary>, prec: usize| {
            s.map_or("-".to_owned(), |s| format!("{:.*}", prec, s.median))
        };
        let ratio = match (t[0], t[1]) {
            (Some(b), Some(c)) if b.median > 0.0 => format!("{:.2}x", c.median / b.median),
            _ => "-".to_owned(),
        };
        println!(
            "  {:<12} {:<5} {:>9} {:>9} {:>10} {:>8} {:>8} {:>11} {:>11} {:>10} {:>10}",
            g.shape.name(),
            g.compression.name(),
            cell(t[0], 2),
            cell(t[1], 2),
            ratio,
            spread(t[0]),
            spread(t[1]),
            cell(cpu(0), 2),
            cell(cpu(1), 2),
            cell(rss(0), 0),
            cell(rss(1), 0)
        );
    }
}

/// (max − min) / median.
fn spread(s: Option<Summary>) -> String {
    s.filter(|s| s.median > 0.0).map_or("-".to_owned(), |s| {
        format!("{:.0}%", (s.max - s.min) / s.median * 100.0)
    })
}

fn print_group(g: &Group) {
    let load = match (&g.load_before, &g.load_after) {
        (Some(b), Some(a)) => format!(
            "; load average {:.2} before, {:.2} after",
            b.loadavg[0], a.loadavg[0]
        ),
        _ => String::new(),
    };
    println!(
        "\n{} {} ({}): {}; {:.1} MiB compressed{load}",
        g.shape.name(),
        g.compression.name(),
        g.reference,
        crate::pull_cri::describe_tree(g.layers, &g.tree),
        g.compressed_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  {:<11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}  failures",
        "",
        "median s",
        "mean s",
        "min s",
        "max s",
        "sd s",
        "spread",
        "cpu s",
        "sys s",
        "peak MiB",
        "dirty MiB",
        "remove s"
    );
    for (side, name) in g.sides.iter().zip(NAMES) {
        let Some(t) = side.summary(|s| Some(s.secs)) else {
            println!(
                "  {name:<11} no successful pull ({} failures)",
                side.failures.len()
            );
            continue;
        };
        let med = |s: Option<Summary>, prec: usize| {
            s.map_or("-".to_owned(), |s| format!("{:.*}", prec, s.median))
        };
        println!(
            "  {name:<11} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}  {}",
            t.median,
            t.mean,
            t.min,
            t.max,
            t.stddev,
            spread(Some(t)),
            med(side.summary(|s| Some(s.cpu_secs)), 2),
            med(side.summary(|s| Some(s.sys_secs)), 2),
            med(side.summary(|s| Some(mib(s.peak_rss_kib))), 1),
            med(side.summary(|s| Some(mib(s.dirty_kib))), 0),
            med(side.summary(|s| s.removal_secs), 2),
            side.failures.len()
        );
    }
    let [b, c] = &g.sides;
    if let (Some(bt), Some(ct)) = (b.summary(|s| Some(s.secs)), c.summary(|s| Some(s.secs))) {
        let ratio = |f: &dyn Fn(&Sample) -> f64| match (
            b.summary(|s| Some(f(s))),
            c.summary(|s| Some(f(s))),
        ) {
            (Some(b), Some(c)) if b.median > 0.0 => format!("{:.2}x", c.median / b.median),
            _ => "-".to_owned(),
        };
        println!(
            "  containerd/berth: {:.2}x median, {:.2}x mean (above 1: berth is faster); daemon CPU {}; peak RSS {}",
            ct.median / bt.median,
            ct.mean / bt.mean,
            ratio(&|s| s.cpu_secs),
            ratio(&|s| s.peak_rss_kib as f64)
        );
    }
    for (side, name) in g.sides.iter().zip(NAMES) {
        if side.restarts > 0 {
            println!(
                "  {name}: restarted on a fresh root {} times (RemoveImage left its store fuller than at its start)",
                side.restarts
            );
        }
        if side.peak_is_lifetime {
            println!(
                "  {name}: VmHWM could not be reset: its peak RSS is the daemon's lifetime peak"
            );
        }
        if let Some(first) = side.failures.first() {
            println!("  {name}: {} failures, first: {first}", side.failures.len());
        }
    }
}
