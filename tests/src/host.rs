//! What the host sees: its namespaces, the cgroup dirs of a process, helper processes (held by
//! PID and killed on drop), file digests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::wait;

/// The namespace kinds of /proc/<pid>/ns that the tests compare.
pub const NS_KINDS: [&str; 8] = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

/// `readlink /proc/<pid>/ns/<kind>` ("net:[4026531840]"), `pid` = "self" allowed.
pub fn ns_link(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The cgroup v1 dir of `pid` for `controller` (absolute host path), or the unified one
/// for "" (cgroup2, "0::").
pub fn cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        if hit {
            let mount = if controller.is_empty() {
                if Path::new("/sys/fs/cgroup/unified").is_dir() {
                    "/sys/fs/cgroup/unified".to_string()
                } else {
                    "/sys/fs/cgroup".to_string()
                }
            } else {
                cgroup_v1_mount(controller)?
            };
            return Some(PathBuf::from(format!("{mount}{path}")));
        }
    }
    None
}

/// Where the v1 hierarchy holding `controller` is mounted (/sys/fs/cgroup/cpu,cpuacct).
pub fn cgroup_v1_mount(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in text.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let opts = post.nth(1).unwrap_or("");
        if opts.split(',').any(|o| o == controller) {
            return pre.split_whitespace().nth(4).map(str::to_string);
        }
    }
    None
}

/// True when the host runs cgroup v1 controllers (hybrid or legacy), as these machines do.
pub fn cgroup_v1() -> bool {
    cgroup_v1_mount("memory").is_some()
}

/// Reads a cgroup file, trimmed.
pub fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A host process the test started, killed by PID and reaped on drop.
pub struct HostProcess {
    child: Child,
}

impl HostProcess {
    /// Spawns `program args…` with null stdio.
    pub fn spawn(program: &str, args: &[&str]) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Self { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A namespace the test created with `unshare --<kind>`, held by a `sleep` (killed by PID on
/// drop, which frees the namespace).
pub struct HeldNamespace {
    proc_: HostProcess,
    kind: &'static str,
}

impl HeldNamespace {
    /// `unshare --net sleep 300` and similar; `kind` is the /proc/<pid>/ns name ("net", "uts",
    /// "ipc", "mnt").
    pub fn new(kind: &'static str) -> Self {
        let flag = match kind {
            "mnt" => "--mount".to_string(),
            k => format!("--{k}"),
        };
        let proc_ = HostProcess::spawn("unshare", &[&flag, "sleep", "300"]);
        let pid = proc_.pid().to_string();
        let host = ns_link("self", kind);
        wait::until(
            &format!("unshare {flag} to enter its namespace"),
            Duration::from_secs(10),
            || {
                let l = ns_link(&pid, kind);
                !l.is_empty() && l != host
            },
        );
        Self { proc_, kind }
    }

    /// /proc/<pid>/ns/<kind>, the path a config joins.
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/{}", self.proc_.pid(), self.kind)
    }

    /// The namespace's link text ("net:[…]").
    pub fn link(&self) -> String {
        ns_link(&self.proc_.pid().to_string(), self.kind)
    }

    pub fn pid(&self) -> i32 {
        self.proc_.pid()
    }
}
