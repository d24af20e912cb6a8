//! berth-runtime: an OCI runtime with runc's command line.

mod cli;
mod error_text;
mod foreground;
mod logging;

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use berth_runtime::container::create::{self, CreateOptions};
use berth_runtime::container::exec::{self, ExecOptions};
use berth_runtime::container::{delete, kill, lifecycle, start};
use berth_runtime::process::{console, sealed_exe};
use berth_runtime::{features, spec_default, sys, ContainerId, Root};
use clap::Parser;
use oci_spec::runtime::{LinuxResources, Process, UserBuilder};

use cli::{Cli, Command, CreateArgs, ExecArgs, OutputFormat, UpdateArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log.as_deref(), cli.log_format, cli.debug);
    let has_log_file = cli.log.is_some();
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let msg = error_text::error_text(&e);
            tracing::error!("{msg}");
            if has_log_file {
                // Errors also reach stderr, for a person at a terminal (as with runc).
                eprintln!("berth-runtime: {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

fn id(s: &str) -> Result<ContainerId> {
    Ok(s.parse()?)
}

fn run(cli: Cli) -> Result<i32> {
    let root = Root::new(&cli.root);
    // Commands that only print (`features | head`, `list | grep -q`) end quietly on a closed
    // pipe, as runc and crun do, instead of panicking in println!. Those that change a
    // container keep SIGPIPE ignored: a closed pipe must never stop one halfway.
    if matches!(
        cli.command,
        Command::State { .. }
            | Command::Ps { .. }
            | Command::List { .. }
            | Command::Spec { .. }
            | Command::Features
    ) {
        let _ = sys::default_sigpipe();
    }
    match cli.command {
        Command::Create(args) => {
            sealed_exe::ensure_sealed()?;
            create::create(
                &root,
                &id(&args.id)?,
                &create_options(&args, cli.systemd_cgroup),
            )?;
            Ok(0)
        }
        Command::Start { id: i } => {
            start::start(&root.load(&id(&i)?)?)?;
            Ok(0)
        }
        Command::State { id: i } => {
            let c = root.load(&id(&i)?)?;
            println!("{}", serde_json::to_string_pretty(&c.oci_state())?);
            Ok(0)
        }
        Command::Kill { id: i, signal, all } => {
            let c = root.load(&id(&i)?)?;
            kill::kill(&c, kill::parse_signal(&signal)?, all)?;
            Ok(0)
        }
        Command::Delete { id: i, force } => {
            delete::delete(&root, &id(&i)?, force)?;
            Ok(0)
        }
        Command::Run {
            create: args,
            detach,
            keep,
        } => run_container(&root, &args, detach, keep, cli.systemd_cgroup),
        Command::Exec(args) => exec_process(&root, args),
        Command::Ps {
            id: i,
            format,
            ps_args,
        } => ps(&root, &id(&i)?, format, &ps_args),
        Command::List { format, quiet } => list(&root, format, quiet),
        Command::Update(args) => update(&root, args),
        Command::Pause { id: i } => {
            lifecycle::pause(&root.load(&id(&i)?)?)?;
            Ok(0)
        }
        Command::Resume { id: i } => {
            lifecycle::resume(&root.load(&id(&i)?)?)?;
            Ok(0)
        }
        Command::Events {
            id: i,
            stats,
            interval,
        } => events(&root, &id(&i)?, stats, interval),
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("File {} exists. Remove it first", path.display());
            }
            let mut spec = serde_json::to_value(spec_default::default_spec(rootless))?;
            // oci-spec keeps capabilities in hash sets; print them in a stable order, as runc does.
            if let Some(caps) = spec
                .pointer_mut("/process/capabilities")
                .and_then(|c| c.as_object_mut())
            {
                for set in caps.values_mut() {
                    if let Some(list) = set.as_array_mut() {
                        list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                    }
                }
            }
            fs::write(&path, serde_json::to_string_pretty(&spec)?)
                .with_context(|| format!("write {}", path.display()))?;
            Ok(0)
        }
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&features::features_json())?
            );
            Ok(0)
        }
    }
}

fn create_options(args: &CreateArgs, systemd: bool) -> CreateOptions {
    CreateOptions {
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        no_pivot: args.no_pivot,
        preserve_fds: args.preserve_fds,
        systemd_cgroup: systemd,
    }
}

