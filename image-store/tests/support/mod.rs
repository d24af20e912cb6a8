//! Test support: a real `docker-registry` on 127.0.0.1 (the test-registry crate), fixture
//! images built with umoci and pushed with skopeo, and tree comparison.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use test_registry::tls::{CertKey, TestCa};
use test_registry::RegistryConfig;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the external tools a test needs are installed; prints why it skips when not.
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        if !Path::new(t).exists() {
            eprintln!("SKIP {test}: {t} is not installed (scripts/install-deps installs it)");
            return false;
        }
    }
    true
}

pub fn free_port() -> u16 {
    test_registry::free_port().expect("a free port on 127.0.0.1")
}

/// Starts `docker-registry`s (the test-registry crate: a temp dir, a free loopback port,
/// stopped by PID on drop), with deletes enabled as the GC tests need.
pub struct Registry;

impl Registry {
    pub fn start() -> test_registry::Registry {
        Self::run(RegistryConfig::temp())
    }

    /// A registry that requires HTTP basic auth (htpasswd) for `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> test_registry::Registry {
        Self::run(RegistryConfig::temp().basic_auth(user, password))
    }

    /// A registry serving HTTPS with `server`'s certificate, optionally with auth.
    pub fn start_tls(server: &CertKey, auth: Option<(&str, &str)>) -> test_registry::Registry {
        let config = RegistryConfig::temp().tls(&server.cert, &server.key);
        Self::run(match auth {
            Some((user, password)) => config.basic_auth(user, password),
            None => config,
        })
    }

    /// A registry serving HTTPS that demands a client certificate signed by `ca`
    /// (docker-registry's `http.tls.clientcas`: mutual TLS).
    pub fn start_mutual_tls(server: &CertKey, ca: &TestCa) -> test_registry::Registry {
        Self::run(
            RegistryConfig::temp()
                .tls(&server.cert, &server.key)
                .client_ca(&ca.cert),
        )
    }

    fn run(config: RegistryConfig) -> test_registry::Registry {
        config
            .delete_enabled()
            .start()
            .expect("start docker-registry")
    }
}

/// A fresh test CA in `dir` (test-registry's, made with openssl) and a server certificate it
/// signed for `IP:127.0.0.1` (`server.pem`, `server.key`).
pub fn make_test_certs(dir: &Path) -> (TestCa, CertKey) {
    let ca = TestCa::new(dir).expect("make a test CA");
    let server = ca
        .server_cert("server", &["IP:127.0.0.1"])
        .expect("make a server certificate");
    (ca, server)
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout with tag `app`, built by umoci in three layers:
/// 1. busybox with symlinks, a hardlink, modes, a fifo, owners, fixed mtimes, dirs to change;
/// 2. a whiteout of `/data/gone`;
/// 3. `/opq` replaced opaquely by a dir holding only `new`.
pub fn build_fixture(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let src = work.join("src1");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::create_dir_all(src.join("data/sub")).unwrap();
    fs::create_dir_all(src.join("opq")).unwrap();
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", src.join("bin/ls")).unwrap();
    fs::write(src.join("etc/hostname"), b"berth\n").unwrap();
    fs::write(src.join("data/keep"), b"keep").unwrap();
    fs::write(src.join("data/gone"), b"gone").unwrap();
    fs::write(src.join("data/sub/deep"), b"deep").unwrap();
    fs::write(src.join("data/hl1"), b"hard").unwrap();
    fs::hard_link(src.join("data/hl1"), src.join("data/hl2")).unwrap();
    fs::write(src.join("opq/old1"), b"old").unwrap();
    fs::write(src.join("data/secret"), b"s").unwrap();
    run(Command::new("chmod")
        .args(["0600"])
        .arg(src.join("data/secret")));
    run(Command::new("chmod")
        .args(["4755"])
        .arg(src.join("bin/busybox")));
    run(Command::new("mkfifo").arg(src.join("data/fifo")));
    if is_root() {
        run(Command::new("chown")
            .args(["-h", "1000:1000"])
            .arg(src.join("data/keep")));
    }
    run(Command::new("touch")
        .args(["-h", "-d", "2021-02-03 04:05:06"])
        .arg(src.join("etc/hostname"))
        .arg(src.join("bin/sh")));
    let src3 = work.join("src3");
    fs::create_dir_all(&src3).unwrap();
    fs::write(src3.join("new"), b"new").unwrap();

    let img = format!("{}:app", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&src)
        .arg("/"));
    run(Command::new("umoci").args(["insert", "--image", &img, "--whiteout", "/data/gone"]));
    run(Command::new("umoci")
        .args(["insert", "--image", &img, "--opaque"])
        .arg(&src3)
        .arg("/opq"));
    layout
}

pub fn push(layout: &Path, tag: &str, dest: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}")));
}

/// What the tree comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryInfo {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: Option<i64>,
    content: Option<Vec<u8>>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every path under `root` with type, mode, owner, link count, mtime (non-dirs), contents or
