//! Shared parts of the root tests: a gate that says when a test cannot run, unique cgroup
//! names, a helper child process (this test binary re-executed in a helper mode), and a guard
//! that kills the test's processes (by PID) and removes its cgroups even when the test fails.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_cgroups::{CgroupManager, CgroupPath};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const HELPER_ENV: &str = "BERTH_CGROUPS_TEST_HELPER";

/// True if the test can run; otherwise prints why ("skipped: ...") so the output says so
/// (or panics when BERTH_REQUIRE_ROOT_TESTS is set).
pub fn can_run(test: &str) -> bool {
    if std::env::var_os(HELPER_ENV).is_some() {
        return false;
    }
    if !nix::unistd::geteuid().is_root() {
        // CI can insist that these tests really run.
        if std::env::var_os("BERTH_REQUIRE_ROOT_TESTS").is_some_and(|v| !v.is_empty()) {
            panic!("{test}: needs root and BERTH_REQUIRE_ROOT_TESTS is set");
        }
        println!("{test}: skipped: needs root (not counted as a real pass)");
        return false;
    }
    true
}

/// A cgroup path no other test (or test run) uses: /berth-test-<pid>-<n>.
pub fn unique_path() -> CgroupPath {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "berth-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    CgroupPath::from_spec(Some(&format!("/{name}")), &name, false).unwrap()
}

/// A child process the test started; killed (by PID) and reaped on drop.
pub struct TestChild {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl TestChild {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Lets a helper start its work (it waits for a line on stdin, so that the test can move it
    /// into a cgroup first).
    pub fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go() once");
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(10));
    }
}

/// `sleep 600`.
pub fn spawn_sleep() -> TestChild {
    let child = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    TestChild { child, stdin: None }
}

/// This test binary in helper `mode` ("burn", "alloc:<MiB>", "devices"), waiting for go().
pub fn spawn_helper(mode: &str) -> TestChild {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "common::helper_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let stdin = child.stdin.take();
    TestChild { child, stdin }
}

/// The helper side: does nothing in a normal test run.
#[test]
fn helper_process() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    if mode == "burn" {
        let start = Instant::now();
        let mut x: u64 = 0;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        // And some memory charged to the new cgroup.
        let mut v = vec![0u8; 4 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        std::thread::sleep(Duration::from_secs(60));
    } else if let Some(mib) = mode.strip_prefix("alloc:") {
        let mib: usize = mib.parse().unwrap();
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..mib {
            let mut v = vec![0u8; 1 << 20];
            for i in (0..v.len()).step_by(4096) {
                v[i] = 1;
            }
            chunks.push(std::hint::black_box(v));
        }
        std::process::exit(0);
    } else if mode == "devices" {
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
        let zero = std::fs::File::open("/dev/zero");
        // 0: as the filter says (null allowed, zero denied); 3/4: it did not filter.
        let code = match (null, zero) {
            (Ok(_), Err(e)) if e.raw_os_error() == Some(libc::EPERM) => 0,
            (Err(_), _) => 3,
            (Ok(_), _) => 4,
        };
        std::process::exit(code);
    }
    std::thread::sleep(Duration::from_secs(60));
}

/// The test's cgroup: killed-into, thawed and removed on drop.
pub struct CgroupGuard<M: CgroupManager + ?Sized> {
    pub cg: Box<M>,
}

impl<M: CgroupManager + ?Sized> Drop for CgroupGuard<M> {
    fn drop(&mut self) {
        let _ = self.cg.kill_all(Signal::SIGKILL);
        let _ = self.cg.thaw();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.cg.remove().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove test cgroup {:?}", self.cg.paths());
    }
}

pub fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

/// A real block device's "major:minor" (not loop/zram), if the machine has one.
pub fn block_device() -> Option<(i64, i64)> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        let name = e.file_name()?.to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("zram") || name.starts_with("ram") {
            continue;
        }
        let dev = std::fs::read_to_string(e.join("dev")).ok()?;
        let (ma, mi) = dev.trim().split_once(':')?;
        return Some((ma.parse().ok()?, mi.parse().ok()?));
    }
    None
}

/// True if /proc/<pid>/cgroup puts `pid` in `name` for the hierarchy line matching `controllers`.
pub fn proc_in_cgroup(pid: Pid, controllers: &str, name: &str) -> bool {
    let content = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    content.lines().any(|l| {
        let mut it = l.splitn(3, ':');
        let (_, c, p) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        c == controllers && p.ends_with(name)
    })
}
