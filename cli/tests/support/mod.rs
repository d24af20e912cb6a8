//! Test support: the built `berth` binary against a `berthd` binary started on temp dirs and a
//! temp socket, with a busybox image pushed to a local `docker-registry` (plain HTTP), and
//! optionally a test-owned CNI network (its own bridge and /24, berth's plugins, portmap in
//! its own nft table) that is removed with the environment.
//!
//! The root tests need `berthd` (and its helpers) built into the same target dir:
//! `cargo build -p runtime -p berth-pause -p cni -p cri-server --bins`.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/bin/busybox",
];

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

pub fn berthd_bin() -> PathBuf {
    Path::new(berth_bin()).with_file_name("berthd")
}

pub fn can_run(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP {test}: needs root (berthd unpacks images and runs containers)");
        return false;
    }
    for t in TOOLS {
        if !Path::new(t).exists() {
            eprintln!("SKIP {test}: {t} is not installed (scripts/install-deps installs it)");
            return false;
        }
    }
    if !berthd_bin().exists() {
        eprintln!(
            "SKIP {test}: {} is not built: cargo build -p runtime -p berth-pause -p cni \
             -p cri-server --bins (same target dir) first",
            berthd_bin().display()
        );
        return false;
    }
    true
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub trait PipeJson {
    fn pipe_json(&self) -> serde_json::Value;
}

impl PipeJson for String {
    fn pipe_json(&self) -> serde_json::Value {
        serde_json::from_str(self).unwrap_or_else(|e| panic!("{e}: {self}"))
    }
}

pub fn free_port() -> u16 {
    test_registry::free_port().expect("a free port on 127.0.0.1")
}

/// Child processes (killed by PID) and, first, whatever berth left in berthd.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// Stopped after berthd's cleanup.
    registry: Option<test_registry::Registry>,
    berthd: Option<Child>,
    pub host: String,
    /// The test's CNI network, when it asked for one.
    pub net: Option<TestNet>,
    /// Whether the registry requires AUTH.
    pub auth: bool,
}

impl Env {
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// `berth` with this environment's address and log root.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.env("BERTH_ADDRESS", format!("unix://{}", self.sock().display()))
            .env("BERTH_LOG_ROOT", self.dir.path().join("logs"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"));
        cmd
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// `berth args` with `input` on its stdin (a pipe).
    pub fn berth_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().expect("berth output")
    }

    /// The image every test has: busybox pushed to the local registry.
    pub fn image(&self) -> String {
        format!("{}/busybox:v1", self.host)
    }

    /// Runs berth, asserts success, answers stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({:?}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn lines(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_owned).collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut d) = self.berthd.take() {
            for id in self
                .berth(&["ps", "-a", "-q"])
                .stdout
                .split(|b| *b == b'\n')
            {
                let id = String::from_utf8_lossy(id).into_owned();
                if !id.is_empty() {
                    let _ = self.berth(&["rm", "-f", &id]);
                }
            }
            for id in self.berth(&["pods", "-q"]).stdout.split(|b| *b == b'\n') {
                let id = String::from_utf8_lossy(id).into_owned();
                if !id.is_empty() {
                    let _ = self.berth(&["pod", "rm", &id]);
                }
            }
            let pid = nix::unistd::Pid::from_raw(d.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = d.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        drop(self.registry.take());
        if let Some(net) = &self.net {
            net.remove();
        }
    }
}

/// A test's network: bridge `bc<pid%10000>n<k>` on 10.<230 + k%20>.<pid%250>.0/24, where k
/// counts the networks this test process made (the tests of one binary run in parallel, and
/// one test's teardown must not delete another's bridge), host-local IPAM under the test's
/// dir, no masquerade, portmap rules in an nft table of the bridge's name.
pub struct TestNet {
    pub bridge: String,
    pub subnet: String,
}

impl TestNet {
    fn new() -> TestNet {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        TestNet {
            bridge: format!("bc{}n{}", pid % 10000, k),
            subnet: format!("10.{}.{}.0/24", 230 + k % 20, pid % 250),
        }
    }

    fn conflist(&self, data_dir: &Path) -> String {
        let prefix = self.subnet.trim_end_matches(".0/24");
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("berth-cli-{}", self.bridge),
            "plugins": [
                {
                    "type": "berth-cni-bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "berth-cni-host-local",
                        "dataDir": data_dir,
                        "ranges": [[{ "subnet": self.subnet, "gateway": format!("{prefix}.1") }]]
                    }
                },
                {
                    "type": "berth-cni-portmap",
                    "capabilities": { "portMappings": true },
                    "nftTable": self.bridge
                },
                { "type": "berth-cni-loopback" }
            ]
        })
        .to_string()
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// The user and password of a registry started with auth.
pub const AUTH: (&str, &str) = ("alice", "s3cret");

/// docker-registry on a free loopback port, storing in `dir`; with `auth`, it requires AUTH
/// (htpasswd, basic auth).
pub fn start_registry(dir: &Path, auth: bool) -> test_registry::Registry {
    let config = test_registry::RegistryConfig::in_dir(&dir.join("registry"));
    let config = if auth {
        config.basic_auth(AUTH.0, AUTH.1)
    } else {
        config
    };
    config.start().expect("start docker-registry")
}

