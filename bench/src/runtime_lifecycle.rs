//! `berth-bench runtime`: create + start + wait + delete of a trivial busybox container, with
//! berth-runtime, runc and crun side by side in one run, interleaved round-robin per iteration so
//! that drift in the machine's load hits every runtime alike.
//!
//! Per step, the time is taken from just before the runtime command is spawned to the return of
//! `wait4` on it, and the peak RSS is that `wait4`'s `ru_maxrss`. "wait" is the time from the
//! return of `start` to the exit of the container's init, seen through a pidfd (this process is
//! a child subreaper, as a shim is, so the orphaned init is reaped here and its exit code
//! checked). "cycle" is the wall time of the four steps together.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::bundle;
use crate::host::HostLoad;
use crate::stats::Summary;
use crate::sys;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured iterations per runtime.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub iterations: usize,
    /// Unmeasured iterations per runtime first.
    #[arg(short = 'w', long, default_value_t = 10)]
    pub warmup: usize,
    /// berth-runtime binary [default: berth-runtime beside this binary].
    #[arg(long)]
    pub berth: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/runc")]
    pub runc: PathBuf,
    #[arg(long, default_value = "/usr/bin/crun")]
    pub crun: PathBuf,
    /// Which runtimes to compare (the first one is the base of the ratios).
    #[arg(long, value_delimiter = ',', default_value = "berth,runc,crun")]
    pub runtimes: Vec<RuntimeKind>,
    /// The static busybox that becomes the container's rootfs.
    #[arg(long, default_value = "/bin/busybox")]
    pub busybox: PathBuf,
    /// Where the bundle and the runtimes' --root directories are made (a temp dir inside).
    #[arg(long, default_value = "/run")]
    pub workdir: PathBuf,
    /// Limit for one step (runtime command or container exit), seconds.
    #[arg(long, default_value_t = 30)]
    pub step_timeout: u64,
    /// A runtime that failed this many iterations is dropped from the rest of the run.
    #[arg(long, default_value_t = 20)]
    pub max_failures: usize,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Berth,
    Runc,
    Crun,
}

impl RuntimeKind {
    fn name(self) -> &'static str {
        match self {
            Self::Berth => "berth",
            Self::Runc => "runc",
            Self::Crun => "crun",
        }
    }
}

const STEPS: [&str; 5] = ["cycle", "create", "start", "wait", "delete"];
/// Steps that run a runtime process, whose peak RSS is recorded.
const RSS_STEPS: [&str; 3] = ["create", "start", "delete"];

/// One successful iteration, durations in ms.
#[derive(Debug, Clone, Default)]
struct Sample {
    ms: BTreeMap<&'static str, f64>,
    rss_kib: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Failure {
    iteration: String,
    step: &'static str,
    error: String,
}

struct Runtime {
    kind: RuntimeKind,
    path: PathBuf,
    version: String,
    root: PathBuf,
    stderr: PathBuf,
    samples: Vec<Sample>,
    failures: Vec<Failure>,
    excluded: Option<String>,
}

impl Runtime {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs one runtime command, timed; a non-zero exit is an error carrying its stderr.
    fn step(
        &self,
        step: &'static str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<sys::Measured, String> {
        let mut cmd = self.cmd();
        cmd.args(args);
        let log = File::create(&self.stderr).map_err(|e| format!("create stderr file: {e}"))?;
        let m = sys::run_measured(cmd, log, timeout).map_err(|e| format!("spawn: {e}"))?;
        if m.timed_out {
            return Err(format!("{step} took longer than {}s", timeout.as_secs()));
        }
        if m.code != 0 {
            let err = fs::read_to_string(&self.stderr).unwrap_or_default();
            let tail: String = err.trim().chars().rev().take(400).collect();
            let tail: String = tail.chars().rev().collect();
            return Err(format!("exit code {}: {}", m.code, tail));
        }
        Ok(m)
    }

