use std::fs;

use super::*;
use crate::metadata::now_unix;
use crate::platform::Platform;
use crate::store::StoreConfig;

/// Stores a fake image with `layers` (each a distinct one-file layer) directly, no registry.
fn fake_image(store: &ImageStore, name: &str, layers: &[&[u8]]) -> ImageRecord {
    let mut diff_ids = Vec::new();
    let mut blobs = Vec::new();
    for data in layers {
        let d = Digest::sha256_of(data);
        store.content().write_blob(&d, data).unwrap();
        blobs.push(d.clone());
        diff_ids.push(d);
    }
    let chains = ChainId::chain(&diff_ids);
    for (i, c) in chains.iter().enumerate() {
        if store.snapshots().has_layer(c).unwrap() {
            continue;
        }
        let l = store.snapshots().begin_layer().unwrap();
        fs::write(l.path().join("f"), layers[i]).unwrap();
        l.commit(c, i.checked_sub(1).map(|p| &chains[p])).unwrap();
    }
    let config = format!("config of {name}").into_bytes();
    let manifest = format!("manifest of {name}").into_bytes();
    let (cd, md) = (Digest::sha256_of(&config), Digest::sha256_of(&manifest));
    store.content().write_blob(&cd, &config).unwrap();
    store.content().write_blob(&md, &manifest).unwrap();
    let rec = ImageRecord {
        manifest_digest: md,
        config_digest: cd,
        index_digest: None,
        size: 1,
        platform: Platform::host(),
        pinned: false,
        names: vec![],
        layers: blobs,
        diff_ids,
        chain_id: chains.last().cloned(),
        created_unix: now_unix(),
    };
    store.metadata().put_image(&rec, Some(name)).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn untag_remove_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(StoreConfig::new(dir.path())).unwrap();
    let a = fake_image(&store, "r/a:1", &[b"base", b"a-top"]);
    let b = fake_image(&store, "r/b:1", &[b"base", b"b-top"]);
    store.metadata().put_image(&a, Some("r/a:latest")).unwrap();
    assert_eq!(store.snapshots().list().unwrap().len(), 3, "base shared");

    // Nothing unreferenced yet.
    let r = rt().block_on(store.gc()).unwrap();
    assert!(r.blobs_removed.is_empty() && r.snapshots_removed.is_empty());

    // Untag keeps the image while a name or the record remains.
    store.untag("r/a:1").unwrap();
    assert!(store.image("r/a:latest").unwrap().is_some());
    assert!(matches!(
        store.untag("r/a:1"),
        Err(RemoveError::NotFound(_))
    ));

    // A container on b's chain keeps it even after b is removed.
    let top = b.chain_id.clone().unwrap();
    store.snapshots().prepare("ctr", Some(&top)).unwrap();
    store.set_pinned("r/b:1", true).unwrap();
    assert!(matches!(
        store.remove_image("r/b:1", false),
        Err(RemoveError::Pinned(_))
    ));
    store.remove_image("r/b:1", true).unwrap();
    let r = rt().block_on(store.gc()).unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(
        r.snapshots_removed.is_empty(),
        "container chain kept: {:?}",
        r.snapshots_removed
    );
    // b's manifest and config blobs go; its layer blobs too (a's base layer stays).
    assert!(!store.content().contains(&b.manifest_digest));
    assert!(!store.content().contains(&b.layers[1]));
    assert!(store.content().contains(&a.layers[0]));

    // Without the container, b's top snapshot goes; the shared base stays for a.
    store.snapshots().remove("ctr").unwrap();
    let r = rt().block_on(store.gc()).unwrap();
    assert_eq!(r.snapshots_removed, vec![top.to_string()]);
    store.remove_image("r/a:latest", false).unwrap();
    let r = rt().block_on(store.gc()).unwrap();
    assert_eq!(r.snapshots_removed.len(), 2, "child first, then base");
    assert!(store.snapshots().list().unwrap().is_empty());
    assert!(store.content().list().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.snapshots().root()).unwrap().count(), 0);
}

