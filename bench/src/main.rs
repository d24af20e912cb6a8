//! berth-bench: side-by-side benchmarks of berth against the runtimes it replaces. These are
//! benchmarks, not tests: they print numbers and ratios, and judge nothing.
//!
//! One module per benchmark; each is a subcommand.

mod bundle;
mod cni_latency;
mod fixture_files;
mod host;
mod image_fixture;
mod pod_cri;
mod pod_daemon;
mod pod_fixture;
mod pods;
mod pull;
mod pull_cri;
mod pull_cri_report;
mod runtime_lifecycle;
mod scratch_fs;
mod stats;
mod sys;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "berth-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// create + start + wait + delete of a trivial container: berth-runtime vs runc vs crun.
    Runtime(runtime_lifecycle::Args),
    /// pull + unpack of a multi-layer image from a local registry: berth vs containerd.
    Pull(pull::Args),
    /// ADD + DEL of a pod network chain: berth's CNI plugins vs the reference plugins.
    Cni(cni_latency::Args),
    /// pod start + teardown through the CRI, sequential and at once; daemon and shim memory:
    /// berthd vs containerd + runc.
    Pods(pods::Args),
    /// PullImage through each daemon's CRI socket, image shapes × compressions: berthd vs
    /// containerd's CRI plugin.
    PullCri(pull_cri::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Bench::Runtime(args) => runtime_lifecycle::run(args),
        Bench::Pull(args) => pull::run(args),
        Bench::Cni(args) => cni_latency::run(args),
        Bench::Pods(args) => pods::run(args),
        Bench::PullCri(args) => pull_cri::run(args),
    }
}