    /// Best-effort removal of a container after a failure; not timed.
    fn force_delete(&self, id: &str, timeout: Duration) {
        let _ = self.step("delete", &["delete", "--force", id], timeout);
    }
}

#[derive(Debug, Serialize)]
struct RuntimeReport {
    name: &'static str,
    path: PathBuf,
    version: String,
    excluded: Option<String>,
    succeeded: usize,
    failed: usize,
    /// The first failures, with the step and the runtime's error.
    failures: Vec<Failure>,
    /// Per step, milliseconds.
    ms: BTreeMap<&'static str, Option<Summary>>,
    /// Per step that runs a runtime process, peak RSS in KiB.
    peak_rss_kib: BTreeMap<&'static str, Option<Summary>>,
}

#[derive(Debug, Serialize)]
struct Ratio {
    mean: Option<f64>,
    median: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    container_args: Vec<&'static str>,
    iterations: usize,
    warmup: usize,
    base: &'static str,
    host_before: HostLoad,
    host_after: HostLoad,
    notes: Vec<String>,
    runtimes: Vec<RuntimeReport>,
    /// other / base, per other runtime and step: above 1 means the base is faster.
    time_ratios: BTreeMap<&'static str, BTreeMap<&'static str, Ratio>>,
    /// other / base of the median peak RSS, per other runtime and step.
    rss_ratios: BTreeMap<&'static str, BTreeMap<&'static str, Option<f64>>>,
}

const CONTAINER_ARGS: [&str; 1] = ["/bin/true"];

pub fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the runtime benchmark creates containers: run it as root");
    }
    if args.runtimes.is_empty() {
        bail!("--runtimes: name at least one runtime");
    }
    let host_before = HostLoad::now();
    let mut notes = Vec::new();
    if let Some(note) = workdir_note(&args.workdir) {
        notes.push(note);
    }
    let timeout = Duration::from_secs(args.step_timeout.max(1));
    sys::become_subreaper().context("become a child subreaper")?;

    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in(&args.workdir)
        .with_context(|| format!("temp dir in {}", args.workdir.display()))?;
    let bundle = bundle::busybox(
        &work.path().join("bundle"),
        &args.busybox,
        &args.runc,
        &CONTAINER_ARGS,
    )?;

    let mut runtimes = Vec::new();
    let mut seen = Vec::new();
    for &kind in &args.runtimes {
        if seen.contains(&kind) {
            continue;
        }
        seen.push(kind);
        let path = match kind {
            RuntimeKind::Berth => match &args.berth {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .context("locate this binary")?
                    .with_file_name("berth-runtime"),
            },
            RuntimeKind::Runc => args.runc.clone(),
            RuntimeKind::Crun => args.crun.clone(),
        };
        let root = work.path().join(format!("root-{}", kind.name()));
        fs::create_dir_all(&root)?;
        let mut rt = Runtime {
            kind,
            version: version(&path),
            path,
            stderr: work.path().join(format!("stderr-{}", kind.name())),
            root,
            samples: Vec::new(),
            failures: Vec::new(),
            excluded: None,
        };
        if !rt.path.is_file() {
            rt.excluded = Some(format!("{} not found", rt.path.display()));
        }
        runtimes.push(rt);
    }
    if seen.contains(&RuntimeKind::Crun) {
        if let Some(note) = hugetlb_note() {
            notes.push(note);
        }
    }

    let prefix = format!("bb{}", std::process::id());
    let result = measure(&args, &bundle, &prefix, &mut runtimes, timeout);
    for rt in &runtimes {
        cleanup(rt, timeout);
    }
    sys::reap_zombies();
    result?;

    let host_after = HostLoad::now();
    let report = report(&args, runtimes, host_before, host_after, notes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    drop(work);
    Ok(())
}

fn measure(
    args: &Args,
    bundle: &Path,
    prefix: &str,
    runtimes: &mut [Runtime],
    timeout: Duration,
) -> Result<()> {
    let bundle = bundle.to_str().context("bundle path is not UTF-8")?;
    // One unmeasured cycle each first: a runtime that cannot run the bundle at all is reported
    // once, with its error, instead of failing every iteration.
    for rt in runtimes.iter_mut().filter(|r| r.excluded.is_none()) {
        let id = format!("{prefix}-{}-check", rt.kind.name());
        if let Err(f) = cycle(rt, bundle, &id, timeout) {
            rt.excluded = Some(format!("check run failed at {}: {}", f.step, f.error));
        }
    }
    let total = args.warmup + args.iterations;
    let n = runtimes.len();
    for i in 0..total {
        let measured = i >= args.warmup;
        if !args.json && (i + 1) % 50 == 0 {
            eprintln!("runtime lifecycle: iteration {}/{total}", i + 1);
        }
        // Rotate who goes first, so that no runtime always follows the same one.
        for k in 0..n {
            let rt = &mut runtimes[(i + k) % n];
            if rt.excluded.is_some() {
                continue;
            }
            let id = format!("{prefix}-{}-{i}", rt.kind.name());
            match cycle(rt, bundle, &id, timeout) {
                Ok(s) if measured => rt.samples.push(s),
                Ok(_) => {}
                Err(mut f) => {
                    f.iteration = if measured {
                        (i - args.warmup).to_string()
                    } else {
                        format!("warmup {i}")
                    };
                    rt.failures.push(f);
                    if rt.failures.len() >= args.max_failures.max(1) {
                        rt.excluded = Some(format!(
                            "dropped after {} failed iterations",
                            rt.failures.len()
                        ));
                    }
                }
            }
            sys::reap_zombies();
        }
    }
    Ok(())
}