/// busybox-static with a few applet links, CMD `sh`, pushed to `dest` over plain HTTP.
/// skopeo's arguments for pushing to the test registry.
fn push_args(auth: bool) -> Vec<String> {
    let mut args = vec![
        "copy".into(),
        "--quiet".into(),
        "--dest-tls-verify=false".into(),
    ];
    if auth {
        args.push(format!("--dest-creds={}:{}", AUTH.0, AUTH.1));
    }
    args
}

pub fn push_busybox(work: &Path, dest: &str, auth: bool) {
    let layout = work.join("layout");
    let src = work.join("rootfs");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "ls", "stty", "httpd", "nc", "id", "hostname", "head", "wc",
        "tty",
    ] {
        std::os::unix::fs::symlink("busybox", src.join("bin").join(applet)).unwrap();
    }
    let img = format!("{}:v1", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    run_ok(Command::new("umoci").args(["new", "--image", &img]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &img])
            .arg(&src)
            .arg("/"),
    );
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/bin",
    ]));
    run_ok(
        Command::new("skopeo")
            .args(push_args(auth))
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{dest}")),
    );
}

pub fn start() -> Env {
    start_opts(false, false)
}

/// With `net`, pods get the test's own CNI network (berth's plugins from the target dir).
pub fn start_with(net: bool) -> Env {
    start_opts(net, false)
}

/// With `auth`, the registry requires AUTH: berth must log in to pull (berthd reads no
/// docker config of its own: its DOCKER_CONFIG is an empty dir).
pub fn start_opts(net: bool, auth: bool) -> Env {
    start_config(net, auth, |_| String::new())
}

