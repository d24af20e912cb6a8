//! The native (copy) snapshotter: forced by config and detected by the probe; its copies must
//! show the same tree as an overlay mount of the same chain.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use nix::sys::stat::{mknod, Mode, SFlag};

use super::*;
use crate::digest::Digest;
use crate::mount::unmount;

struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP {test}: needs root (whiteout devices, trusted xattrs, owners, mounts)");
    false
}

/// Three layers exercising what the copy must get right.
fn layers(snaps: &Snapshotter) -> Vec<ChainId> {
    let chains = ChainId::chain(&[
        Digest::sha256_of(b"n1"),
        Digest::sha256_of(b"n2"),
        Digest::sha256_of(b"n3"),
    ]);
    let l1 = snaps.begin_layer().unwrap();
    let p = l1.path();
    fs::write(p.join("a"), b"a1").unwrap();
    fs::write(p.join("suid"), b"s").unwrap();
    std::os::unix::fs::lchown(p.join("suid"), Some(1000), Some(1001)).unwrap();
    fs::set_permissions(p.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    xattr::set(p.join("suid"), "user.berth", b"v").unwrap();
    fs::create_dir_all(p.join("d")).unwrap();
    fs::write(p.join("d/x"), b"x").unwrap();
    fs::write(p.join("d/y"), b"y").unwrap();
    fs::create_dir_all(p.join("o/deep")).unwrap();
    fs::write(p.join("o/deep/old"), b"old").unwrap();
    fs::write(p.join("hl1"), b"hard").unwrap();
    fs::hard_link(p.join("hl1"), p.join("hl2")).unwrap();
    std::os::unix::fs::symlink("a", p.join("sym")).unwrap();
    std::os::unix::fs::symlink("d", p.join("ld")).unwrap();
    let null = libc::makedev(1, 3);
    mknod(
        &p.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        null,
    )
    .unwrap();
    mknod(
        &p.join("fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let old = nix::sys::time::TimeSpec::new(1_600_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &p.join("a"),
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    l1.commit(&chains[0], None).unwrap();

    let l2 = snaps.begin_layer().unwrap();
    let p = l2.path();
    fs::create_dir_all(p.join("d")).unwrap();
    mknod(&p.join("d/x"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    fs::create_dir_all(p.join("o")).unwrap();
    xattr::set(p.join("o"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(p.join("o/new"), b"new").unwrap();
    fs::write(p.join("a"), b"a2").unwrap();
    fs::create_dir(p.join("ld")).unwrap();
    fs::write(p.join("ld/f"), b"f").unwrap();
    l2.commit(&chains[1], Some(&chains[0])).unwrap();

    let l3 = snaps.begin_layer().unwrap();
    let p = l3.path();
    mknod(&p.join("hl2"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    fs::create_dir(p.join("d")).unwrap();
    fs::write(p.join("d/z"), b"z").unwrap();
    l3.commit(&chains[2], Some(&chains[1])).unwrap();
    chains
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    rdev: u64,
    content: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
    mtime: Option<i64>,
}

/// Every path under `root` with what the comparison looks at.
fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, content) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                ("symlink", t.into_os_string().into_encoded_bytes())
            } else if ft.is_file() {
                ("file", fs::read(&p).unwrap())
            } else if ft.is_fifo() {
                ("fifo", Vec::new())
            } else {
                ("dev", Vec::new())
            };
            let mut xattrs: Vec<_> = xattr::list(&p)
                .map(|l| {
                    l.filter(|n| n.to_string_lossy().starts_with("user."))
                        .map(|n| {
                            let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
                            (n.to_string_lossy().into_owned(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            xattrs.sort();
            out.insert(
                p.strip_prefix(root).unwrap().to_owned(),
                Entry {
                    kind,
                    mode: m.mode(),
                    owner: (m.uid(), m.gid()),
                    rdev: m.rdev(),
                    content,
                    xattrs,
                    mtime: (!ft.is_dir()).then(|| m.mtime()),
                },
            );
        }
    }
    out
}

#[test]
fn forced_native_copies_the_chain_like_overlay_shows_it() {
    if !root_or_skip("forced_native_copies_the_chain_like_overlay_shows_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = MetadataStore::open(&dir.path().join("meta.db")).unwrap();
    let native = Snapshotter::open_with(dir.path(), meta.clone(), SnapshotterMode::Native).unwrap();
    assert!(native.is_native());
    let chains = layers(&native);

    let m = native.prepare("ctr", Some(&chains[2])).unwrap();
    assert_eq!(m.fstype, "bind");
    assert_eq!(m.options, vec!["rbind".to_owned(), "rw".to_owned()]);
    let copy = PathBuf::from(&m.source);
    let t = tree(&copy);
    assert!(!t.contains_key(Path::new("d/x")), "whiteout applied");
    assert!(
        !t.contains_key(Path::new("hl2")),
        "whiteout of a hardlink applied"
    );
    assert!(
        !t.contains_key(Path::new("o/deep")),
        "opaque dir hides below"
    );
    assert_eq!(t[Path::new("o/new")].content, b"new");
    assert_eq!(t[Path::new("a")].content, b"a2");
    assert_eq!(t[Path::new("d/y")].content, b"y");
    assert_eq!(t[Path::new("d/z")].content, b"z");
    assert_eq!(t[Path::new("ld")].kind, "dir", "a dir replaces a symlink");
    assert_eq!(t[Path::new("ld/f")].content, b"f");
    let suid = &t[Path::new("suid")];
    assert_eq!((suid.mode & 0o7777, suid.owner), (0o4755, (1000, 1001)));
    assert_eq!(suid.xattrs, vec![("user.berth".to_owned(), b"v".to_vec())]);
    assert_eq!(t[Path::new("null")].rdev, libc::makedev(1, 3));
    assert_eq!(t[Path::new("fifo")].kind, "fifo");
    assert_eq!(t[Path::new("sym")].content, b"a");
    assert!(xattr::get(copy.join("o"), "trusted.overlay.opaque")
        .unwrap()
        .is_none());

    // An overlay mount of the same chain shows the same tree.
    let overlay = Snapshotter::open_with(dir.path(), meta, SnapshotterMode::Overlay).unwrap();
    let om = overlay.prepare("ovl", Some(&chains[2])).unwrap();
    assert_eq!(om.fstype, "overlay");
    let target = tempfile::tempdir().unwrap();
    om.mount(target.path()).unwrap();
    let guard = MountGuard(target.path().to_owned());
    let mut seen = tree(target.path());
    drop(guard);
    // Overlay shows the lower file's mtime for `a` too; hardlink counts differ by design.
    for (k, e) in seen.iter_mut() {
        if let Some(n) = t.get(k) {
            assert_eq!(e, n, "{}", k.display());
        }
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        t.keys().collect::<Vec<_>>()
    );

    // A bind mount of the copy is writable and the layers stay untouched.
    let target = tempfile::tempdir().unwrap();
    m.mount(target.path()).unwrap();
    let guard = MountGuard(target.path().to_owned());
    fs::write(target.path().join("a"), b"changed").unwrap();
    drop(guard);
    let l2 = native.layer_path(&chains[1]).unwrap();
    assert_eq!(fs::read(l2.join("a")).unwrap(), b"a2");
    // Views are read-only copies; removal removes the copy.
    let v = native.view("v", &chains[1]).unwrap();
    assert_eq!((v.fstype.as_str(), v.options[1].as_str()), ("bind", "ro"));
    assert!(Path::new(&v.source).join("d/y").exists());
    native.remove("v").unwrap();
    native.remove("ctr").unwrap();
    assert!(!copy.exists());
    // The mode is remembered per snapshot: an overlay-mode snapshotter still binds the copy.
    let again = native.prepare("ctr2", Some(&chains[0])).unwrap();
    assert_eq!(overlay.mounts("ctr2").unwrap(), again);
}

#[test]
fn probe_picks_native_where_overlay_cannot_be_the_upper() {
    if !root_or_skip("probe_picks_native_where_overlay_cannot_be_the_upper") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = MetadataStore::open(&dir.path().join("meta.db")).unwrap();
    let snaps = Snapshotter::open(dir.path(), meta).unwrap();
    assert!(!snaps.is_native(), "overlay works on the test filesystem");
    assert_eq!(
        fs::read_dir(snaps.root()).unwrap().count(),
        0,
        "probe cleaned"
    );

    // A root on an overlay mount: overlayfs refuses another overlay's upper dir there.
    let base = tempfile::tempdir().unwrap();
    for d in ["l", "u", "w", "m"] {
        fs::create_dir(base.path().join(d)).unwrap();
    }
    let p = |d: &str| base.path().join(d).display().to_string();
    nix::mount::mount(
        Some("overlay"),
        &base.path().join("m"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(format!("lowerdir={},upperdir={},workdir={}", p("l"), p("u"), p("w")).as_str()),
    )
    .unwrap();
    let guard = MountGuard(base.path().join("m"));
    let root = base.path().join("m/root");
    fs::create_dir(&root).unwrap();
    let meta = MetadataStore::open(&root.join("meta.db")).unwrap();
    let snaps = Snapshotter::open(&root, meta).unwrap();
    let native = snaps.is_native();
    drop(snaps);
    drop(guard);
    assert!(native, "overlay on overlay must fall back to native");
}
