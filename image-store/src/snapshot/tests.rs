use super::*;
use crate::digest::Digest;
use crate::mount::unmount;

struct Fixture {
    _dir: tempfile::TempDir,
    snaps: Snapshotter,
    chains: Vec<ChainId>,
}

/// Two committed layers: L1 has `a` and `d/x`, L2 adds `b`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = MetadataStore::open(&dir.path().join("meta.db")).unwrap();
    let snaps = Snapshotter::open(dir.path(), meta).unwrap();
    let chains = ChainId::chain(&[Digest::sha256_of(b"l1"), Digest::sha256_of(b"l2")]);
    let l1 = snaps.begin_layer().unwrap();
    fs::write(l1.path().join("a"), b"from l1").unwrap();
    fs::create_dir(l1.path().join("d")).unwrap();
    fs::write(l1.path().join("d/x"), b"x").unwrap();
    l1.commit(&chains[0], None).unwrap();
    let l2 = snaps.begin_layer().unwrap();
    fs::write(l2.path().join("b"), b"from l2").unwrap();
    l2.commit(&chains[1], Some(&chains[0])).unwrap();
    Fixture {
        _dir: dir,
        snaps,
        chains,
    }
}

#[test]
fn prepare_gives_overlay_spec_with_short_dirs() {
    let f = fixture();
    let m = f.snaps.prepare("ctr1", Some(&f.chains[1])).unwrap();
    assert_eq!(m.fstype, "overlay");
    let l1 = f.snaps.layer_path(&f.chains[0]).unwrap();
    let l2 = f.snaps.layer_path(&f.chains[1]).unwrap();
    let lower = format!("lowerdir={}:{}", l2.display(), l1.display());
    assert!(m.options.contains(&lower), "{m:?}");
    assert!(m
        .options
        .iter()
        .any(|o| o.starts_with("upperdir=") && o.ends_with("/fs")));
    assert!(m
        .options
        .iter()
        .any(|o| o.starts_with("workdir=") && o.ends_with("/work")));
    // Numeric directory names.
    assert!(l1
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(matches!(
        f.snaps.prepare("ctr1", Some(&f.chains[1])),
        Err(SnapshotError::AlreadyExists(_))
    ));
    let bare = f.snaps.prepare("scratch", None).unwrap();
    assert_eq!(bare.fstype, "bind");
    let v = f.snaps.view("v1", &f.chains[0]).unwrap();
    assert_eq!(
        (v.fstype.as_str(), v.options.last().unwrap().as_str()),
        ("bind", "ro")
    );
    let v2 = f.snaps.view("v2", &f.chains[1]).unwrap();
    assert_eq!(v2.fstype, "overlay");
    assert!(v2.options.contains(&"ro".to_owned()));
}

#[test]
fn parent_must_be_committed_and_outlive_children() {
    let f = fixture();
    f.snaps.prepare("ctr", Some(&f.chains[1])).unwrap();
    let bogus = ChainId::base(&Digest::sha256_of(b"nope"));
    assert!(matches!(
        f.snaps.prepare("x", Some(&bogus)),
        Err(SnapshotError::ParentNotCommitted { .. })
    ));
    let err = f.snaps.remove(&f.chains[1].to_string()).unwrap_err();
    assert!(err.to_string().contains("still the parent of ctr"), "{err}");
    f.snaps.remove("ctr").unwrap();
    f.snaps.remove(&f.chains[1].to_string()).unwrap();
    f.snaps.remove(&f.chains[0].to_string()).unwrap();
    assert!(f.snaps.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(f.snaps.root()).unwrap().count(), 0);
}

#[test]
fn uncommitted_and_orphan_dirs_are_removed() {
    let f = fixture();
    let layer = f.snaps.begin_layer().unwrap();
    let p = layer.path();
    fs::write(p.join("junk"), b"j").unwrap();
    drop(layer);
    assert!(!p.exists());
    // A crash mid-unpack: a numbered dir with no record.
    fs::create_dir_all(f.snaps.root().join("999/fs")).unwrap();
    assert_eq!(f.snaps.clean_orphans().unwrap(), 1);
    assert!(!f.snaps.root().join("999").exists());
    assert_eq!(f.snaps.list().unwrap().len(), 2);
}

#[test]
fn duplicate_commit_keeps_first() {
    let f = fixture();
    let again = f.snaps.begin_layer().unwrap();
    let p = again.path();
    let rec = again.commit(&f.chains[0], None).unwrap();
    assert_ne!(f.snaps.fs_dir(rec.id), p);
    assert!(!p.exists());
}

#[test]
fn usage_counts_bytes_and_inodes() {
    let f = fixture();
    let u = f.snaps.usage(&f.chains[0].to_string()).unwrap();
    // <id>, fs, a, d, d/x
    assert_eq!(u.inodes, 5);
    assert!(u.bytes > 0);
    let total = f.snaps.total_usage().unwrap();
    assert!(total.inodes >= u.inodes + 3);
}

#[test]
fn usage_of_a_missing_dir_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let u = disk_usage(&dir.path().join("snapshots")).unwrap();
    assert_eq!((u.bytes, u.inodes), (0, 0));
}

