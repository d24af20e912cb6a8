//! berthd: berth's CRI daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_cri::cgroup_driver::HostFacts;
use berth_cri::config::{Config, DEFAULT_CONFIG_PATH};
use berth_cri::server;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(name = "berthd", version, about = "berth's CRI v1 daemon")]
struct Args {
    /// Configuration file (missing at the default path: all defaults).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Persistent data directory (overrides `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory (overrides `state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI socket path (overrides `listen`).
    #[arg(long)]
    listen: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long = "print-config")]
    print_config: bool,
    /// The log's format on stderr: text (coloured only on a terminal) or json (one object per
    /// line). The level comes from `BERTH_LOG` (default `info`).
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        // Escape codes only where a terminal shows them, not in a file or the journal.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(args: &Args) -> Result<Config> {
    let required = args.config.as_path() != std::path::Path::new(DEFAULT_CONFIG_PATH);
    let mut config = Config::load(&args.config, required)?;
    if let Some(root) = &args.root {
        config.root = root.clone();
    }
    if let Some(state) = &args.state {
        config.state = state.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from));
    Ok(config
        .with_detected_runtimes(exe_dir.as_deref())?
        .with_resolved_cgroup_driver(HostFacts::probe))
}

/// glibc malloc arenas for berthd's threads. glibc's default (8 per CPU) gives each of the
/// blocking-pool threads a pod's start or stop runs on (spawn_blocking) its own heap, and what
/// each heap frees stays resident in it; two arenas keep contention low on berthd's few hot
/// threads and memory flat as pods come and go.
const MALLOC_ARENAS: i32 = 2;

fn main() -> Result<()> {
    // Before any thread starts (the async runtime's, the exit watcher).
    berth_runtime::sys::limit_malloc_arenas(MALLOC_ARENAS);
    let args = Args::parse();
    init_logging(args.log_format);
    let config = load_config(&args)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        let listener = server::bind(&config.listen)?;
        tracing::info!(listen = %config.listen.display(), version = env!("CARGO_PKG_VERSION"), "berthd serving CRI v1");
        let listen = config.listen.clone();
        let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutting down");
        };
        server::serve(Arc::new(config), listener, shutdown).await?;
        let _ = std::fs::remove_file(listen);
        Ok(())
    })
}