/// link target, and user xattrs.
pub fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, EntryInfo> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    let mut budget = 100_000;
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            budget -= 1;
            assert!(budget > 0, "tree too large");
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", None)
            } else if ft.is_symlink() {
                (
                    "symlink",
                    Some(
                        fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                    ),
                )
            } else if ft.is_file() {
                ("file", Some(fs::read(&p).unwrap()))
            } else if ft.is_fifo() {
                ("fifo", None)
            } else if ft.is_char_device() {
                ("char", Some(m.rdev().to_le_bytes().to_vec()))
            } else {
                ("other", None)
            };
            let xattrs = xattr::list(&p)
                .map(|names| {
                    names
                        .filter_map(|n| n.into_string().ok())
                        .filter(|n| n.starts_with("user."))
                        .map(|n| {
                            let v = xattr::get(&p, &n).ok().flatten().unwrap_or_default();
                            (n, v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.insert(
                p.strip_prefix(root).unwrap().to_owned(),
                EntryInfo {
                    kind,
                    mode: if ft.is_symlink() {
                        0
                    } else {
                        m.mode() & 0o7777
                    },
                    uid: m.uid(),
                    gid: m.gid(),
                    nlink: if ft.is_dir() { 0 } else { m.nlink() },
                    mtime: if ft.is_dir() { None } else { Some(m.mtime()) },
                    content,
                    xattrs,
                },
            );
        }
    }
    out
}

/// Asserts two trees are equal, listing every difference.
pub fn assert_same_tree(ours: &Path, reference: &Path) {
    let a = snapshot_tree(ours);
    let b = snapshot_tree(reference);
    let mut diffs = Vec::new();
    for (p, info) in &b {
        match a.get(p) {
            None => diffs.push(format!("missing in berth: {}", p.display())),
            Some(x) if x != info => diffs.push(format!(
                "{}: berth {:?} vs umoci {:?}",
                p.display(),
                summary(x),
                summary(info)
            )),
            _ => {}
        }
    }
    for p in a.keys() {
        if !b.contains_key(p) {
            diffs.push(format!("extra in berth: {}", p.display()));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
    assert!(b.len() > 5, "reference tree suspiciously small");
}

fn summary(e: &EntryInfo) -> String {
    format!(
        "{} mode={:o} uid={} gid={} nlink={} mtime={:?} len={:?} xattrs={:?}",
        e.kind,
        e.mode,
        e.uid,
        e.gid,
        e.nlink,
        e.mtime,
        e.content.as_ref().map(Vec::len),
        e.xattrs.keys().collect::<Vec<_>>()
    )
}

fn sha256_hex(data: &[u8]) -> String {
    image_store::Digest::sha256_of(data).hex().to_owned()
}

/// Adds tag `new_tag` to the layout: a copy of `tag` whose gzip layers are recompressed as
/// zstd (`"zstd"`) or stored uncompressed (`"tar"`). Config and diff_ids stay the same.
pub fn recompressed_twin(layout: &Path, tag: &str, new_tag: &str, format: &str) {
    use serde_json::Value;
    let blobs = layout.join("blobs/sha256");
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in layout")
        .clone();
    let digest = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blobs.join(&digest)).unwrap()).unwrap();
    for layer in manifest["layers"].as_array_mut().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_owned();
        let gz = fs::read(blobs.join(&hex)).unwrap();
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        let (data, media_type) = match format {
            "zstd" => (
                zstd::encode_all(&tar[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            _ => (tar, "application/vnd.oci.image.layer.v1.tar"),
        };
        let new_hex = sha256_hex(&data);
        fs::write(blobs.join(&new_hex), &data).unwrap();
        layer["digest"] = Value::from(format!("sha256:{new_hex}"));
        layer["size"] = Value::from(data.len());
        layer["mediaType"] = Value::from(media_type);
    }
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let mhex = sha256_hex(&mbytes);
    fs::write(blobs.join(&mhex), &mbytes).unwrap();
    let mut new_entry = entry;
    new_entry["digest"] = Value::from(format!("sha256:{mhex}"));
    new_entry["size"] = Value::from(mbytes.len());
    new_entry["annotations"]["org.opencontainers.image.ref.name"] = Value::from(new_tag);
    index["manifests"].as_array_mut().unwrap().push(new_entry);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Adds tag `new_tag`: an image index holding `tag`'s manifest as this machine's platform and a
/// copy of it whose config says `linux/arm64/v8` (same layers).
pub fn multi_platform_twin(layout: &Path, tag: &str, new_tag: &str) {
    use serde_json::Value;
    let blobs = layout.join("blobs/sha256");
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in layout")
        .clone();
    let mhex = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let mbytes = fs::read(blobs.join(&mhex)).unwrap();
    let mut manifest: Value = serde_json::from_slice(&mbytes).unwrap();
    let chex = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let mut config: Value = serde_json::from_slice(&fs::read(blobs.join(&chex)).unwrap()).unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_owned();
    config["architecture"] = Value::from("arm64");
    config["variant"] = Value::from("v8");
    let cbytes = serde_json::to_vec(&config).unwrap();
    let new_chex = sha256_hex(&cbytes);
    fs::write(blobs.join(&new_chex), &cbytes).unwrap();
    manifest["config"]["digest"] = Value::from(format!("sha256:{new_chex}"));
    manifest["config"]["size"] = Value::from(cbytes.len());
    let arm_bytes = serde_json::to_vec(&manifest).unwrap();
    let arm_hex = sha256_hex(&arm_bytes);
    fs::write(blobs.join(&arm_hex), &arm_bytes).unwrap();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": mt, "digest": format!("sha256:{arm_hex}"), "size": arm_bytes.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": mt, "digest": format!("sha256:{mhex}"), "size": mbytes.len(),
             "platform": {"os": "linux", "architecture": host_arch}},
        ]
    });
    let ibytes = serde_json::to_vec(&idx).unwrap();
    let ihex = sha256_hex(&ibytes);
    fs::write(blobs.join(&ihex), &ibytes).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{ihex}"),
            "size": ibytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": new_tag},
        }));
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}
