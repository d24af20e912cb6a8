use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A header with raw name/linkname bytes, so hostile paths (`..`, absolute) can be written.
fn raw_header(path: &str, kind: tar::EntryType, link: &str, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }
    fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = raw_header(path, tar::EntryType::Directory, "", 0, mode);
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let h = raw_header(path, tar::EntryType::Regular, "", data.len() as u64, mode);
        self.0.append(&h, data).unwrap();
        self
    }
    fn symlink(mut self, path: &str, target: &str) -> Self {
        let h = raw_header(path, tar::EntryType::Symlink, target, 0, 0o777);
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn hardlink(mut self, path: &str, target: &str) -> Self {
        let h = raw_header(path, tar::EntryType::Link, target, 0, 0o644);
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn special(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = raw_header(path, kind, "", 0, 0o640);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn pax_file(mut self, path: &str, data: &[u8], pax: &[(&str, &[u8])]) -> Self {
        self.0.append_pax_extensions(pax.iter().copied()).unwrap();
        self.file(path, data, 0o644)
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A scratch area: `root/` is the snapshot, `outside/` must stay empty.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        Scratch { dir }
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }
    fn unpack(&self, tar: &[u8]) -> Result<Unpacked, UnpackError> {
        unpack_layer(tar, &self.root(), &UnpackOptions::default())
    }
    fn assert_outside_untouched(&self) {
        let n = fs::read_dir(self.outside()).unwrap().count();
        assert_eq!(n, 0, "something was written outside the snapshot");
        let names: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "unexpected files beside the snapshot: {names:?}"
        );
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn basic_tar() -> Vec<u8> {
    Tar::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file("bin/tool", b"#!/bin/sh\necho hi\n", 0o4755)
        .symlink("bin/sh", "tool")
        .hardlink("bin/tool2", "bin/tool")
        .dir("etc/", 0o750)
        .file("etc/conf", b"a=1\n", 0o600)
        .file("deep/implicit/parent/file", b"x", 0o644)
        .special("run/fifo", tar::EntryType::Fifo, 0, 0)
        .pax_file(
            "etc/attrs",
            b"y",
            &[
                ("SCHILY.xattr.user.berth", b"v1"),
                ("mtime", b"1700000000.25"),
            ],
        )
        .bytes()
}

#[test]
fn unpacks_plain_tree() {
    let s = Scratch::new();
    let tar = basic_tar();
    let u = s.unpack(&tar).unwrap();
    assert_eq!(u.compression, Compression::None);
    assert_eq!(u.diff_id, Digest::sha256_of(&tar));
    assert_eq!(u.uncompressed_size, tar.len() as u64);
    let r = s.root();
    assert_eq!(
        fs::read(r.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    let m = fs::metadata(r.join("bin/tool")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(m.nlink(), 2, "hardlink shares the inode");
    assert_eq!(fs::read_link(r.join("bin/sh")).unwrap(), Path::new("tool"));
    assert_eq!(
        fs::metadata(r.join("etc")).unwrap().permissions().mode() & 0o777,
        0o750
    );
    assert_eq!(fs::metadata(r.join("etc")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(fs::read(r.join("deep/implicit/parent/file")).unwrap(), b"x");
    assert!(fs::symlink_metadata(r.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let attrs = fs::metadata(r.join("etc/attrs")).unwrap();
    assert_eq!(
        (attrs.mtime(), attrs.mtime_nsec()),
        (1_700_000_000, 250_000_000)
    );
    match xattr::get(r.join("etc/attrs"), "user.berth") {
        Ok(v) => assert_eq!(v.as_deref(), Some(&b"v1"[..])),
        Err(e) => eprintln!("user xattrs unsupported here ({e}); not checked"),
    }
    if is_root() {
        assert_eq!(m.uid(), 0);
    }
}

#[test]
fn gzip_and_zstd_give_same_tree_and_diff_id() {
    let tar = basic_tar();
    let plain = Scratch::new().unpack(&tar).unwrap();
    let s = Scratch::new();
    let g = s.unpack(&gzip(&tar)).unwrap();
    assert_eq!(g.compression, Compression::Gzip);
    assert_eq!(g.diff_id, plain.diff_id);
    assert_eq!(fs::read(s.root().join("etc/conf")).unwrap(), b"a=1\n");
    let s = Scratch::new();
    let z = s
        .unpack(&zstd::encode_all(&tar[..], 3).unwrap()[..])
        .unwrap();
    assert_eq!(z.compression, Compression::Zstd);
    assert_eq!(z.diff_id, plain.diff_id);
    assert_eq!(
        fs::read(s.root().join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
}

#[test]
fn media_types() {
    assert_eq!(
        Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
        Compression::Gzip
    );
    assert_eq!(
        Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
        Compression::Zstd
    );
    assert!(Compression::from_media_type("application/vnd.oci.image.config.v1+json").is_err());
}

#[test]
fn corrupt_gzip_is_a_read_error() {
    let mut g = gzip(&basic_tar());
    let n = g.len();
    g[n / 2] ^= 0xff;
    let err = Scratch::new().unpack(&g).unwrap_err();
    assert!(
        matches!(err, UnpackError::Read(_) | UnpackError::Entry { .. }),
        "{err}"
    );
}

#[test]
fn later_entry_replaces_earlier() {
    let s = Scratch::new();
    let tar = Tar::new()
        .dir("a/", 0o755)
        .file("a/x", b"1", 0o644)
        .file("a", b"now a file", 0o644)
        .bytes();
    s.unpack(&tar).unwrap();
    assert_eq!(fs::read(s.root().join("a")).unwrap(), b"now a file");
}

#[test]
fn every_kind_replaces_whatever_was_there() {
    let s = Scratch::new();
    let tar = Tar::new()
        .file("f", b"file", 0o644)
        .symlink("f", "elsewhere")
        .dir("d/", 0o755)
        .file("d/inner", b"x", 0o644)
        .symlink("d", "f")
        .symlink("l", "t")
        .file("l", b"was a link", 0o600)
        .file("h", b"h", 0o644)
        .hardlink("g", "h")
        .file("g", b"own inode now", 0o644)
        // A hardlink onto itself leaves the file as it is.
        .hardlink("h", "h")
        .bytes();
    s.unpack(&tar).unwrap();
    let r = s.root();
    assert_eq!(fs::read_link(r.join("f")).unwrap(), Path::new("elsewhere"));
    assert_eq!(fs::read_link(r.join("d")).unwrap(), Path::new("f"));
    let l = fs::symlink_metadata(r.join("l")).unwrap();
    assert!(l.is_file());
    assert_eq!(l.permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::read(r.join("l")).unwrap(), b"was a link");
    assert_eq!(fs::read(r.join("g")).unwrap(), b"own inode now");
    assert_eq!(fs::read(r.join("h")).unwrap(), b"h");
    assert_eq!(fs::metadata(r.join("h")).unwrap().nlink(), 1);
    s.assert_outside_untouched();
}

#[test]
fn large_files_are_copied_whole_with_their_metadata() {
    let s = Scratch::new();
    // Larger than the copy chunk and not a multiple of it.
    let big: Vec<u8> = (0..(3 << 20) + 12345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let tar = Tar::new().file("big", &big, 0o4755).bytes();
    s.unpack(&tar).unwrap();
    let p = s.root().join("big");
    assert_eq!(fs::read(&p).unwrap(), big);
    let m = fs::metadata(&p).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), 1_600_000_000);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        eprintln!("SKIP whiteouts_become_overlay_whiteouts: needs root (mknod, trusted xattrs)");
        return;
    }
    let s = Scratch::new();
    let tar = Tar::new()
        .dir("d/", 0o755)
        .file("d/.wh.gone", b"", 0o644)
        .file("o/.wh..wh..opq", b"", 0o644)
        .file("o/kept", b"k", 0o644)
        .special("dev/null", tar::EntryType::Char, 1, 3)
        .bytes();
    s.unpack(&tar).unwrap();
    let wh = fs::symlink_metadata(s.root().join("d/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!s.root().join("d/.wh.gone").exists());
    let opq = xattr::get(s.root().join("o"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opq.as_deref(), Some(&b"y"[..]));
    assert!(!s.root().join("o/.wh..wh..opq").exists());
    assert_eq!(fs::read(s.root().join("o/kept")).unwrap(), b"k");
    let null = fs::symlink_metadata(s.root().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
}

// ---- escape attempts: each must leave `outside/` untouched ----

#[test]
fn escape_dotdot_path_is_rejected() {
    let s = Scratch::new();
    let tar = Tar::new().file("../outside/evil", b"pwned", 0o644).bytes();
    let err = s.unpack(&tar).unwrap_err();
    assert!(matches!(err, UnpackError::PathEscape { .. }), "{err}");
    assert!(err.to_string().contains("escapes"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn escape_nested_dotdot_is_rejected() {
    let s = Scratch::new();
    let tar = Tar::new()
        .dir("a/", 0o755)
        .file("a/../../outside/evil", b"x", 0o644)
        .bytes();
    assert!(matches!(
        s.unpack(&tar),
        Err(UnpackError::PathEscape { .. })
    ));
    s.assert_outside_untouched();
}

#[test]
fn escape_absolute_path_is_contained() {
    let s = Scratch::new();
    let evil = format!("{}/evil", s.outside().display());
    let tar = Tar::new().file(&evil, b"x", 0o644).bytes();
    s.unpack(&tar).unwrap();
    s.assert_outside_untouched();
    let inside = s.root().join(evil.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"x");
}

#[test]
fn escape_through_absolute_symlink_is_contained() {
    let s = Scratch::new();
    let target = s.outside().display().to_string();
    let mut t = Tar::new();
    // The same path inside the snapshot, so the link resolves there.
    let mut prefix = String::new();
    for comp in target.trim_start_matches('/').split('/') {
        prefix.push_str(comp);
        prefix.push('/');
        t = t.dir(&prefix, 0o755);
    }
    let tar = t
        .symlink("link", &target)
        .file("link/evil", b"x", 0o644)
        .bytes();
    s.unpack(&tar).unwrap();
    s.assert_outside_untouched();
    // Resolved as if the snapshot were `/`.
    let inside = s.root().join(target.trim_start_matches('/')).join("evil");
    assert_eq!(fs::read(inside).unwrap(), b"x");
}

#[test]
fn escape_through_relative_symlink_is_contained() {
    let s = Scratch::new();
    let tar = Tar::new()
        .dir("a/", 0o755)
        .dir("outside/", 0o755)
        .symlink("a/up", "../../../../../outside")
        .file("a/up/evil", b"x", 0o644)
        .bytes();
    s.unpack(&tar).unwrap();
    s.assert_outside_untouched();
    assert_eq!(fs::read(s.root().join("outside/evil")).unwrap(), b"x");
}

#[test]
fn escape_through_dangling_symlink_fails_inside() {
    let s = Scratch::new();
    let tar = Tar::new()
        .symlink("link", &s.outside().display().to_string())
        .file("link/evil", b"x", 0o644)
        .bytes();
    let err = s.unpack(&tar).unwrap_err();
    assert!(err.to_string().starts_with("entry link/evil:"), "{err}");
    s.assert_outside_untouched();
}

#[test]
fn escape_symlink_then_file_replaces_link_not_target() {
    let s = Scratch::new();
    let victim = s.outside().join("victim");
    let tar = Tar::new()
        .symlink("f", &victim.display().to_string())
        .file("f", b"x", 0o644)
        .bytes();
    s.unpack(&tar).unwrap();
    s.assert_outside_untouched();
    assert!(fs::symlink_metadata(s.root().join("f")).unwrap().is_file());
}

#[test]
fn escape_hardlink_dotdot_is_rejected() {
    let s = Scratch::new();
    fs::write(s.dir.path().join("secret"), b"s").unwrap();
    let tar = Tar::new().hardlink("h", "../secret").bytes();
    let err = s.unpack(&tar).unwrap_err();
    assert!(matches!(err, UnpackError::PathEscape { .. }), "{err}");
    fs::remove_file(s.dir.path().join("secret")).unwrap();
    s.assert_outside_untouched();
}

#[test]
fn escape_hardlink_through_symlink_is_contained() {
    let s = Scratch::new();
    let secret = s.outside().join("secret");
    fs::write(&secret, b"s").unwrap();
    let tar = Tar::new()
        .symlink("out", &s.outside().display().to_string())
        .hardlink("h", "out/secret")
        .bytes();
    let err = s.unpack(&tar).unwrap_err();
    assert!(matches!(err, UnpackError::HardlinkTarget { .. }), "{err}");
    assert_eq!(
        fs::metadata(&secret).unwrap().nlink(),
        1,
        "outside file was linked"
    );
    fs::remove_file(secret).unwrap();
    s.assert_outside_untouched();
}

#[test]
fn escape_hardlink_to_absolute_outside_is_contained() {
    let s = Scratch::new();
    let secret = s.outside().join("secret");
    fs::write(&secret, b"s").unwrap();
    let tar = Tar::new()
        .hardlink("h", &secret.display().to_string())
        .bytes();
    assert!(s.unpack(&tar).is_err());
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    fs::remove_file(secret).unwrap();
    s.assert_outside_untouched();
}

#[test]
fn escape_whiteout_dotdot_is_rejected() {
    let s = Scratch::new();
    fs::write(s.outside().join("keep"), b"k").unwrap();
    let tar = Tar::new().file(".wh...", b"", 0o644).bytes();
    assert!(matches!(
        s.unpack(&tar),
        Err(UnpackError::PathEscape { .. })
    ));
    assert!(s.outside().join("keep").exists());
    fs::remove_file(s.outside().join("keep")).unwrap();
    s.assert_outside_untouched();
}

#[test]
fn escape_whiteout_through_symlink_is_contained() {
    if !is_root() {
        eprintln!("SKIP escape_whiteout_through_symlink_is_contained: needs root (mknod)");
        return;
    }
    let s = Scratch::new();
    fs::write(s.outside().join("keep"), b"k").unwrap();
    let tar = Tar::new()
        .symlink("out", &s.outside().display().to_string())
        .file("out/.wh.keep", b"", 0o644)
        .bytes();
    assert!(s.unpack(&tar).is_err());
    assert_eq!(fs::read(s.outside().join("keep")).unwrap(), b"k");
    fs::remove_file(s.outside().join("keep")).unwrap();
    s.assert_outside_untouched();
}

#[test]
fn tolerates_missing_padding_and_end_blocks() {
    // What umoci 0.4 `insert` writes: the last entry's data, then nothing.
    let full = Tar::new().file("a", b"abc", 0o644).bytes();
    let cut = &full[..512 + 3];
    let s = Scratch::new();
    let u = s.unpack(cut).unwrap();
    assert_eq!(fs::read(s.root().join("a")).unwrap(), b"abc");
    assert_eq!(
        u.diff_id,
        Digest::sha256_of(cut),
        "diff_id covers the real bytes only"
    );
}
