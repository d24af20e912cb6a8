//! Pulls fixture images (built by umoci, pushed by skopeo) from a real `docker-registry` and
//! compares the unpacked tree with what `umoci unpack` makes of the same image.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use image_store::{unmount, Credentials, ImageStore, PullOptions, Reference, StoreConfig};
use support::*;

const TOOLS: &[&str] = &[
    "/usr/bin/docker-registry",
    "/usr/bin/umoci",
    "/usr/bin/skopeo",
    "/bin/busybox",
];

struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

fn open_store(root: &Path, host: &str) -> ImageStore {
    let mut cfg = StoreConfig::new(root);
    cfg.registry.insecure_hosts = vec![host.to_owned()];
    ImageStore::open(cfg).unwrap()
}

/// Mounts a read-only view of the image's top snapshot and compares it with `reference`.
fn compare_with(store: &ImageStore, image: &image_store::Image, reference: &Path) {
    let chain = image.chain_id.clone().expect("image has layers");
    let key = format!("view-{}", image.manifest_digest.hex());
    let mount = store.snapshots().view(&key, &chain).unwrap();
    let target = tempfile::tempdir().unwrap();
    mount.mount(target.path()).unwrap();
    let guard = MountGuard(target.path().to_owned());
    assert_same_tree(target.path(), reference);
    drop(guard);
    store.snapshots().remove(&key).unwrap();
}

