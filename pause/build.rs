//! Links `berth-pause` statically, so it runs in an empty rootfs.
//!
//! The usual way is `-C target-feature=+crt-static`, but that is a target-wide flag (RUSTFLAGS or
//! `.cargo/config.toml`), not something one package of a workspace can ask for, and the rest of
//! the workspace links libseccomp and glibc dynamically. So this script does what crt-static
//! does, for this package only: the system libraries rustc asks for (`-lc`, `-lgcc_s`, ...) are
//! found first in OUT_DIR as tiny linker scripts naming the static archives (`libc.a`,
//! `libgcc_eh.a`, ...), and the binary is linked `-static-pie` (no ELF interpreter).
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if features.split(',').any(|f| f == "crt-static") {
        return; // Already static (musl, or crt-static asked for globally).
    }
    assert_eq!(
        target_env, "gnu",
        "berth-pause: static linking is set up for glibc targets only; build with -C target-feature=+crt-static"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // The same driver rustc links with on linux-gnu.
    let archive = |name: &str| -> String {
        let output = Command::new("cc")
            .arg(format!("-print-file-name={name}"))
            .output()
            .expect("berth-pause: run `cc -print-file-name` (is gcc installed?)");
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            path.starts_with('/') && PathBuf::from(&path).exists(),
            "berth-pause: static archive {name} not found (install libc6-dev and gcc)"
        );
        path
    };
    let shim = |lib: &str, archives: &[&str]| {
        let paths: Vec<String> = archives.iter().map(|a| archive(a)).collect();
        let script = format!(
            "/* berth-pause: link {lib} statically */\nGROUP({})\n",
            paths.join(" ")
        );
        fs::write(out.join(format!("lib{lib}.so")), script).expect("write linker script");
    };
    for lib in ["c", "m", "rt", "pthread", "dl", "util"] {
        shim(lib, &[&format!("lib{lib}.a")]);
    }
    shim("gcc_s", &["libgcc_eh.a", "libgcc.a"]);
    // For the binary only (`rustc-link-search` would apply to the test binaries too); `-L` order
    // does not matter to the linker, and these come before its default directories.
    println!("cargo:rustc-link-arg-bins=-L{}", out.display());
    println!("cargo:rustc-link-arg-bins=-static-pie");
    if env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rustc-link-arg-bins=-Wl,--strip-all"); // a pause image should be small
    }
}
