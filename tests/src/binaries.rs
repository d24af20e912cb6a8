//! Where the binaries under test and the reference tools are.
//!
//! berth's binaries are found in the target dir of the running test executable
//! (`target/debug/deps/<test>-<hash>` → `target/debug/berth-runtime`); `scripts/test` builds
//! them before `cargo test`.

use std::path::{Path, PathBuf};

/// The directory that holds the workspace's built binaries (`target/debug`).
pub fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a parent dir");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// A binary of this workspace, built with the same CARGO_TARGET_DIR as the tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build -p runtime --bins, with the same \
         CARGO_TARGET_DIR as cargo test)",
        path.display()
    );
    path
}

/// The berth-runtime binary under test.
pub fn berth_runtime() -> PathBuf {
    workspace_bin("berth-runtime")
}

/// A tool from $PATH (or /usr/sbin, /sbin, which root's PATH may lack), or None.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tool the tests cannot do without (installed by scripts/install-deps).
pub fn required_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("{name} is not installed: scripts/install-deps installs it (Debian package)")
    })
}

/// Debian's runc, the reference runtime of the differential tests.
pub fn runc() -> PathBuf {
    required_tool("runc")
}

/// The static busybox that makes the test rootfs.
pub fn busybox() -> PathBuf {
    let p = Path::new("/bin/busybox");
    assert!(
        p.is_file(),
        "/bin/busybox is missing: install busybox-static (scripts/install-deps)"
    );
    p.to_path_buf()
}
