//! Import of an OCI layout built by umoci, export as an archive tar, re-import (both as OCI
//! layout and as `docker save`), each compared with `umoci unpack` of the same image.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_store::{unmount, Image, ImageStore, ImportOptions, Reference, StoreConfig};
use support::*;

struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

fn compare_with(store: &ImageStore, image: &Image, reference: &Path) {
    let key = format!("view-{}", image.manifest_digest.hex());
    let mount = store
        .snapshots()
        .view(&key, image.chain_id.as_ref().unwrap())
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    mount.mount(target.path()).unwrap();
    let guard = MountGuard(target.path().to_owned());
    assert_same_tree(target.path(), reference);
    drop(guard);
    store.snapshots().remove(&key).unwrap();
}

#[test]
fn import_export_round_trip_matches_umoci() {
    if !is_root() {
        eprintln!(
            "SKIP import_export_round_trip_matches_umoci: needs root (whiteouts, owners, mounts)"
        );
        return;
    }
    if !have_tools(
        "import_export_round_trip_matches_umoci",
        &["/usr/bin/umoci", "/bin/busybox"],
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = build_fixture(work.path());
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app", layout.display()))
        .arg(&bundle));
    let reference_tree = bundle.join("rootfs");

    // 1. The umoci layout directory itself; its entry only has a tag, so a base name is given.
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(StoreConfig::new(root.path())).unwrap();
    let opts = ImportOptions {
        base_name: Some("localhost/fixture".parse::<Reference>().unwrap()),
        platform: None,
    };
    let imported = store
        .import_dir(&layout, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(imported.len(), 1);
    let image = &imported[0];
    assert_eq!(image.names, vec!["localhost/fixture:app".to_owned()]);
    compare_with(&store, image, &reference_tree);

    // 2. Export as one tar, import into a fresh store: same image, same tree.
    let archive = work.path().join("export.tar");
    store
        .export_archive(
            &["localhost/fixture:app"],
            fs::File::create(&archive).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let root2 = tempfile::tempdir().unwrap();
    let store2 = ImageStore::open(StoreConfig::new(root2.path())).unwrap();
    let again = store2
        .import_archive(fs::File::open(&archive).unwrap(), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again[0].manifest_digest, image.manifest_digest);
    assert_eq!(again[0].names, vec!["localhost/fixture:app".to_owned()]);
    compare_with(&store2, &again[0], &reference_tree);
    assert_eq!(
        fs::read_dir(root2.path().join("tmp")).unwrap().count(),
        0,
        "import scratch space left behind"
    );

    // 3. The same archive read as `docker save` (manifest.json only).
    let docker_dir = work.path().join("docker-save");
    fs::create_dir(&docker_dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&docker_dir));
    fs::remove_file(docker_dir.join("index.json")).unwrap();
    fs::remove_file(docker_dir.join("oci-layout")).unwrap();
    let root3 = tempfile::tempdir().unwrap();
    let store3 = ImageStore::open(StoreConfig::new(root3.path())).unwrap();
    let docker = store3
        .import_dir(&docker_dir, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(docker[0].diff_ids, image.diff_ids);
    assert_eq!(docker[0].names, vec!["localhost/fixture:app".to_owned()]);
    compare_with(&store3, &docker[0], &reference_tree);
}

#[test]
fn import_rejects_unknown_and_escaping_archives() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(StoreConfig::new(root.path())).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let err = store
        .import_dir(empty.path(), &ImportOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("not an OCI layout or docker save"),
        "{err}"
    );
    fs::write(
        empty.path().join("manifest.json"),
        br#"[{"Config":"../../etc/passwd","RepoTags":["x:1"],"Layers":[]}]"#,
    )
    .unwrap();
    let err = store
        .import_dir(empty.path(), &ImportOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("outside the archive"), "{err}");
    assert!(store.images().unwrap().is_empty());
}