/// A private console socket for `run`/`exec` with a terminal and no --console-socket: init
/// connects to it during create; the master is collected once create returns.
struct OwnConsole {
    path: PathBuf,
    listener: UnixListener,
}

impl OwnConsole {
    fn new(root: &Path, id: &ContainerId) -> Result<Self> {
        fs::create_dir_all(root)?;
        let path = root.join(format!(".{id}-{}.console", std::process::id()));
        let _ = fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        Ok(Self { path, listener })
    }

    fn receive(&self) -> Result<OwnedFd> {
        let (stream, _) = self
            .listener
            .accept()
            .context("accept on the console socket")?;
        Ok(console::recv_fd(&stream)?.1)
    }
}

impl Drop for OwnConsole {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn run_container(
    root: &Root,
    args: &CreateArgs,
    detach: bool,
    keep: bool,
    systemd: bool,
) -> Result<i32> {
    sealed_exe::ensure_sealed()?;
    let cid = id(&args.id)?;
    let mut opts = create_options(args, systemd);
    let (_, spec) = create::load_bundle(&args.bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let own_console = if terminal && opts.console_socket.is_none() {
        if detach {
            bail!("cannot allocate a pseudo-TTY without --console-socket when detached");
        }
        let c = OwnConsole::new(root.dir(), &cid)?;
        opts.console_socket = Some(c.path.clone());
        Some(c)
    } else {
        None
    };
    let signals = if detach {
        None
    } else {
        // The init is our grandchild; as subreaper we inherit it when stage 1 exits.
        nix::sys::prctl::set_child_subreaper(true).context("become a child subreaper")?;
        Some(foreground::block_signals()?)
    };
    let created = create::create(root, &cid, &opts)?;
    let pty = own_console.as_ref().map(|c| c.receive()).transpose()?;
    let container = root.load(&cid)?;
    if let Err(e) = start::start(&container) {
        let _ = delete::delete(root, &cid, true);
        return Err(e.into());
    }
    let Some(signals) = signals else { return Ok(0) };
    let code = foreground::supervise(created.pid, signals, pty)?;
    if !keep {
        delete::delete(root, &cid, true)?;
    }
    Ok(code)
}

fn read_json_arg<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// The process to exec: --process, or the container's own process with the command and the
/// flags' overrides (as runc builds it).
fn exec_process_spec(args: &ExecArgs, container: &berth_runtime::Container) -> Result<Process> {
    if let Some(path) = &args.process {
        return read_json_arg(path);
    }
    if args.command.is_empty() {
        bail!("exec: no command given (and no --process)");
    }
    let mut p = container.spec.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &args.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid): (u32, u32) = match user.split_once(':') {
            Some((u, g)) => (u.parse()?, g.parse()?),
            None => (user.parse()?, 0),
        };
        let mut b = UserBuilder::default().uid(uid).gid(gid);
        if !args.additional_gids.is_empty() {
            b = b.additional_gids(args.additional_gids.clone());
        }
        p.set_user(b.build()?);
    } else if !args.additional_gids.is_empty() {
        let mut u = p.user().clone();
        u.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(u);
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if !args.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            // runc's spelling is CAP_SYS_ADMIN; oci-spec's FromStr wants SYS_ADMIN.
            let upper = name.to_ascii_uppercase();
            let cap: oci_spec::runtime::Capability = upper
                .strip_prefix("CAP_")
                .unwrap_or(&upper)
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown capability {name}"))?;
            let add = |s: Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            caps.set_bounding(add(caps.bounding().clone()));
            caps.set_effective(add(caps.effective().clone()));
            caps.set_permitted(add(caps.permitted().clone()));
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn exec_process(root: &Root, args: ExecArgs) -> Result<i32> {
    sealed_exe::ensure_sealed()?;
    let container = root.load(&id(&args.id)?)?;
    let process = exec_process_spec(&args, &container)?;
    if process.terminal().unwrap_or(false) && args.detach && args.console_socket.is_none() {
        bail!("cannot allocate a pseudo-TTY without --console-socket when detached");
    }
    let signals = if args.detach {
        None
    } else {
        Some(foreground::block_signals()?)
    };
    let started = exec::exec(
        &container,
        ExecOptions {
            process,
            console_socket: args.console_socket.clone(),
            pid_file: args.pid_file.clone(),
            detach: args.detach,
            preserve_fds: args.preserve_fds,
        },
    )?;
    match signals {
        None => Ok(0),
        Some(signals) => foreground::supervise(started.pid, signals, started.pty),
    }
}

fn ps(root: &Root, cid: &ContainerId, format: OutputFormat, ps_args: &[String]) -> Result<i32> {
    let c = root.load(cid)?;
    let pids = lifecycle::pids(&c)?;
    if format == OutputFormat::Json {
        let raw: Vec<i32> = pids.iter().map(|p| p.as_raw()).collect();
        println!("{}", serde_json::to_string(&raw)?);
        return Ok(0);
    }
    // Like runc: run ps(1) and keep the header plus the lines of the container's processes.
    let args = if ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.iter().any(|x| x.as_raw() == p)) {
            println!("{line}");
        }
    }
    Ok(0)
}

