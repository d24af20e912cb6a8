//! Test support for the container tests: berthd in-process on a directory that survives a
//! restart, berth's binaries from the cargo target dir, a busybox image with the applets the
//! tests run, and a guard that removes whatever a failed test left behind (processes by PID,
//! runtime state, mounts, cgroups).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_cri::config::Config;
use tonic::transport::Channel;

use super::support::{connect, run, Server};

/// The cargo target profile dir (`target/debug`) this test binary was built in.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_owned()
}

/// Whether berth's binaries are built; prints why the test skips when not.
pub fn binaries_ready(test: &str) -> bool {
    for bin in ["berth-runtime", "berth-shim", "berth-pause"] {
        let p = target_dir().join(bin);
        if !p.exists() {
            eprintln!(
                "SKIP {test}: {} is missing (cargo build -p runtime -p berth-pause --bins)",
                p.display()
            );
            return false;
        }
    }
    true
}

/// berthd in-process, on `dir` (root, state, socket), stopped by [`Node::stop`].
pub struct Node {
    pub dir: PathBuf,
    pub channel: Channel,
    server: Server,
}

impl Node {
    pub async fn start(dir: &Path, insecure: &[String]) -> Node {
        let mut config = Config {
            root: dir.join("root"),
            state: dir.join(super::pods::STATE_DIR),
            listen: dir.join("berth.sock"),
            // The shims' sockets in the test's own dir, removed with it.
            shim_socket_dir: dir.join("sockets"),
            ..Config::default()
        };
        config.registry.insecure = insecure.to_vec();
        config.cni.conf_dir = dir.join("net.d");
        let config = config
            .with_detected_runtimes(Some(&target_dir()))
            .expect("config");
        let server = Server::start(config);
        let channel = connect(&dir.join("berth.sock")).await;
        Node {
            dir: dir.to_owned(),
            channel,
            server,
        }
    }

    /// Shuts the server down (containers keep running under their shims).
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// An OCI layout under `work` with tag `v1`: busybox-static with links for the applets the
/// tests use, running as root. Returns the layout path.
pub fn build_busybox(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let src = work.join("rootfs");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "tail", "cat", "true", "ls", "id"] {
        std::os::unix::fs::symlink("busybox", src.join("bin").join(applet)).unwrap();
    }
    fs::write(src.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(src.join("etc/group"), "root:x:0:\n").unwrap();
    let img = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&src)
        .arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/bin",
        "--config.cmd",
        "sh",
    ]));
    layout
}

/// Removes, on drop, what the test's berthd may have left: shim and container processes (by
/// the PIDs in their state dirs), the runtimes' containers, mounts under `dir`, and the pod
/// cgroups of the sandboxes the test registered.
pub struct Leftovers {
    pub dir: PathBuf,
    pub sandboxes: Mutex<Vec<String>>,
}

impl Leftovers {
    pub fn new(dir: &Path) -> Self {
        Leftovers {
            dir: dir.to_owned(),
            sandboxes: Mutex::new(Vec::new()),
        }
    }

    pub fn sandbox(&self, id: &str) {
        self.sandboxes.lock().unwrap().push(id.to_owned());
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let state = self.dir.join(super::pods::STATE_DIR);
        // Processes: the container inits, then their shims.
        for kind in ["containers", "sandboxes"] {
            for entry in fs::read_dir(state.join(kind))
                .into_iter()
                .flatten()
                .flatten()
            {
                for file in ["init.pid", "shim.pid"] {
                    if let Some(pid) = fs::read_to_string(entry.path().join("shim").join(file))
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok())
                        .filter(|p| *p > 1)
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        // The runtimes' records (and the cgroups they remove).
        for root in fs::read_dir(state.join("runtimes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for c in fs::read_dir(root.path()).into_iter().flatten().flatten() {
                let _ = Command::new(target_dir().join("berth-runtime"))
                    .arg("--root")
                    .arg(root.path())
                    .args(["delete", "--force"])
                    .arg(c.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for m in mounts_under(&self.dir).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for sid in self.sandboxes.lock().unwrap().iter() {
            remove_cgroups(&format!("berth/{sid}"));
        }
    }
}

/// Mount points under `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// rmdir's `rel` (and its sub-cgroups, deepest first) in every cgroup hierarchy.
pub fn remove_cgroups(rel: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for h in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let top = h.path().join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            for e in fs::read_dir(&dirs[i]).into_iter().flatten().flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
