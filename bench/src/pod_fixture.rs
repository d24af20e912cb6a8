//! The pods benchmark's fixture: a private `docker-registry` on a free 127.0.0.1 port, a
//! busybox image (the pods' container) and a pause image made of berth's static `berth-pause`
//! (containerd's sandbox image; berthd has it built in), both made by umoci and pushed by
//! skopeo, and a certs.d directory (containerd's hosts.toml layout) that marks the registry as
//! plain HTTP for both daemons.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use test_registry::RegistryConfig;

/// A child process stopped by PID (SIGTERM, then SIGKILL after 10 s) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has exited (and is reaped).
    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The registry with both images pushed.
pub struct Fixture {
    _registry: test_registry::Registry,
    pub host: String,
    /// `host/bench/busybox:v1`.
    pub image: String,
    /// `host/bench/pause:v1`.
    pub pause: String,
}

impl Fixture {
    pub fn build(work: &Path, registry: &Path, berth_pause: &Path) -> Result<Fixture> {
        fs::create_dir_all(work)?;
        let registry = RegistryConfig::in_dir(&work.join("registry"))
            .binary(registry)
            .start()?;
        let host = registry.host.clone();
        let busybox = build_busybox(work)?;
        let pause = build_pause(work, berth_pause)?;
        let fx = Fixture {
            _registry: registry,
            image: format!("{host}/bench/busybox:v1"),
            pause: format!("{host}/bench/pause:v1"),
            host,
        };
        push(&busybox, &fx.image)?;
        push(&pause, &fx.pause)?;
        Ok(fx)
    }
}

fn build_busybox(work: &Path) -> Result<PathBuf> {
    let layout = work.join("busybox");
    let src = work.join("busybox-rootfs");
    fs::create_dir_all(src.join("bin"))?;
    fs::create_dir_all(src.join("etc"))?;
    fs::copy("/bin/busybox", src.join("bin/busybox")).context("copy /bin/busybox")?;
    for applet in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", src.join("bin").join(applet))?;
    }
    fs::write(src.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(src.join("etc/group"), "root:x:0:\n")?;
    umoci_image(
        &layout,
        &src,
        &["--config.env", "PATH=/bin", "--config.cmd", "sh"],
    )?;
    Ok(layout)
}

fn build_pause(work: &Path, berth_pause: &Path) -> Result<PathBuf> {
    let layout = work.join("pause");
    let src = work.join("pause-rootfs");
    fs::create_dir_all(&src)?;
    fs::copy(berth_pause, src.join("pause"))
        .with_context(|| format!("copy {}", berth_pause.display()))?;
    umoci_image(&layout, &src, &["--config.entrypoint", "/pause"])?;
    Ok(layout)
}

fn umoci_image(layout: &Path, src: &Path, config: &[&str]) -> Result<()> {
    let img = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(layout))?;
    run(Command::new("umoci").args(["new", "--image", &img]))?;
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(src)
        .arg("/"))?;
    run(Command::new("umoci")
        .args(["config", "--image", &img])
        .args(config))
}

fn push(layout: &Path, reference: &str) -> Result<()> {
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{reference}")))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
