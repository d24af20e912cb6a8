//! Running one plugin binary: environment, stdin, a time limit, and decoding what it printed.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{ClientError, CniError};

/// A CNI operation (the `CNI_COMMAND` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach.
    Add,
    /// Verify an attachment.
    Check,
    /// Detach.
    Del,
    /// Is the plugin ready for ADD (1.1).
    Status,
    /// Remove stale resources (1.1).
    Gc,
    /// Which spec versions does the plugin speak.
    Version,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Parses a `CNI_COMMAND` value.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Command::Add,
            Command::Check,
            Command::Del,
            Command::Status,
            Command::Gc,
            Command::Version,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The environment of one plugin call.
#[derive(Debug, Clone)]
pub(crate) struct Invocation<'a> {
    pub plugin: &'a str,
    pub command: Command,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub args: String,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

/// Finds `plugin` in the first of `dirs` that has an executable file of that name.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, ClientError> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| ClientError::PluginNotFound {
            plugin: plugin.to_owned(),
            dirs: dirs.to_vec(),
        })
}

/// Most of stderr a failing plugin's error carries.
const STDERR_LIMIT: usize = 4096;

/// Runs the plugin with `stdin` and returns its stdout, or the error it reported.
pub(crate) fn invoke(inv: &Invocation<'_>, stdin: &[u8]) -> Result<Vec<u8>, ClientError> {
    let path = find_plugin(inv.plugin, inv.bin_dirs)?;
    let spawn_err = |source| ClientError::Spawn {
        plugin: inv.plugin.to_owned(),
        command: inv.command,
        source,
    };
    let cni_path = std::env::join_paths(inv.bin_dirs).map_err(|e| {
        spawn_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e.to_string(),
        ))
    })?;
    let mut cmd = std::process::Command::new(&path);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("CNI_")) {
            cmd.env_remove(k);
        }
    }
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !matches!(
        inv.command,
        Command::Status | Command::Gc | Command::Version
    ) {
        cmd.env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", &inv.args);
    }
    let started = Instant::now();
    let mut child = spawn_retrying(&mut cmd).map_err(spawn_err)?;
    let pid = child.id();
    tracing::debug!(plugin = inv.plugin, command = %inv.command, pid, container = inv.container_id, "CNI plugin started");

    // stdin, stdout and stderr each get a thread so a plugin that writes a lot before reading
    // (or never reads) cannot deadlock us; the deadline bounds everything.
    let (tx, rx) = mpsc::channel::<(u8, std::io::Result<Vec<u8>>)>();
    if let Some(mut w) = child.stdin.take() {
        let data = stdin.to_vec();
        let tx = tx.clone();
        std::thread::spawn(move || {
            // A plugin may exit without reading all of stdin (EPIPE): that is its business.
            let _ = w.write_all(&data);
            drop(w);
            let _ = tx.send((0, Ok(Vec::new())));
        });
    }
    for (fd, pipe) in [
        (
            1u8,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            2u8,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        if let Some(mut r) = pipe {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let res = r.read_to_end(&mut buf).map(|_| buf);
                let _ = tx.send((fd, res));
            });
        }
    }
    drop(tx);

    let deadline = started + inv.timeout;
    let timed_out = || ClientError::Timeout {
        plugin: inv.plugin.to_owned(),
        command: inv.command,
        after: inv.timeout,
    };
    let (mut stdout, mut stderr) = (None, None);
    let mut pending = 3;
    let mut status = None;
    let mut exited_at = None;
    let status = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let tick = Duration::from_millis(if pending == 0 { 1 } else { 5 });
        match rx.recv_timeout(left.min(tick)) {
            Ok((1, res)) => {
                stdout = Some(res.map_err(spawn_err)?);
                pending -= 1;
            }
            Ok((2, res)) => {
                stderr = Some(res.map_err(spawn_err)?);
                pending -= 1;
            }
            Ok(_) => pending -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => pending = 0,
        }
        if status.is_none() {
            status = child.try_wait().map_err(spawn_err)?;
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        if let Some(status) = status {
            // A grandchild the plugin left behind may hold its pipes open: once the plugin
            // itself has exited, wait for its output only briefly.
            let grace_over = exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1));
            if pending == 0 || grace_over || Instant::now() >= deadline {
                break status;
            }
        }
        if Instant::now() >= deadline {
            kill(&mut child, inv);
            return Err(timed_out());
        }
    };
    let stdout = stdout.unwrap_or_default();
    let stderr = stderr.unwrap_or_default();
    tracing::debug!(plugin = inv.plugin, command = %inv.command, pid, %status,
        elapsed_ms = started.elapsed().as_millis() as u64, "CNI plugin finished");
    if status.success() {
        return Ok(stdout);
    }
    if let Ok(error) = serde_json::from_slice::<CniError>(&stdout) {
        return Err(ClientError::Plugin {
            plugin: inv.plugin.to_owned(),
            command: inv.command,
            error,
        });
    }
    let mut text = String::from_utf8_lossy(&stderr).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&stdout).trim().to_owned();
    }
    if text.len() > STDERR_LIMIT {
        let mut cut = STDERR_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Err(ClientError::Exit {
        plugin: inv.plugin.to_owned(),
        command: inv.command,
        status,
        stderr: text,
    })
}

/// Spawns, retrying a few times on ETXTBSY: a plugin binary that was just installed can still
/// be open for writing in a child another thread forked (libcni retries the same way).
fn spawn_retrying(cmd: &mut std::process::Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Kills a plugin that ran out of time, by its PID, and reaps it.
fn kill(child: &mut Child, inv: &Invocation<'_>) {
    tracing::warn!(plugin = inv.plugin, command = %inv.command, pid = child.id(),
        timeout_ms = inv.timeout.as_millis() as u64, "CNI plugin timed out; killing it");
    // Child::kill sends SIGKILL to this PID; it cannot have been reaped yet, so the PID is ours.
    let _ = child.kill();
    let _ = child.wait();
}
