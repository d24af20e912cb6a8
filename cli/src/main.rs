//! berth: the operator's CLI for berthd, nerdctl-style. It speaks CRI v1 to berthd, so all it
//! does a kubelet could do too.

mod client;
mod cmd;
mod crilog;
mod dockercfg;
mod portforward;
mod pull_view;
mod remotecommand;
mod resolve;
mod streaming_tls;
mod table;
mod terminal;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use client::DEFAULT_ADDRESS;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: run containers and pods on berthd"
)]
struct Cli {
    /// berthd's CRI socket.
    #[arg(long, global = true, env = "BERTH_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// A CA certificate (PEM) to trust, besides the system's, for berthd's streaming server
    /// when it speaks TLS (exec -i/-t, attach, port-forward).
    #[arg(long, global = true, env = "BERTH_STREAMING_CA", value_name = "FILE")]
    streaming_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// How lists are printed
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only IDs.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Args)]
pub struct PsArgs {
    /// All containers (also the exited).
    #[arg(short, long)]
    pub all: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container (and its pod) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep STDIN open and attach it (closed in the container when berth's closes).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a TTY (raw local terminal, resizes follow; Ctrl-P Ctrl-Q detaches).
    #[arg(short, long)]
    pub tty: bool,
    /// Publish a port: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp] (the pod network's portmap).
    #[arg(short, long = "publish", value_name = "HOST:CTR")]
    pub publish: Vec<String>,
    /// Bind mount: HOST_PATH:CONTAINER_PATH[:ro].
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volume: Vec<String>,
    /// Memory limit (512m, 1g).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs (0.5, 2).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Container (and pod) name; generated when absent.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variables, K=V.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Network: `host` (the node's) or `bridge` (the pod's own, through CNI).
    #[arg(long, alias = "network", value_enum, default_value_t = Net::Bridge)]
    pub net: Net,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: UID[:GID] or a user name.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overrides the image's ENTRYPOINT.
    #[arg(long)]
    pub entrypoint: Option<String>,
    pub image: String,
    /// Command and arguments (override the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Net {
    Host,
    Bridge,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Follow the log until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Attach STDIN (over berthd's streaming server).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a TTY (raw local terminal, resizes follow).
    #[arg(short, long)]
    pub tty: bool,
    /// Seconds before the command is killed (0: no limit; without -i/-t only).
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Debug, Clone, Args)]
pub struct PortForwardArgs {
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// A pod, or a container (its pod).
    pub target: String,
    /// [LOCAL_PORT:]REMOTE_PORT (LOCAL 0 or empty: a free port, printed).
    #[arg(required = true, value_name = "LOCAL:REMOTE")]
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// os/architecture[/variant] to pick from a multi-platform image (default: this node's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID (no progress).
    #[arg(short, long)]
    pub quiet: bool,
    pub image: String,
}

#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only these containers (default: every running one).
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to other users: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry host (default: Docker Hub).
    #[arg(default_value = "docker.io")]
    pub server: String,
}

