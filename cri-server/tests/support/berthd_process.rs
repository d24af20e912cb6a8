//! berthd as a child process of the test, on a [`Pods`] config: for the crash tests, which
//! have it kill itself at a fault point (`BERTHD_CRASH_AT`) and start the next one on the same
//! directories.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_cri::service::crash_point;

use super::pods::Pods;

/// The berthd binary on the test's config (the test process never opens berthd's stores: their
/// database lock is per process), told to crash (SIGKILL itself) at `crash` if given; killed,
/// by its PID, on drop.
pub struct Berthd(Child);

impl Berthd {
    pub fn start(pods: &Pods, crash: Option<&str>) -> Berthd {
        Self::start_with(pods, crash, &[])
    }

    /// [`Berthd::start`] with more command-line arguments.
    pub fn start_with(pods: &Pods, crash: Option<&str>, args: &[&str]) -> Berthd {
        let config = pods.dir.path().join("berthd.toml");
        std::fs::write(&config, pods.config.to_toml()).unwrap();
        let _ = std::fs::remove_file(&pods.config.listen);
        let log_path = Self::log_path(pods, crash);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthd"));
        cmd.arg("--config")
            .arg(&config)
            .args(args)
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap());
        if let Some(point) = crash {
            cmd.env(crash_point::ENV, point);
        }
        let mut child = cmd.spawn().expect("start berthd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pods.config.listen.exists() {
            let ended = child.try_wait().unwrap();
            assert!(
                ended.is_none() && Instant::now() < deadline,
                "berthd did not start ({ended:?}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Berthd(child)
    }

    /// The file its stderr goes to.
    pub fn log_path(pods: &Pods, crash: Option<&str>) -> std::path::PathBuf {
        pods.dir
            .path()
            .join(format!("berthd-{}.log", crash.unwrap_or("plain")))
    }

    /// Waits (bounded) for berthd to die at its crash point.
    pub fn wait_killed(mut self) {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert_eq!(status.signal(), Some(9), "berthd ended with {status:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not reach its crash point"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait (bounded): containers keep running under their shims.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "berthd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