/// As [`start_opts`], with more of berthd's config: `extra` gets the test's directory and
/// returns TOML appended to the config.
pub fn start_config(net: bool, auth: bool, extra: impl FnOnce(&Path) -> String) -> Env {
    // Short: the shims' socket paths under the state dir (console.sock of a TTY container:
    // <state>/containers/<64 hex>/shim/console.sock) are limited to 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("b")
        .rand_bytes(3)
        .tempdir_in("/tmp")
        .unwrap();
    let registry = start_registry(dir.path(), auth);
    let mut env = Env {
        dir,
        host: registry.host.clone(),
        registry: Some(registry),
        berthd: None,
        net: None,
        auth,
    };
    push_busybox(env.dir.path(), &format!("{}/busybox:v1", env.host), auth);
    let config = env.dir.path().join("berthd.toml");
    let mut toml = format!("[registry]\ninsecure = [\"{}\"]\n", env.host);
    if net {
        let n = TestNet::new();
        n.remove(); // a previous run's, if it crashed
        let conf_dir = env.dir.path().join("net.d");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::write(
            conf_dir.join("10-test.conflist"),
            n.conflist(&env.dir.path().join("ipam")),
        )
        .unwrap();
        let bin_dir = berthd_bin().parent().unwrap().to_owned();
        toml.push_str(&format!(
            "[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\n",
            conf_dir.display(),
            bin_dir.display()
        ));
        env.net = Some(n);
    }
    toml.push_str(&extra(env.dir.path()));
    fs::write(&config, toml).unwrap();
    let log = fs::File::create(env.dir.path().join("berthd.log")).unwrap();
    let child = Command::new(berthd_bin())
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(env.dir.path().join("r"))
        .arg("--state")
        .arg(env.dir.path().join("s"))
        .arg("--listen")
        .arg(env.sock())
        .env("BERTH_LOG", "warn")
        .env("DOCKER_CONFIG", env.dir.path().join("berthd-docker"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start berthd");
    env.berthd = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(env.sock()).is_err() {
        if let Some(Ok(Some(status))) = env.berthd.as_mut().map(Child::try_wait) {
            panic!(
                "berthd exited ({status}): {}",
                fs::read_to_string(env.dir.path().join("berthd.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "berthd did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    env
}

/// `berth` on a pseudo-terminal of the given size (stdin, stdout and stderr on its slave
/// side), its output collected from the master side by a thread.
pub struct Pty {
    master: std::fs::File,
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Env {
    pub fn spawn_pty(&self, args: &[&str], cols: u16, rows: u16) -> Pty {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = pty.slave;
        let child = self
            .command()
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("run berth on a pty");
        let master = std::fs::File::from(pty.master);
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut rd, sink) = (master.try_clone().unwrap(), out.clone());
        // Ends when the last slave fd closes (EIO) — berth's, once it exited.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty { master, child, out }
    }
}

impl Pty {
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Sets the terminal's size and sends berth SIGWINCH.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, nix::pty::Winsize);
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call; the fd is
        // the pty master this struct owns.
        unsafe { set_winsize(std::os::fd::AsRawFd::as_raw_fd(&self.master), &size) }
            .expect("TIOCSWINSZ");
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    }

    /// Types `input`.
    pub fn write(&mut self, input: &[u8]) {
        self.master.write_all(input).unwrap();
    }

    /// Waits (bounded) for `needle` in the output.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits (bounded) for berth to exit: its exit code and output; killed on timeout.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(200));
                return (status.code(), self.output());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "berth did not exit within {limit:?}; output: {:?}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0, read to the end); retried (bounded) while the
/// connection fails or closes without a response (the server may still be starting).
pub fn http_get(port: u16, path: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
            let mut body = Vec::new();
            s.read_to_end(&mut body)?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        })();
        match attempt {
            Ok(r) if r.starts_with("HTTP/") => return r,
            other => assert!(
                Instant::now() < deadline,
                "GET 127.0.0.1:{port}{path}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Env {
    /// Pushes busybox with another config (a label) as `<registry>/<repo>:v1` — an image
    /// with an ID of its own; returns its name.
    pub fn push_variant(&self, repo: &str) -> String {
        let layout = self.dir.path().join("layout");
        let img = format!("{}:v1", layout.display());
        let variant = format!("{}:{repo}", layout.display());
        run_ok(Command::new("umoci").args([
            "config",
            "--image",
            &img,
            "--tag",
            repo,
            "--config.label",
            &format!("variant={repo}"),
        ]));
        let name = format!("{}/{repo}:v1", self.host);
        run_ok(
            Command::new("skopeo")
                .args(push_args(self.auth))
                .arg(format!("oci:{variant}"))
                .arg(format!("docker://{name}")),
        );
        name
    }
}

impl Env {
    /// Pushes `<registry>/<repo>:v1` as an OCI image index of two platforms: busybox as built
    /// (this node's platform) and the same with `architecture: arm64` in its config (and a
    /// label, so it has an ID of its own); returns the name.
    pub fn push_multiarch(&self, repo: &str) -> String {
        let layout = self.dir.path().join("layout");
        let img = format!("{}:v1", layout.display());
        run_ok(Command::new("umoci").args([
            "config",
            "--image",
            &img,
            "--tag",
            "arm",
            "--architecture",
            "arm64",
            "--config.label",
            "arch=arm64",
        ]));
        let index_path = layout.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
        let entry = |tag: &str| {
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
                .unwrap_or_else(|| panic!("{tag} in {index}"))
                .clone()
        };
        let host_arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let with_platform = |mut m: serde_json::Value, arch: &str| {
            m.as_object_mut().unwrap().remove("annotations");
            m["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
            m
        };
        let multi = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [with_platform(entry("v1"), host_arch), with_platform(entry("arm"), "arm64")],
        });
        let bytes = serde_json::to_vec(&multi).unwrap();
        let blob = layout.join("index-blob.json");
        fs::write(&blob, &bytes).unwrap();
        let sum = run_ok(Command::new("sha256sum").arg(&blob));
        let hex = sum.split_whitespace().next().unwrap().to_owned();
        fs::rename(&blob, layout.join("blobs/sha256").join(&hex)).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }));
        fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let name = format!("{}/{repo}:v1", self.host);
        run_ok(
            Command::new("skopeo")
                .args(push_args(self.auth))
                .arg("--all")
                .arg(format!("oci:{}:multi", layout.display()))
                .arg(format!("docker://{name}")),
        );
        name
    }
}

impl Env {
    /// Pushes `<registry>/<repo>:v1`: busybox with `extra` more layers (a file of 64 KiB of
    /// distinct bytes each); returns the name and the layer digests (bottom first) and sizes,
    /// as the registry serves the manifest.
    pub fn push_layered(&self, repo: &str, extra: usize) -> (String, Vec<(String, u64)>) {
        let layout = self.dir.path().join("layout");
        let mut from = "v1".to_owned();
        for n in 0..extra {
            let file = self.dir.path().join(format!("{repo}-layer{n}"));
            // Distinct per repo and layer, so each layer is a blob of its own.
            let seed = repo
                .bytes()
                .fold(n as u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
            let data: Vec<u8> = (0..65536u32)
                .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            fs::write(&file, data).unwrap();
            let to = format!("{repo}-{n}");
            run_ok(
                Command::new("umoci")
                    .args(["insert", "--image"])
                    .arg(format!("{}:{from}", layout.display()))
                    .args(["--tag", &to])
                    .arg(&file)
                    .arg(format!("/layer{n}")),
            );
            from = to;
        }
        let name = format!("{}/{repo}:v1", self.host);
        run_ok(
            Command::new("skopeo")
                .args(push_args(self.auth))
                .arg(format!("oci:{}:{from}", layout.display()))
                .arg(format!("docker://{name}")),
        );
        let mut inspect = Command::new("skopeo");
        inspect.args(["inspect", "--raw", "--tls-verify=false"]);
        if self.auth {
            inspect.arg(format!("--creds={}:{}", AUTH.0, AUTH.1));
        }
        let raw = run_ok(inspect.arg(format!("docker://{name}")));
        let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let layers = manifest["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("layers in {manifest}"))
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_owned(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect();
        (name, layers)
    }
}