/// One create → start → wait → delete; on failure the container is force-deleted.
fn cycle(rt: &Runtime, bundle: &str, id: &str, timeout: Duration) -> Result<Sample, Failure> {
    let fail = |step, error| Failure {
        iteration: String::new(),
        step,
        error,
    };
    let pid_file = rt.root.join(format!("{id}.pid"));
    let pid_file_s = pid_file.to_string_lossy().into_owned();
    let mut s = Sample::default();
    let t0 = Instant::now();

    let r = rt.step(
        "create",
        &["create", "--bundle", bundle, "--pid-file", &pid_file_s, id],
        timeout,
    );
    let m = match r {
        Ok(m) => m,
        Err(e) => {
            rt.force_delete(id, timeout);
            return Err(fail("create", e));
        }
    };
    record(&mut s, "create", &m);
    let after_create = || -> Result<(i32, std::os::fd::OwnedFd), String> {
        let text = fs::read_to_string(&pid_file).map_err(|e| format!("read pid file: {e}"))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("pid file holds {text:?}"))?;
        let fd = sys::pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?;
        Ok((pid, fd))
    };
    let (pid, pidfd) = match after_create() {
        Ok(x) => x,
        Err(e) => {
            rt.force_delete(id, timeout);
            return Err(fail("create", e));
        }
    };
    let _ = fs::remove_file(&pid_file);

    match rt.step("start", &["start", id], timeout) {
        Ok(m) => record(&mut s, "start", &m),
        Err(e) => {
            rt.force_delete(id, timeout);
            sys::reap_zombies();
            return Err(fail("start", e));
        }
    }

    let t_wait = Instant::now();
    match sys::wait_readable(&pidfd, timeout) {
        Ok(true) => {}
        Ok(false) => {
            rt.force_delete(id, timeout);
            sys::reap_zombies();
            return Err(fail(
                "wait",
                format!("init {pid} still runs after {}s", timeout.as_secs()),
            ));
        }
        Err(e) => {
            rt.force_delete(id, timeout);
            return Err(fail("wait", format!("poll pidfd of {pid}: {e}")));
        }
    }
    // The orphaned init is our child (subreaper) unless the runtime left a parent for it.
    let code = sys::reap(pid);
    s.ms.insert("wait", ms(t_wait.elapsed()));
    if let Some(code) = code.filter(|&c| c != 0) {
        rt.force_delete(id, timeout);
        return Err(fail("wait", format!("container exited with {code}")));
    }

    match rt.step("delete", &["delete", id], timeout) {
        Ok(m) => record(&mut s, "delete", &m),
        Err(e) => {
            rt.force_delete(id, timeout);
            return Err(fail("delete", e));
        }
    }
    s.ms.insert("cycle", ms(t0.elapsed()));
    Ok(s)
}

fn record(s: &mut Sample, step: &'static str, m: &sys::Measured) {
    s.ms.insert(step, ms(m.elapsed));
    s.rss_kib.insert(step, m.max_rss_kib as f64);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Force-deletes whatever the runtime still knows under its root (every container directory),
/// then removes the root.
fn cleanup(rt: &Runtime, timeout: Duration) {
    let Ok(entries) = fs::read_dir(&rt.root) else {
        return;
    };
    for e in entries.flatten().take(10_000) {
        if e.path().is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            rt.force_delete(&name, timeout);
        }
    }
    let _ = fs::remove_dir_all(&rt.root);
}

fn version(path: &Path) -> String {
    Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// On a node /run is a tmpfs; elsewhere the runtimes' state writes (and any fsync) hit a disk.
fn workdir_note(dir: &Path) -> Option<String> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let fs = nix::sys::statfs::statfs(dir).ok()?;
    (fs.filesystem_type().0 as i64 != TMPFS_MAGIC).then(|| {
        format!(
            "{} is not a tmpfs (as /run is on a node): the runtimes' state directories are on \
             disk here",
            dir.display()
        )
    })
}