#[derive(Debug, Clone, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// Write the archive here (default: stdout, if not a terminal).
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Read the archive from here (default: stdin).
    #[arg(short, long)]
    pub input: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Every image no container uses (default: only untagged ones).
    #[arg(short, long)]
    pub all: bool,
    /// Accepted for docker's sake: berth does not ask.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RmArgs {
    /// Stop running containers first.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short, long, default_value_t = 10)]
    pub time: i64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct Ids {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Client and berthd versions.
    Version,
    /// berthd's status and runtime conditions.
    Info,
    /// Pull an image.
    Pull(PullArgs),
    /// List images.
    Images(ListArgs),
    /// Remove images.
    Rmi(Ids),
    /// Give an image another name.
    Tag(TagArgs),
    /// Write images to an archive (OCI layout + docker save).
    Save(SaveArgs),
    /// Load images from an archive (OCI layout or docker save).
    Load(LoadArgs),
    /// Store registry credentials (docker's config.json).
    Login(LoginArgs),
    /// Remove stored registry credentials.
    Logout {
        #[arg(default_value = "docker.io")]
        server: String,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// List pods (sandboxes).
    Pods(ListArgs),
    /// Manage pods.
    #[command(subcommand)]
    Pod(PodCmd),
    /// List containers.
    Ps(PsArgs),
    /// Run a command in a new container (in a pod of its own).
    Run(Box<RunArgs>),
    /// Print a container's log.
    Logs(LogsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Attach to a running container's stdio (Ctrl-P Ctrl-Q detaches on a TTY).
    Attach(AttachArgs),
    /// Forward local ports to a pod's ports.
    PortForward(PortForwardArgs),
    /// CPU, memory and disk use of running containers.
    Stats(StatsArgs),
    /// Stop containers.
    Stop(StopArgs),
    /// Kill containers (SIGKILL at once).
    Kill(Ids),
    /// Remove containers (and the pods `berth run` made for them).
    Rm(RmArgs),
    /// Container or pod status, verbose, as JSON.
    Inspect(Ids),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Shell completion script.
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Pull an image
    Pull(PullArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove images
    #[command(alias = "remove")]
    Rm(Ids),
    /// Image status, verbose, as JSON
    Inspect(Ids),
    /// Give an image another name
    Tag(TagArgs),
    /// Write images to an archive (OCI layout + docker save)
    Save(SaveArgs),
    /// Load images from an archive (OCI layout or docker save)
    Load(LoadArgs),
    /// Remove images no container uses
    Prune(PruneArgs),
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// List pods (sandboxes)
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Pod status, verbose, as JSON
    Inspect(Ids),
    /// Stop pods and their containers
    Stop(Ids),
    /// Remove pods and their containers
    #[command(alias = "remove")]
    Rm(Ids),
}

#[derive(Debug, Subcommand)]
enum ContainerCmd {
    /// List containers
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Run a command in a new container (in a pod of its own)
    Run(Box<RunArgs>),
    /// Container status, verbose, as JSON
    Inspect(Ids),
    /// Print a container's log
    Logs(LogsArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Attach to a running container's stdio (Ctrl-P Ctrl-Q detaches on a TTY)
    Attach(AttachArgs),
    /// CPU, memory and disk use of running containers
    Stats(StatsArgs),
    /// Stop containers
    Stop(StopArgs),
    /// Kill containers (SIGKILL at once)
    Kill(Ids),
    /// Remove containers (and the pods `berth run` made for them)
    #[command(alias = "remove")]
    Rm(RmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ca) = &cli.streaming_ca {
        streaming_tls::set_extra_ca(ca.clone());
    }
    if let Cmd::Completion { shell } = cli.cmd {
        clap_complete::generate(shell, &mut Cli::command(), "berth", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; its exit code.
async fn dispatch(cli: Cli) -> Result<u8> {
    match &cli.cmd {
        Cmd::Version => return cmd::system::version(&cli.address).await.map(|()| 0),
        Cmd::Login(a) => return cmd::login::login(a).map(|()| 0),
        Cmd::Logout { server } => return cmd::login::logout(server).map(|()| 0),
        _ => {}
    }
    let mut c = client::connect(&cli.address).await?;
    match cli.cmd {
        Cmd::Version | Cmd::Completion { .. } | Cmd::Login(_) | Cmd::Logout { .. } => {
            unreachable!("handled above")
        }
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => {
            cmd::archive::tag(&mut c, &a.source, &a.target).await?
        }
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => {
            cmd::archive::save(&mut c, a.output.as_deref(), &a.images).await?
        }
        Cmd::Load(a) | Cmd::Image(ImageCmd::Load(a)) => {
            cmd::archive::load(&mut c, a.input.as_deref()).await?
        }
        Cmd::Image(ImageCmd::Prune(a)) => cmd::images::prune(&mut c, a.all).await?,
        Cmd::Stats(a) | Cmd::Container(ContainerCmd::Stats(a)) => {
            cmd::stats::stats(&mut c, &a).await?
        }
        Cmd::Info => cmd::system::info(&mut c).await?,
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => {
            cmd::images::pull(&mut c, &a.image, a.platform.as_deref(), a.quiet).await?;
        }
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => cmd::images::list(&mut c, &a).await?,
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => cmd::images::remove(&mut c, &a.ids).await?,
        Cmd::Image(ImageCmd::Inspect(a)) => cmd::images::inspect(&mut c, &a.ids).await?,
        Cmd::Pods(a) | Cmd::Pod(PodCmd::Ls(a)) => cmd::pods::list(&mut c, &a).await?,
        Cmd::Pod(PodCmd::Inspect(a)) => cmd::pods::inspect(&mut c, &a.ids).await?,
        Cmd::Pod(PodCmd::Stop(a)) => cmd::pods::stop(&mut c, &a.ids).await?,
        Cmd::Pod(PodCmd::Rm(a)) => cmd::pods::remove(&mut c, &a.ids).await?,
        Cmd::Ps(a) | Cmd::Container(ContainerCmd::Ls(a)) => {
            cmd::containers::list(&mut c, &a).await?
        }
        Cmd::Run(a) | Cmd::Container(ContainerCmd::Run(a)) => {
            return cmd::run::run(&mut c, &a).await
        }
        Cmd::Logs(a) | Cmd::Container(ContainerCmd::Logs(a)) => {
            cmd::containers::logs(&mut c, &a).await?
        }
        Cmd::Exec(a) | Cmd::Container(ContainerCmd::Exec(a)) => {
            return cmd::containers::exec(&mut c, &a).await;
        }
        Cmd::Attach(a) | Cmd::Container(ContainerCmd::Attach(a)) => {
            return cmd::attach::attach(&mut c, &a).await;
        }
        Cmd::PortForward(a) => cmd::portforward::run(&mut c, &a).await?,
        Cmd::Stop(a) | Cmd::Container(ContainerCmd::Stop(a)) => {
            cmd::containers::stop(&mut c, &a).await?
        }
        Cmd::Kill(a) | Cmd::Container(ContainerCmd::Kill(a)) => {
            let stop = StopArgs {
                time: 0,
                containers: a.ids,
            };
            cmd::containers::stop(&mut c, &stop).await?;
        }
        Cmd::Rm(a) | Cmd::Container(ContainerCmd::Rm(a)) => {
            cmd::containers::remove(&mut c, &a).await?
        }
        Cmd::Inspect(a) | Cmd::Container(ContainerCmd::Inspect(a)) => {
            cmd::containers::inspect(&mut c, &a.ids).await?;
        }
    }
    Ok(0)
}