fn list(root: &Root, format: OutputFormat, quiet: bool) -> Result<i32> {
    let mut states = Vec::new();
    for cid in root.list()? {
        if let Ok(c) = root.load(&cid) {
            states.push(c.oci_state());
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
    } else if format == OutputFormat::Json {
        println!("{}", serde_json::to_string(&states)?);
    } else {
        println!(
            "{:<24} {:<8} {:<10} {:<40} {:<32}",
            "ID", "PID", "STATUS", "BUNDLE", "CREATED"
        );
        for s in &states {
            println!(
                "{:<24} {:<8} {:<10} {:<40} {:<32}",
                s.id,
                s.pid,
                s.status,
                s.bundle.display(),
                s.created.to_rfc3339()
            );
        }
    }
    Ok(0)
}

fn update(root: &Root, args: UpdateArgs) -> Result<i32> {
    let mut c = root.load(&id(&args.id)?)?;
    let mut res: LinuxResources = match &args.resources {
        Some(path) => read_json_arg(path)?,
        None => LinuxResources::default(),
    };
    let mut mem = res.memory().unwrap_or_default();
    let mut mem_set = res.memory().is_some();
    if let Some(v) = args.memory {
        mem.set_limit(Some(v));
        mem_set = true;
    }
    if let Some(v) = args.memory_reservation {
        mem.set_reservation(Some(v));
        mem_set = true;
    }
    if let Some(v) = args.memory_swap {
        mem.set_swap(Some(v));
        mem_set = true;
    }
    if mem_set {
        res.set_memory(Some(mem));
    }
    let mut cpu = res.cpu().clone().unwrap_or_default();
    let mut cpu_set = res.cpu().is_some();
    if let Some(v) = args.cpu_shares {
        cpu.set_shares(Some(v));
        cpu_set = true;
    }
    if let Some(v) = args.cpu_quota {
        cpu.set_quota(Some(v));
        cpu_set = true;
    }
    if let Some(v) = args.cpu_period {
        cpu.set_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = &args.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
        cpu_set = true;
    }
    if let Some(v) = &args.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
        cpu_set = true;
    }
    if cpu_set {
        res.set_cpu(Some(cpu));
    }
    if let Some(v) = args.pids_limit {
        res.set_pids(Some(
            oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(v)
                .build()?,
        ));
    }
    if let Some(v) = args.blkio_weight {
        res.set_block_io(Some(
            oci_spec::runtime::LinuxBlockIoBuilder::default()
                .weight(v)
                .build()?,
        ));
    }
    lifecycle::update(&mut c, &res)?;
    Ok(0)
}

fn events(root: &Root, cid: &ContainerId, once: bool, interval: u64) -> Result<i32> {
    let c = root.load(cid)?;
    let cgroup = c.cgroup()?;
    let mut last_oom = cgroup.oom_kill_count().unwrap_or(0);
    loop {
        if !c.init_alive() {
            return Ok(0);
        }
        let oom = cgroup.oom_kill_count().unwrap_or(last_oom);
        if oom > last_oom {
            println!("{}", serde_json::json!({"type": "oom", "id": cid.as_str()}));
            last_oom = oom;
        }
        let stats = cgroup.stats()?;
        println!(
            "{}",
            serde_json::json!({"type": "stats", "id": cid.as_str(), "data": stats})
        );
        if once {
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_secs(interval.max(1)));
    }
}