fn umoci_unpack(layout: &Path, tag: &str, work: &Path) -> PathBuf {
    let bundle = work.join(format!("bundle-{tag}"));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pulled_trees_match_umoci_unpack_for_gzip_zstd_and_docker_v2s2() {
    if !is_root() {
        eprintln!(
            "SKIP pulled_trees_match_umoci_unpack: needs root (whiteouts, owners, overlay mount)"
        );
        return;
    }
    if !have_tools("pulled_trees_match_umoci_unpack", TOOLS) {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    let reference_tree = umoci_unpack(&layout, "app", work.path());
    let host = &reg.host;
    push(&layout, "app", &format!("{host}/app:gzip"), &[]);
    recompressed_twin(&layout, "app", "app-zstd", "zstd");
    push(&layout, "app-zstd", &format!("{host}/app:zstd"), &[]);
    push(
        &layout,
        "app",
        &format!("{host}/app:v2s2"),
        &["--format", "v2s2"],
    );

    let rt = rt();
    for (tag, marker) in [
        ("gzip", "tar+gzip"),
        ("zstd", "tar+zstd"),
        ("v2s2", "docker.image.rootfs.diff.tar.gzip"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let store = open_store(root.path(), host);
        let r: Reference = format!("{host}/app:{tag}").parse().unwrap();
        let image = rt
            .block_on(store.pull(&r, &PullOptions::default()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.layers.len(), 3, "{tag}");
        let manifest = store.content().read_blob(&image.manifest_digest).unwrap();
        let manifest = String::from_utf8(manifest).unwrap();
        assert!(
            manifest.contains(marker),
            "{tag}: layers are not {marker}: {manifest}"
        );
        assert!(
            image.names.contains(&format!("{host}/app:{tag}")),
            "{:?}",
            image.names
        );
        assert_eq!(
            store.image(&format!("{host}/app:{tag}")).unwrap(),
            Some(image.clone())
        );
        compare_with(&store, &image, &reference_tree);
        // A second pull finds everything in place.
        let again = rt
            .block_on(store.pull(&r, &PullOptions::default()))
            .unwrap();
        assert_eq!(again.manifest_digest, image.manifest_digest);
        assert_eq!(store.snapshots().list().unwrap().len(), 3);
        let usage = store.fs_usage().unwrap();
        assert!(usage.bytes > 1_000_000 && usage.inodes > 10, "{usage:?}");
    }
}

#[test]
fn pull_by_digest_and_resume_after_killed_writer() {
    if !is_root() {
        eprintln!("SKIP pull_by_digest_and_resume_after_killed_writer: needs root (whiteouts)");
        return;
    }
    if !have_tools("pull_by_digest_and_resume_after_killed_writer", TOOLS) {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    let host = &reg.host;
    push(&layout, "app", &format!("{host}/app:1"), &[]);
    let rt = rt();

    let first_root = tempfile::tempdir().unwrap();
    let first = open_store(first_root.path(), host);
    let r: Reference = format!("{host}/app:1").parse().unwrap();
    let image = rt
        .block_on(first.pull(&r, &PullOptions::default()))
        .unwrap();

    // A store where a previous pull was killed half-way through the big layer.
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path(), host);
    let big = image
        .layers
        .iter()
        .max_by_key(|d| first.content().size(d).unwrap().unwrap_or(0))
        .unwrap();
    let bytes = first.content().read_blob(big).unwrap();
    let ingest = root
        .path()
        .join("content/ingest")
        .join(format!("sha256-{}", big.hex()));
    std::fs::write(&ingest, &bytes[..bytes.len() / 2]).unwrap();
    // And an unrecorded snapshot dir from a crash mid-unpack.
    drop(store);
    std::fs::create_dir_all(root.path().join("snapshots/77/fs/junk")).unwrap();
    let store = open_store(root.path(), host);
    assert!(
        !root.path().join("snapshots/77").exists(),
        "orphan snapshot dir not cleaned"
    );

    let by_digest: Reference = format!("{host}/app@{}", image.manifest_digest)
        .parse()
        .unwrap();
    let again = rt
        .block_on(store.pull(
            &by_digest,
            &PullOptions {
                credentials: Credentials::Anonymous,
                platform: None,
            },
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.manifest_digest, image.manifest_digest);
    assert_eq!(store.content().read_blob(big).unwrap(), bytes);
    assert!(!ingest.exists());
    assert!(again
        .names
        .contains(&format!("{host}/app@{}", image.manifest_digest)));
}

#[test]
fn multi_platform_index_selects_this_node_or_the_requested_platform() {
    if !is_root() {
        eprintln!("SKIP multi_platform_index_selects: needs root (whiteouts)");
        return;
    }
    if !have_tools("multi_platform_index_selects", TOOLS) {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    multi_platform_twin(&layout, "app", "multi");
    let host = &reg.host;
    push(&layout, "multi", &format!("{host}/multi:1"), &["--all"]);
    let rt = rt();
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path(), host);
    let r: Reference = format!("{host}/multi:1").parse().unwrap();
    let native = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(native.platform, image_store::Platform::host());
    let index = native
        .index_digest
        .clone()
        .expect("pulled through an index");
    assert!(store.content().contains(&index));
    let arm = image_store::Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: Some("v8".into()),
    };
    let opts = PullOptions {
        platform: Some(arm.clone()),
        ..PullOptions::default()
    };
    let other = rt
        .block_on(store.pull(&r, &opts))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.platform, arm);
    assert_ne!(other.manifest_digest, native.manifest_digest);
    // Same layers: the snapshots are shared.
    assert_eq!(other.chain_id, native.chain_id);
    assert_eq!(store.snapshots().list().unwrap().len(), 3);
}

#[test]
fn basic_auth_registry_needs_credentials() {
    if !is_root() {
        eprintln!("SKIP basic_auth_registry_needs_credentials: needs root (whiteouts)");
        return;
    }
    if !have_tools("basic_auth_registry_needs_credentials", TOOLS) {
        return;
    }
    let reg = Registry::start_with_auth("berth", "s3cret");
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    let host = &reg.host;
    push(
        &layout,
        "app",
        &format!("{host}/private:1"),
        &["--dest-creds", "berth:s3cret"],
    );
    let rt = rt();
    let root = tempfile::tempdir().unwrap();
    let store = open_store(root.path(), host);
    let r: Reference = format!("{host}/private:1").parse().unwrap();
    let err = rt
        .block_on(store.pull(&r, &PullOptions::default()))
        .expect_err("anonymous pull of a private image")
        .to_string();
    assert!(
        err.starts_with(&format!("pull {host}/private:1: manifest")),
        "{err}"
    );
    let wrong = PullOptions {
        credentials: Credentials::Basic {
            username: "berth".into(),
            password: "wrong".into(),
        },
        ..PullOptions::default()
    };
    assert!(rt.block_on(store.pull(&r, &wrong)).is_err());
    let good = PullOptions {
        credentials: Credentials::Basic {
            username: "berth".into(),
            password: "s3cret".into(),
        },
        ..PullOptions::default()
    };
    let image = rt
        .block_on(store.pull(&r, &good))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(image.layers.len(), 3);
    assert!(store.images().unwrap().len() == 1);
}
