//! Drives the built `berth` binary against a `berthd` binary started on temp dirs and a temp
//! socket, with a busybox image pulled from a local `docker-registry` (plain HTTP).
//!
//! The root test needs `berthd` (and its helpers) built into the same target dir:
//! `cargo build -p runtime -p berth-pause -p cni -p cri-server --bins`.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/bin/busybox",
];

fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

fn berthd_bin() -> PathBuf {
    Path::new(berth_bin()).with_file_name("berthd")
}

fn can_run(test: &str) -> bool {
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

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

trait PipeJson {
    fn pipe_json(&self) -> serde_json::Value;
}

impl PipeJson for String {
    fn pipe_json(&self) -> serde_json::Value {
        serde_json::from_str(self).unwrap_or_else(|e| panic!("{e}: {self}"))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Child processes (killed by PID) and, first, whatever berth left in berthd.
struct Env {
    dir: tempfile::TempDir,
    registry: Child,
    berthd: Option<Child>,
    host: String,
}

impl Env {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn berth(&self, args: &[&str]) -> Output {
        Command::new(berth_bin())
            .args(args)
            .env("BERTH_ADDRESS", format!("unix://{}", self.sock().display()))
            .env("BERTH_LOG_ROOT", self.dir.path().join("logs"))
            .stdin(Stdio::null())
            .output()
            .expect("run berth")
    }

    /// Runs berth, asserts success, answers stdout.
    fn ok(&self, args: &[&str]) -> String {
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

    fn lines(&self, args: &[&str]) -> Vec<String> {
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
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

fn start_registry(dir: &Path) -> (Child, String) {
    let host = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
        dir.join("registry").display()
    );
    let config = dir.join("registry.yml");
    fs::write(&config, yaml).unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    (child, host)
}

fn wait_registry(host: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(host) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not come up on {host}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// busybox-static with a few applet links, CMD `sh`, pushed to `dest` over plain HTTP.
fn push_busybox(work: &Path, dest: &str) {
    let layout = work.join("layout");
    let src = work.join("rootfs");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "cat", "ls"] {
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
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{dest}")),
    );
}

fn start() -> Env {
    // Short: the shims' socket paths under the state dir are limited to 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("b")
        .tempdir_in("/tmp")
        .unwrap();
    let (registry, host) = start_registry(dir.path());
    let mut env = Env {
        dir,
        registry,
        berthd: None,
        host,
    };
    wait_registry(&env.host);
    push_busybox(env.dir.path(), &format!("{}/busybox:v1", env.host));
    let config = env.dir.path().join("berthd.toml");
    fs::write(
        &config,
        format!("[registry]\ninsecure = [\"{}\"]\n", env.host),
    )
    .unwrap();
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

#[test]
fn daemon_not_running_says_how_to_start_it() {
    let out = Command::new(berth_bin())
        .args(["--address", "unix:///nonexistent/berth.sock", "ps"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("berthd is not running"), "{err}");
    assert!(err.contains("systemctl start berthd"), "{err}");
}

#[test]
fn completion_scripts() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(Command::new(berth_bin()).args(["completion", shell]));
        assert!(out.contains("berth"), "{shell}: {out}");
    }
}

#[test]
fn pull_run_exec_logs_rm() {
    if !can_run("pull_run_exec_logs_rm") {
        return;
    }
    let env = start();
    let image = format!("{}/busybox:v1", env.host);

    let version = env.ok(&["version"]);
    assert!(version.contains("Server:"), "{version}");

    env.ok(&["pull", &image]);
    let images = env.ok(&["images"]);
    assert!(images.starts_with("REPOSITORY"), "{images}");
    let row = images
        .lines()
        .find(|l| l.starts_with(&format!("{}/busybox ", env.host)))
        .unwrap_or_else(|| panic!("busybox in {images}"));
    assert!(row.split_whitespace().nth(1) == Some("v1"), "{row}");
    let ids = env.lines(&["images", "-q"]);
    assert!(ids.iter().any(|i| i.starts_with("sha256:")), "{ids:?}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    assert!(json.as_array().is_some_and(|a| !a.is_empty()), "{json}");

    // Foreground: the output, then the container's exit code.
    let out = env.berth(&["run", "--net", "host", "--name", "t1", &image, "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{out:?}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = env.berth(&[
        "run",
        "--rm",
        "--net",
        "host",
        "--name",
        "t2",
        "-e",
        "X=42",
        &image,
        "sh",
        "-c",
        "echo x=$X; echo err >&2; exit 3",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x=42\n", "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n", "{out:?}");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let all = env.ok(&["ps", "-a"]);
    assert!(all.contains("t1") && !all.contains("t2"), "{all}");
    assert!(all.contains("Exited (0)"), "{all}");

    // Detached.
    let id = env.ok(&[
        "run",
        "-d",
        "--net",
        "host",
        "--name",
        "bg",
        &image,
        "sh",
        "-c",
        "echo started; sleep 300",
    ]);
    let id = id.trim().to_owned();
    assert!(!id.is_empty());
    let ps = env.ok(&["ps"]);
    assert!(
        ps.contains("bg") && ps.contains("Running") && !ps.contains("t1"),
        "{ps}"
    );
    assert_eq!(env.lines(&["ps", "-q"]), std::slice::from_ref(&id));
    let pods = env.ok(&["pods"]);
    assert!(pods.contains("bg") && pods.contains("Ready"), "{pods}");

    assert_eq!(env.ok(&["exec", "bg", "echo", "from-exec"]), "from-exec\n");
    let out = env.berth(&["exec", &id[..8], "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = env.berth(&["exec", "-it", "bg", "sh"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported yet"),
        "{out:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = env.ok(&["logs", "bg"]);
        if logs == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = env.ok(&["logs", "--timestamps", "--tail", "1", "t1"]);
    assert!(logs.ends_with(" hi\n") && logs.len() > 20, "{logs:?}");

    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", &id[..6]])).unwrap();
    assert_eq!(inspect[0]["status"]["state"], "Running", "{inspect}");
    assert_eq!(inspect[0]["status"]["id"], id.as_str(), "{inspect}");

    // Entrypoint, working directory and user.
    let out = env.ok(&[
        "run",
        "--rm",
        "--net",
        "host",
        "--workdir",
        "/tmp",
        "--user",
        "1000:1000",
        "--entrypoint",
        "sh",
        &image,
        "-c",
        "pwd; busybox id -u; busybox id -g",
    ]);
    assert_eq!(out, "/tmp\n1000\n1000\n");

    // logs -f follows until the container exits; stop; the pod commands.
    let id2 = env.ok(&[
        "run",
        "-d",
        "--net",
        "host",
        "--name",
        "fl",
        &image,
        "sh",
        "-c",
        "echo a; sleep 1; echo b",
    ]);
    assert_eq!(env.ok(&["logs", "-f", "fl"]), "a\nb\n");
    let all = env.ok(&["container", "ls", "-a"]);
    assert!(all.contains("fl") && all.contains("Exited (0)"), "{all}");
    let pod = env.ok(&["inspect", id2.trim()]);
    let pod: serde_json::Value = serde_json::from_str(&pod).unwrap();
    assert_eq!(pod[0]["status"]["state"], "Exited", "{pod}");
    let pod_id = env
        .ok(&["ps", "-a", "--format", "json"])
        .pipe_json()
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id2.trim())
        .map(|c| c["pod_sandbox_id"].as_str().unwrap().to_owned())
        .unwrap();
    let p: serde_json::Value =
        serde_json::from_str(&env.ok(&["pod", "inspect", &pod_id[..10]])).unwrap();
    assert_eq!(p[0]["status"]["state"], "Ready", "{p}");
    env.ok(&["pod", "stop", &pod_id]);
    assert!(env.ok(&["pods"]).contains("NotReady"));
    env.ok(&["pod", "rm", "fl"]);
    assert!(!env.ok(&["ps", "-a"]).contains("fl"));
    let img: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &image])).unwrap();
    assert!(
        img[0]["image"]["id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{img}"
    );
    let info = env.ok(&["info"]);
    assert!(info.contains("Runtime:"), "{info}");
    eprintln!("{info}\n{}\n{}", env.ok(&["ps", "-a"]), env.ok(&["images"]));

    // kill: SIGKILL at once (sleep as PID 1 ignores SIGTERM).
    env.ok(&[
        "run", "-d", "--net", "host", "--name", "k", &image, "sleep", "300",
    ]);
    env.ok(&["kill", "k"]);
    let all = env.ok(&["ps", "-a"]);
    assert!(
        all.lines()
            .any(|l| l.contains("Exited (137)") && l.split_whitespace().rev().nth(1) == Some("k")),
        "{all}"
    );
    env.ok(&["rm", "k"]);

    let out = env.berth(&["rm", "bg"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("rm -f"),
        "{out:?}"
    );
    env.ok(&["rm", "-f", "bg"]);
    env.ok(&["rm", "t1"]);
    assert!(env.lines(&["ps", "-a", "-q"]).is_empty());
    assert!(env.lines(&["pods", "-q"]).is_empty());
    assert!(
        fs::read_dir(env.dir.path().join("logs")).map_or(true, |mut d| d.next().is_none()),
        "pod log dirs left behind"
    );

    env.ok(&["rmi", &image]);
    assert!(!env.ok(&["images"]).contains("busybox"));
}
