//! ADD + DEL latency of a pod network chain: berth's CNI plugins vs Debian's reference plugins
//! (containernetworking-plugins), the same conflist shape for both — bridge (isGateway, ipMasq,
//! hairpin) with host-local IPAM, portmap with one TCP mapping, loopback — each on a bridge,
//! /24, IPAM data dir and nft table of its own. Iterations are interleaved (who goes first
//! alternates); every plugin process is reaped with `wait4` for its peak RSS.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::host::HostLoad;
use crate::stats::Summary;
use crate::sys;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured ADD+DEL cycles per implementation.
    #[arg(short = 'n', long, default_value_t = 100)]
    iterations: u32,
    /// Unmeasured cycles first.
    #[arg(long, default_value_t = 5)]
    warmup: u32,
    /// Directory of berth's plugins (default: beside this binary).
    #[arg(long)]
    berth_bin: Option<PathBuf>,
    /// Directory of the reference plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_bin: PathBuf,
    /// Time limit of one plugin call.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

struct Impl {
    name: &'static str,
    bin: PathBuf,
    /// (type, config) of each plugin, in ADD order.
    chain: Vec<(String, Value)>,
    bridge: String,
    samples: Vec<Sample>,
    failures: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    add_ms: f64,
    del_ms: f64,
    /// Largest peak RSS of the cycle's plugin processes (KiB; a main plugin's includes the
    /// IPAM plugin it ran).
    rss_kib: f64,
}

#[derive(Debug, Serialize)]
struct ImplReport {
    name: &'static str,
    add_ms: Option<Summary>,
    del_ms: Option<Summary>,
    cycle_ms: Option<Summary>,
    peak_rss_kib: Option<Summary>,
    failures: Vec<String>,
}

fn chain(
    name: &str,
    types: [&str; 4],
    bridge: &str,
    subnet: &str,
    data: &Path,
    table: &str,
) -> Vec<(String, Value)> {
    let [br, ipam, pm, lo] = types;
    let base = |t: &str, mut v: Value| {
        v["cniVersion"] = json!("1.0.0");
        v["name"] = json!(name);
        v["type"] = json!(t);
        (t.to_owned(), v)
    };
    vec![
        base(
            br,
            json!({
                "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "nftTable": table,
                "ipam": { "type": ipam, "ranges": [[{ "subnet": subnet }]], "dataDir": data }
            }),
        ),
        base(
            pm,
            json!({
                "nftTable": table,
                "runtimeConfig": { "portMappings": [
                    { "hostPort": 39_000 + std::process::id() % 1000, "containerPort": 80, "protocol": "tcp" }
                ] }
            }),
        ),
        base(lo, json!({})),
    ]
}

/// One plugin call: returns its stdout, time and peak RSS.
fn call(
    bin: &Path,
    plugin: &str,
    cmd: &str,
    netns: &Path,
    id: &str,
    stdin: &Value,
    timeout: Duration,
) -> Result<(Vec<u8>, Duration, u64)> {
    let start = Instant::now();
    let mut child = Command::new(bin.join(plugin))
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {plugin}"))?;
    let pid = child.id() as libc::pid_t;
    let pidfd = sys::pidfd_open(pid)?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(&serde_json::to_vec(stdin)?)?;
    drop(input);
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    if !sys::wait_readable(&pidfd, timeout)? {
        let _ = child.kill();
    }
    // The std handle is not waited on: wait4 reaps the plugin and gives its rusage.
    let (status, usage) = sys::wait4(pid)?;
    let elapsed = start.elapsed();
    let out = reader.join().unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{plugin} {cmd}: exit status {status:#x}: {}",
            String::from_utf8_lossy(&out).trim()
        );
    }
    Ok((out, elapsed, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

fn cycle(im: &Impl, netns: &Path, id: &str, timeout: Duration) -> Result<Sample> {
    let mut s = Sample::default();
    let mut prev: Option<Value> = None;
    let mut rss = 0u64;
    let started = Instant::now();
    let mut add_err = None;
    for (t, conf) in &im.chain {
        let mut stdin = conf.clone();
        if let Some(p) = &prev {
            stdin["prevResult"] = p.clone();
        }
        match call(&im.bin, t, "ADD", netns, id, &stdin, timeout) {
            Ok((out, _, r)) => {
                rss = rss.max(r);
                prev = Some(serde_json::from_slice(&out).context("ADD result")?);
            }
            Err(e) => {
                add_err = Some(e);
                break;
            }
        }
    }
    s.add_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    for (t, conf) in im.chain.iter().rev() {
        let mut stdin = conf.clone();
        if let Some(p) = &prev {
            stdin["prevResult"] = p.clone();
        }
        let (_, _, r) = call(&im.bin, t, "DEL", netns, id, &stdin, timeout)?;
        rss = rss.max(r);
    }
    s.del_ms = started.elapsed().as_secs_f64() * 1e3;
    s.rss_kib = rss as f64;
    match add_err {
        Some(e) => Err(e),
        None => Ok(s),
    }
}

pub fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the CNI benchmark creates bridges and network namespaces: run it as root");
    }
    let berth_bin = match &args.berth_bin {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .to_owned(),
    };
    for (dir, p) in [
        (&berth_bin, "berth-cni-bridge"),
        (&args.reference_bin, "bridge"),
    ] {
        if !dir.join(p).exists() {
            bail!("{p} not found in {} (build with `cargo build --release -p cni -p berth-bench`; install containernetworking-plugins)", dir.display());
        }
    }
    let pid = std::process::id();
    let work = tempfile::Builder::new()
        .prefix("berth-bench-cni-")
        .tempdir_in("/run")?;
    let netns = cni::NetnsDir::new(work.path().join("netns"));
    let table = format!("berth-bench-{pid}");
    let third = 200 + pid % 50;
    let mut impls: Vec<Impl> = [
        (
            "berth",
            &berth_bin,
            [
                "berth-cni-bridge",
                "berth-cni-host-local",
                "berth-cni-portmap",
                "berth-cni-loopback",
            ],
            1,
        ),
        (
            "reference",
            &args.reference_bin,
            ["bridge", "host-local", "portmap", "loopback"],
            2,
        ),
    ]
    .into_iter()
    .map(|(name, bin, types, n)| {
        let bridge = format!("bb{}{n}", pid % 100_000);
        let subnet = format!("10.{third}.{}.0/24", 90 + n);
        let data = work.path().join(format!("ipam-{name}"));
        Impl {
            name,
            bin: bin.clone(),
            chain: chain(
                &format!("bench-{name}-{pid}"),
                types,
                &bridge,
                &subnet,
                &data,
                &table,
            ),
            bridge,
            samples: Vec::new(),
            failures: Vec::new(),
        }
    })
    .collect();
    let before = HostLoad::now();
    let timeout = Duration::from_secs(args.timeout_secs);
    let total = args.warmup + args.iterations;
    for i in 0..total {
        for k in 0..impls.len() {
            let idx = (k + i as usize) % impls.len();
            let im = &mut impls[idx];
            let name = format!("{}-{i}", im.name);
            let ns = netns.create(&name)?;
            let res = cycle(im, ns.path(), &format!("bench-{name}"), timeout);
            drop(ns);
            netns.remove(&name)?;
            match res {
                Ok(s) if i >= args.warmup => im.samples.push(s),
                Ok(_) => {}
                Err(e) => im.failures.push(format!("iteration {i}: {e:#}")),
            }
        }
    }
    let after = HostLoad::now();
    for im in &impls {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &im.bridge])
            .stderr(Stdio::null())
            .status();
    }
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", &table])
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_file(format!("/run/berth/cni/nft-{table}.lock"));
    report(&args, &impls, &before, &after)
}

