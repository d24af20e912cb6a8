//! An OCI bundle in a temp dir: a busybox-static rootfs (applet symlinks in /bin) and a
//! config.json that starts as `berth-runtime spec` wrote it, changed through JSON pointers.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::binaries;
use crate::command::{run_bounded, DEFAULT_TIMEOUT};

/// A bundle directory, removed on drop.
pub struct Bundle {
    dir: TempDir,
    config: Value,
}

fn applets() -> &'static [String] {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let out = run_bounded(
            Command::new(binaries::busybox()).arg("--list"),
            DEFAULT_TIMEOUT,
        )
        .ok();
        out.stdout.lines().map(str::to_string).collect()
    })
}

/// Makes `root` a busybox rootfs: /bin/busybox (a copy), a symlink per applet, /etc/passwd
/// and /etc/group, and the usual empty directories.
pub fn make_rootfs(root: &Path) {
    for d in [
        "bin", "dev", "proc", "sys", "tmp", "etc", "root", "mnt", "run", "var",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(binaries::busybox(), root.join("bin/busybox")).unwrap();
    for a in applets() {
        if a != "busybox" {
            symlink("busybox", root.join("bin").join(a)).unwrap();
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

impl Bundle {
    /// A bundle with the default spec of berth-runtime, except process.terminal = false and
    /// args = `["true"]`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle-")
            .tempdir()
            .expect("bundle temp dir");
        make_rootfs(&dir.path().join("rootfs"));
        run_bounded(
            Command::new(binaries::berth_runtime())
                .arg("spec")
                .arg("--bundle")
                .arg(dir.path()),
            DEFAULT_TIMEOUT,
        )
        .ok();
        let text = fs::read_to_string(dir.path().join("config.json")).unwrap();
        let config: Value = serde_json::from_str(&text).expect("spec output is JSON");
        let mut b = Self { dir, config };
        b.set("/process/terminal", json!(false));
        b.args(&["true"]);
        b
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The config as it stands.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The value at a JSON pointer (`/process/args`), or Null.
    pub fn get(&self, pointer: &str) -> &Value {
        self.config.pointer(pointer).unwrap_or(&Value::Null)
    }

    /// Sets the value at a JSON pointer, creating missing objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let mut cur = &mut self.config;
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let (last, init) = parts.split_last().expect("non-empty pointer");
        for p in init {
            if cur.get(*p).is_none() || cur[*p].is_null() {
                cur[*p] = json!({});
            }
            cur = &mut cur[*p];
        }
        cur[*last] = value;
        self
    }

    /// Appends to the array at a JSON pointer (created if missing).
    pub fn push(&mut self, pointer: &str, value: Value) -> &mut Self {
        if !self.get(pointer).is_array() {
            self.set(pointer, json!([]));
        }
        self.config
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .unwrap()
            .push(value);
        self
    }

    /// process.args.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// process.args = `sh -c script`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// root.readonly.
    pub fn readonly(&mut self, ro: bool) -> &mut Self {
        self.set("/root/readonly", json!(ro))
    }

    /// Adds a mount.
    pub fn mount(&mut self, m: Value) -> &mut Self {
        self.push("/mounts", m)
    }

    /// Adds a namespace of `kind` (new, or joined when `path` is given), replacing one of the
    /// same kind.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let ns = match path {
            Some(p) => json!({"type": kind, "path": p}),
            None => json!({"type": kind}),
        };
        self.push("/linux/namespaces", ns)
    }

    /// Removes the namespace of `kind` (the container then shares the host's).
    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(a) = self
            .config
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            a.retain(|n| n["type"] != kind);
        }
        self
    }

    /// A private tmpfs on /tmp, so that a writing test leaves the shared rootfs as it was
    /// (the same bundle runs under both runtimes).
    pub fn tmpfs_tmp(&mut self) -> &mut Self {
        self.mount(json!({
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"]
        }))
    }

    /// Adds an environment variable.
    pub fn env(&mut self, kv: &str) -> &mut Self {
        self.push("/process/env", json!(kv))
    }

    /// Writes config.json (the runtime wrapper does this before create/run).
    pub fn write(&self) {
        fs::write(
            self.path().join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .expect("write config.json");
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // A container that still writes into the rootfs can make one removal fail; retry a
        // few times (TempDir's own removal then finds nothing).
        for _ in 0..5 {
            match fs::remove_dir_all(self.dir.path()) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        eprintln!("could not remove bundle {}", self.dir.path().display());
    }
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}