#[test]
fn usage_tolerates_snapshots_removed_while_it_walks() {
    // The image GC removes snapshots while ImageFsInfo walks them ("measure …: No such file or
    // directory" answered Internal): what vanishes mid-walk is simply not counted.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                let d = root.join(format!("s{}", n % 16)).join("fs/a/b");
                let _ = fs::create_dir_all(&d);
                let _ = fs::write(d.join("f"), b"x");
                let _ = fs::remove_dir_all(root.join(format!("s{}", (n + 8) % 16)));
                n += 1;
            }
        })
    };
    for _ in 0..300 {
        disk_usage(&root).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

#[test]
fn overlay_mount_shows_merged_tree() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP overlay_mount_shows_merged_tree: needs root to mount overlay");
        return;
    }
    let f = fixture();
    let m = f.snaps.prepare("ctr", Some(&f.chains[1])).unwrap();
    let target = tempfile::tempdir().unwrap();
    m.mount(target.path()).unwrap();
    let guard = MountGuard(target.path().to_owned());
    assert_eq!(fs::read(target.path().join("a")).unwrap(), b"from l1");
    assert_eq!(fs::read(target.path().join("b")).unwrap(), b"from l2");
    fs::write(target.path().join("new"), b"n").unwrap();
    fs::remove_file(target.path().join("a")).unwrap();
    drop(guard);
    let upper = f.snaps.fs_dir(f.snaps.get("ctr").unwrap().unwrap().id);
    assert_eq!(fs::read(upper.join("new")).unwrap(), b"n");
    // Deleting a lower file leaves an overlay whiteout in the upper dir.
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(upper.join("a"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        fs::read(f.snaps.layer_path(&f.chains[0]).unwrap().join("a")).unwrap(),
        b"from l1"
    );
}

/// Every snapshot added or removed changes the generation (what ImageFsInfo's cache keys
/// on), whoever holds a clone of the snapshotter; a failed prepare does not.
#[test]
fn generation_changes_with_every_snapshot_added_or_removed() {
    let f = fixture();
    let g0 = f.snaps.generation();
    let clone = f.snaps.clone();
    let layer = clone.begin_layer().unwrap();
    let chain = ChainId::chain(&[Digest::sha256_of(b"l3")]);
    layer.commit(&chain[0], None).unwrap();
    let g1 = f.snaps.generation();
    assert_ne!(g1, g0, "a committed layer");
    f.snaps.view("v", &f.chains[1]).unwrap();
    let g2 = f.snaps.generation();
    assert_ne!(g2, g1, "a view");
    assert!(f.snaps.view("v", &f.chains[1]).is_err());
    assert_eq!(f.snaps.generation(), g2, "a refused duplicate");
    f.snaps.remove("v").unwrap();
    assert_ne!(f.snaps.generation(), g2, "a removal");
}

/// The snapshots dir is root's only, as containerd's is: containers' upper dirs are not
/// reachable by host users.
#[test]
fn snapshots_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mode = fs::metadata(f.snaps.root()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}
