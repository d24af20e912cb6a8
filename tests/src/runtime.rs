//! A runtime binary (berth-runtime or runc — the same command line) with its own `--root` temp
//! dir. Every container it creates gets a unique ID and is `delete --force`d on drop, so a
//! failing test leaves nothing behind.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::binaries;
use crate::bundle::Bundle;
use crate::command::{run_bounded, run_with_files, Outcome, DEFAULT_TIMEOUT};
use crate::wait;

/// Which runtime a wrapper drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Runc,
}

/// A runtime binary with a private state root.
pub struct Runtime {
    kind: Kind,
    bin: PathBuf,
    root: TempDir,
    io: TempDir,
    ids: RefCell<Vec<String>>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Runtime {
    /// berth-runtime from this workspace's target dir.
    pub fn berth() -> Self {
        Self::new(Kind::Berth, binaries::berth_runtime())
    }

    /// Debian's runc.
    pub fn runc() -> Self {
        Self::new(Kind::Runc, binaries::runc())
    }

    fn new(kind: Kind, bin: PathBuf) -> Self {
        let root = tempfile::Builder::new()
            .prefix("berth-rt-root-")
            .tempdir()
            .expect("state root");
        let io = tempfile::Builder::new()
            .prefix("berth-rt-io-")
            .tempdir()
            .expect("io dir");
        Self {
            kind,
            bin,
            root,
            io,
            ids: RefCell::new(Vec::new()),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// "berth-runtime" or "runc", for messages.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Berth => "berth-runtime",
            Kind::Runc => "runc",
        }
    }

    /// The binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The `--root` state dir.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A container ID no other test uses (`<tag>-<b|r>-<pid>-<n>`), deleted on drop.
    pub fn new_id(&self, tag: &str) -> String {
        let id = format!(
            "{tag}-{}-{}-{}",
            match self.kind {
                Kind::Berth => "b",
                Kind::Runc => "r",
            },
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        self.ids.borrow_mut().push(id.clone());
        id
    }

    /// `<bin> --root <root> args…`, stdin from /dev/null.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path()).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a runtime command to its end (bounded).
    #[track_caller]
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Outcome {
        run_bounded(&mut self.command(args), DEFAULT_TIMEOUT)
    }

    fn io_file(&self, id: &str, stream: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(self.io.path().join(format!("{id}.{stream}")))
            .expect("io file")
    }

    /// What the container `id` wrote so far to stdout and stderr (create/run --detach).
    pub fn output(&self, id: &str) -> (String, String) {
        let read = |s: &str| {
            std::fs::read_to_string(self.io.path().join(format!("{id}.{s}"))).unwrap_or_default()
        };
        (read("stdout"), read("stderr"))
    }

    /// `create --bundle <bundle> [extra…] <id>`; the container's stdio goes to files that
    /// [`Runtime::output`] reads.
    #[track_caller]
    pub fn create(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Outcome {
        bundle.write();
        let mut c = self.command(&["create", "--bundle"]);
        c.arg(bundle.path()).args(extra).arg(id);
        run_with_files(
            &mut c,
            DEFAULT_TIMEOUT,
            self.io_file(id, "stdout"),
            self.io_file(id, "stderr"),
        )
    }

    /// `run --detach`; output as with [`Runtime::create`].
    #[track_caller]
    pub fn run_detached(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Outcome {
        bundle.write();
        let mut c = self.command(&["run", "--detach", "--bundle"]);
        c.arg(bundle.path()).args(extra).arg(id);
        run_with_files(
            &mut c,
            DEFAULT_TIMEOUT,
            self.io_file(id, "stdout"),
            self.io_file(id, "stderr"),
        )
    }

    /// `run` in the foreground: the outcome holds the container's exit code and output.
    #[track_caller]
    pub fn run(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Outcome {
        bundle.write();
        let mut c = self.command(&["run", "--bundle"]);
        c.arg(bundle.path()).args(extra).arg(id);
        run_bounded(&mut c, DEFAULT_TIMEOUT)
    }

    /// A fresh container running `bundle` in the foreground; its exit code and output.
    #[track_caller]
    pub fn run_new(&self, tag: &str, bundle: &Bundle) -> Outcome {
        let id = self.new_id(tag);
        self.run(&id, bundle, &[])
    }

    #[track_caller]
    pub fn start(&self, id: &str) -> Outcome {
        self.cmd(&["start", id])
    }

    /// The OCI state JSON, or None if `state` fails.
    pub fn try_state(&self, id: &str) -> Option<Value> {
        let o = self.cmd(&["state", id]);
        if !o.success() {
            return None;
        }
        serde_json::from_str(&o.stdout).ok()
    }

    /// The OCI state JSON (panics if `state` fails).
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let o = self.cmd(&["state", id]).ok();
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{} state {id}: not JSON ({e}): {}", self.name(), o.stdout))
    }

    /// state.status.
    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }

    /// state.pid.
    #[track_caller]
    pub fn pid(&self, id: &str) -> i32 {
        self.state(id)["pid"].as_i64().unwrap_or(0) as i32
    }

    /// Waits (up to `limit`) until the status is `want`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, want: &str, limit: Duration) {
        let mut last = String::new();
        if wait::poll(limit, Duration::from_millis(20), || {
            last = self
                .try_state(id)
                .map(|s| s["status"].as_str().unwrap_or("").to_string())
                .unwrap_or_else(|| "<state failed>".into());
            (last == want).then_some(())
        })
        .is_none()
        {
            panic!(
                "{}: container {id} did not become {want} within {limit:?} (last: {last}); output: {:?}",
                self.name(),
                self.output(id)
            );
        }
    }

    /// Waits up to 30 s for the container to stop.
    #[track_caller]
    pub fn wait_stopped(&self, id: &str) {
        self.wait_status(id, "stopped", Duration::from_secs(30));
    }

    #[track_caller]
    pub fn kill(&self, id: &str, signal: &str) -> Outcome {
        self.cmd(&["kill", id, signal])
    }

    #[track_caller]
    pub fn delete(&self, id: &str) -> Outcome {
        self.cmd(&["delete", id])
    }

    /// `exec <id> args…` in the foreground.
    #[track_caller]
    pub fn exec(&self, id: &str, args: &[&str]) -> Outcome {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        self.cmd(&all)
    }

    /// `exec [flags…] <id> args…`.
    #[track_caller]
    pub fn exec_with(&self, flags: &[&str], id: &str, args: &[&str]) -> Outcome {
        let mut all = vec!["exec"];
        all.extend_from_slice(flags);
        all.push(id);
        all.extend_from_slice(args);
        self.cmd(&all)
    }

    /// Creates and starts a container that sleeps (init `sleep 300`) and waits for "running".
    #[track_caller]
    pub fn start_sleeper(&self, tag: &str, bundle: &mut Bundle) -> String {
        bundle.args(&["sleep", "300"]);
        let id = self.new_id(tag);
        self.create(&id, bundle, &[]).ok();
        self.start(&id).ok();
        self.wait_status(&id, "running", Duration::from_secs(10));
        id
    }

    fn cleanup(&self, id: &str) {
        let state = self.try_state(id);
        let live_pid = state.as_ref().and_then(|s| {
            let st = s["status"].as_str().unwrap_or("");
            let pid = s["pid"].as_i64().unwrap_or(0) as i32;
            (pid > 0 && st != "stopped").then_some(pid)
        });
        if state.is_some() {
            let mut c = self.command(&["delete", "--force", id]);
            let o = run_bounded(&mut c, Duration::from_secs(20));
            if !o.success() {
                eprintln!("cleanup: {o:?}");
            }
        }
        // If delete could not kill it, the init (PID known from state) dies here.
        if let Some(pid) = live_pid {
            if kill(Pid::from_raw(pid), None).is_ok() && self.try_state(id).is_some() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.borrow_mut());
        for id in ids.iter().rev() {
            self.cleanup(id);
        }
    }
}