fn report(args: &Args, impls: &[Impl], before: &HostLoad, after: &HostLoad) -> Result<()> {
    let reports: Vec<ImplReport> = impls
        .iter()
        .map(|im| {
            let pick =
                |f: fn(&Sample) -> f64| Summary::of(&im.samples.iter().map(f).collect::<Vec<_>>());
            ImplReport {
                name: im.name,
                add_ms: pick(|s| s.add_ms),
                del_ms: pick(|s| s.del_ms),
                cycle_ms: pick(|s| s.add_ms + s.del_ms),
                peak_rss_kib: pick(|s| s.rss_kib),
                failures: im.failures.clone(),
            }
        })
        .collect();
    let ratio = |f: fn(&ImplReport) -> Option<Summary>| -> Option<f64> {
        Some(f(&reports[1])?.median / f(&reports[0])?.median)
    };
    let ratios = json!({
        "add_median_reference_over_berth": ratio(|r| r.add_ms),
        "del_median_reference_over_berth": ratio(|r| r.del_ms),
        "cycle_median_reference_over_berth": ratio(|r| r.cycle_ms),
        "peak_rss_median_reference_over_berth": ratio(|r| r.peak_rss_kib),
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "iterations": args.iterations, "warmup": args.warmup,
                "implementations": reports, "ratios": ratios,
                "load_before": before, "load_after": after,
            }))?
        );
        return Ok(());
    }
    println!("CNI ADD+DEL (bridge+host-local, portmap, loopback): {} iterations after {} warmups, interleaved", args.iterations, args.warmup);
    println!(
        "before: {}\nafter:  {}",
        before.describe(),
        after.describe()
    );
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>14}",
        "plugins", "ADD med/p95 ms", "DEL med/p95 ms", "cycle med/p95", "peak RSS KiB"
    );
    for r in &reports {
        let f = |s: Option<Summary>| {
            s.map_or("-".to_owned(), |s| format!("{:.1}/{:.1}", s.median, s.p95))
        };
        println!(
            "{:<10} {:>16} {:>16} {:>16} {:>14}",
            r.name,
            f(r.add_ms),
            f(r.del_ms),
            f(r.cycle_ms),
            r.peak_rss_kib
                .map_or("-".to_owned(), |s| format!("{:.0}", s.median)),
        );
        for e in r.failures.iter().take(5) {
            println!("  failed: {e}");
        }
    }
    let show = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    println!(
        "ratios reference/berth of the medians (>1: berth faster/smaller): ADD {}  DEL {}  cycle {}  peak RSS {}",
        show(&ratios["add_median_reference_over_berth"]),
        show(&ratios["del_median_reference_over_berth"]),
        show(&ratios["cycle_median_reference_over_berth"]),
        show(&ratios["peak_rss_median_reference_over_berth"]),
    );
    Ok(())
}