/// Clears the immutable flag again, so the temp dir can be removed even if the test fails.
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn one_failed_removal_does_not_block_the_rest() {
    let chattr = std::path::Path::new("/usr/bin/chattr");
    if !nix::unistd::geteuid().is_root() || !chattr.exists() {
        eprintln!("SKIP one_failed_removal_does_not_block_the_rest: needs root and chattr");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(StoreConfig::new(dir.path())).unwrap();
    let a = fake_image(&store, "r/a:1", &[b"one"]);
    let b = fake_image(&store, "r/b:1", &[b"two"]);
    store.remove_image("r/a:1", false).unwrap();
    store.remove_image("r/b:1", false).unwrap();
    // An immutable file makes a's snapshot impossible to remove, even for root.
    let stuck = store
        .snapshots()
        .layer_path(a.chain_id.as_ref().unwrap())
        .unwrap()
        .join("f");
    let status = std::process::Command::new(chattr)
        .arg("+i")
        .arg(&stuck)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("SKIP one_failed_removal_does_not_block_the_rest: chattr +i unsupported here");
        return;
    }
    let guard = Immutable(stuck);
    let r = rt().block_on(store.gc()).unwrap();
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert!(
        r.failures[0].to_string().contains("snapshot sha256:"),
        "{}",
        r.failures[0]
    );
    assert_eq!(r.snapshots_removed, vec![b.chain_id.unwrap().to_string()]);
    assert!(!store.content().contains(&b.layers[0]));
    assert!(
        !store.content().contains(&a.layers[0]),
        "blobs still collected"
    );
    drop(guard);
    // The half-removed directory has no record; the next open cleans it.
    drop(store);
    let store = ImageStore::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(fs::read_dir(store.snapshots().root()).unwrap().count(), 0);
}

#[test]
fn removals_racing_each_other_both_find_it_gone_or_remove_it() {
    // Two RemoveImage calls for one image at once (critest -benchmark): whichever loses the
    // race finds it not found (which the CRI treats as success), never a metadata error.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(ImageStore::open(StoreConfig::new(dir.path())).unwrap());
    for round in 0..20 {
        let name = format!("r/race:{round}");
        fake_image(&store, &name, &[b"base"]);
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let (store, name) = (store.clone(), name.clone());
                std::thread::spawn(move || store.remove_image(&name, false))
            })
            .collect();
        let mut removed = 0;
        for r in racers {
            match r.join().unwrap() {
                Ok(_) => removed += 1,
                Err(RemoveError::NotFound(_)) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(removed, 1, "round {round}");
    }
}

/// GC's exclusive part ends before the doomed snapshots' files are deleted: once the records
/// are gone, a pull may take the lock and unpack the same layer into a directory of its own
/// while the old files still wait for deletion (kubelet's RemoveImage then PullImage).
#[test]
fn removed_snapshots_files_go_after_the_lock_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(StoreConfig::new(dir.path())).unwrap();
    let a = fake_image(&store, "r/a:1", &[b"base", b"top"]);
    let on_disk = || {
        fs::read_dir(dir.path().join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = on_disk();
    store.remove_image("r/a:1", false).unwrap();
    let rt = rt();
    let (report, detached) = rt.block_on(store.gc_records()).unwrap();
    assert_eq!(detached.len(), 2);
    assert_eq!(report.blobs_removed.len(), 4, "layers, config, manifest");
    // The lock is free, the records are gone, the files are still there.
    assert!(store.gc_lock().try_write().is_ok());
    assert!(store.snapshots().list().unwrap().is_empty());
    assert_eq!(on_disk(), before);
    // The same image again: new snapshots beside the doomed ones.
    let again = fake_image(&store, "r/a:1", &[b"base", b"top"]);
    assert_eq!(again.chain_id, a.chain_id);
    assert_eq!(on_disk(), before + 2);
    for d in detached {
        d.remove().unwrap();
    }
    assert_eq!(on_disk(), before);
    assert_eq!(store.snapshots().list().unwrap().len(), 2);
}