/// Debian's crun refuses v1-hybrid cgroups while the hugetlb controller sits on cgroup2.
fn hugetlb_note() -> Option<String> {
    if !Path::new("/sys/fs/cgroup/unified").is_dir() {
        return None;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let on_v1 = mountinfo.lines().any(|l| {
        l.split(" - ")
            .nth(1)
            .is_some_and(|tail| tail.starts_with("cgroup ") && tail.contains("hugetlb"))
    });
    (!on_v1).then(|| {
        "hugetlb is not mounted on cgroup v1 here, and crun refuses hybrid cgroups then; \
         scripts/install-deps mounts it"
            .to_owned()
    })
}

fn report(
    args: &Args,
    runtimes: Vec<Runtime>,
    host_before: HostLoad,
    host_after: HostLoad,
    notes: Vec<String>,
) -> Report {
    let base = runtimes[0].kind.name();
    let mut reports = Vec::new();
    for rt in runtimes {
        let column = |step: &str, of_rss: bool| -> Vec<f64> {
            rt.samples
                .iter()
                .filter_map(|s| {
                    if of_rss {
                        s.rss_kib.get(step).copied()
                    } else {
                        s.ms.get(step).copied()
                    }
                })
                .collect()
        };
        reports.push(RuntimeReport {
            name: rt.kind.name(),
            path: rt.path.clone(),
            version: rt.version.clone(),
            excluded: rt.excluded.clone(),
            succeeded: rt.samples.len(),
            failed: rt.failures.len(),
            failures: rt.failures.iter().take(10).cloned().collect(),
            ms: STEPS
                .iter()
                .map(|&st| (st, Summary::of(&column(st, false))))
                .collect(),
            peak_rss_kib: RSS_STEPS
                .iter()
                .map(|&st| (st, Summary::of(&column(st, true))))
                .collect(),
        });
    }
    let mut time_ratios = BTreeMap::new();
    let mut rss_ratios = BTreeMap::new();
    let b = &reports[0];
    for o in &reports[1..] {
        let div = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        };
        let t = STEPS
            .iter()
            .map(|&st| {
                let (os, bs) = (o.ms[st], b.ms[st]);
                (
                    st,
                    Ratio {
                        mean: div(os.map(|s| s.mean), bs.map(|s| s.mean)),
                        median: div(os.map(|s| s.median), bs.map(|s| s.median)),
                    },
                )
            })
            .collect();
        let r = RSS_STEPS
            .iter()
            .map(|&st| {
                let (os, bs) = (o.peak_rss_kib[st], b.peak_rss_kib[st]);
                (st, div(os.map(|s| s.median), bs.map(|s| s.median)))
            })
            .collect();
        time_ratios.insert(o.name, t);
        rss_ratios.insert(o.name, r);
    }
    Report {
        benchmark: "runtime_lifecycle",
        container_args: CONTAINER_ARGS.to_vec(),
        iterations: args.iterations,
        warmup: args.warmup,
        base,
        host_before,
        host_after,
        notes,
        runtimes: reports,
        time_ratios,
        rss_ratios,
    }
}

fn print_tables(r: &Report) {
    println!(
        "runtime lifecycle: create + start + wait + delete of a busybox container running {}; \
         {} iterations after {} warmups, runtimes interleaved",
        r.container_args.join(" "),
        r.iterations,
        r.warmup
    );
    println!("host before: {}", r.host_before.describe());
    println!("host after:  {}", r.host_after.describe());
    for n in &r.notes {
        println!("note: {n}");
    }
    println!();
    for rt in &r.runtimes {
        print!(
            "{:<6} {} — {} ok, {} failed",
            rt.name, rt.version, rt.succeeded, rt.failed
        );
        match &rt.excluded {
            Some(why) => println!(" — EXCLUDED: {why}"),
            None => println!(),
        }
        for f in &rt.failures {
            println!(
                "    failure (iteration {}, {}): {}",
                f.iteration, f.step, f.error
            );
        }
    }
    println!();
    println!(
        "{:<7} {:<6} {:>9} {:>9} {:>9} {:>9}   {:>12}",
        "step", "", "mean ms", "median", "p95", "stddev", "peak RSS KiB"
    );
    for st in STEPS {
        for rt in &r.runtimes {
            let Some(s) = rt.ms[st] else { continue };
            let rss = rt
                .peak_rss_kib
                .get(st)
                .copied()
                .flatten()
                .map(|s| format!("{:.0}", s.median))
                .unwrap_or_default();
            println!(
                "{:<7} {:<6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}   {:>12}",
                st, rt.name, s.mean, s.median, s.p95, s.stddev, rss
            );
        }
    }
    if r.time_ratios.is_empty() {
        return;
    }
    println!();
    println!(
        "ratios other/{} (above 1: {} is faster / smaller), time by median (mean)",
        r.base, r.base
    );
    let others: Vec<&str> = r.time_ratios.keys().copied().collect();
    print!("{:<11}", "step");
    for o in &others {
        print!(" {:>18}", format!("{o}/{}", r.base));
    }
    println!();
    let f = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for st in STEPS {
        print!("{st:<11}");
        for o in &others {
            let ratio = &r.time_ratios[o][st];
            print!(
                " {:>18}",
                format!("{} ({})", f(ratio.median), f(ratio.mean))
            );
        }
        println!();
    }
    for st in RSS_STEPS {
        print!("{:<11}", format!("rss {st}"));
        for o in &others {
            print!(" {:>18}", f(r.rss_ratios[o][st]));
        }
        println!();
    }
}
