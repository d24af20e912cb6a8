//! Links `berth-shim` (and only it) statically, non-PIE, with no ELF interpreter.
//!
//! A shim runs beside every container and every sandbox for their whole life, so its resident
//! memory is paid per container. Linked dynamically, each shim maps ld.so, libc.so.6 and
//! libgcc_s (their resident pages count in its RSS), and being position-independent, ld.so
//! writes every pointer of its read-only data (vtables, string tables: `.data.rel.ro`) at
//! start-up, which turns those pages into private dirty memory that can never be dropped. Linked
//! statically and at a fixed address, the shim has nothing to relocate: its read-only data stays
//! clean file pages that `trim.rs` can let go once the container runs.
//!
//! `-C target-feature=+crt-static` is target-wide (RUSTFLAGS), and berth-runtime, berthd and
//! the tests stay dynamic (berth-runtime uses libseccomp). So, as `pause/build.rs` does for
//! berth-pause, the system libraries rustc asks for (`-lc`, `-lgcc_s`, `-lseccomp`, ...) are
//! found first in OUT_DIR as tiny linker scripts naming their static archives, for this one
//! binary (`rustc-link-arg-bin`). berth-shim calls no seccomp function, so the linker takes
//! nothing from libseccomp.a; the archive only has to satisfy `-lseccomp`.
use std::{env, fs, path::PathBuf, process::Command};

const BIN: &str = "berth-shim";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if target_env != "gnu" || features.split(',').any(|f| f == "crt-static") {
        return; // musl or crt-static asked for globally: already static.
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // The same driver rustc links with on linux-gnu.
    let archive = |name: &str| -> String {
        let output = Command::new("cc")
            .arg(format!("-print-file-name={name}"))
            .output()
            .expect("runtime: run `cc -print-file-name` (is gcc installed?)");
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            path.starts_with('/') && PathBuf::from(&path).exists(),
            "runtime: static archive {name} not found for {BIN} (install libc6-dev, gcc and libseccomp-dev)"
        );
        path
    };
    let script = |lib: &str, archives: &[&str]| {
        let paths: Vec<String> = archives.iter().map(|a| archive(a)).collect();
        let text = format!(
            "/* {BIN}: link {lib} statically */\nGROUP({})\n",
            paths.join(" ")
        );
        fs::write(out.join(format!("lib{lib}.so")), text).expect("write linker script");
    };
    for lib in ["c", "m", "rt", "pthread", "dl", "util", "seccomp"] {
        script(lib, &[&format!("lib{lib}.a")]);
    }
    script("gcc_s", &["libgcc_eh.a", "libgcc.a"]);
    // `-L` for this binary only (`rustc-link-search` would reach the library's users, the
    // tests and berth-runtime); it is searched before the linker's default directories.
    // `-static -no-pie` come after rustc's own `-pie`: the last one wins.
    for arg in [
        format!("-L{}", out.display()),
        "-static".into(),
        "-no-pie".into(),
    ] {
        println!("cargo:rustc-link-arg-bin={BIN}={arg}");
    }
}
