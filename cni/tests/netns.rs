//! Pinned network namespaces: create, reuse, run inside, remove (idempotent). Root only.

mod support;

use std::path::Path;

use cni::netns::{is_pinned, run_in};
use support::{need_root, TestNet};

#[test]
fn create_pin_enter_and_remove() {
    if !need_root("create_pin_enter_and_remove") {
        return;
    }
    let mut t = TestNet::new(9);
    let ns = t.make_netns("sb1");
    assert!(is_pinned(ns.path()));
    // A second create of the same name returns the pinned one.
    let again = t.netns.create("sb1").unwrap();
    assert_eq!(again, ns);
    let inode = |p: &Path| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    // Inside, only a loopback (down) exists, and it is a different netns from ours.
    let links = run_in(ns.path(), || {
        std::fs::read_dir("/sys/class/net")
            .map(|d| d.count())
            .unwrap_or(0)
    })
    .unwrap();
    let inside = run_in(ns.path(), move || {
        inode(Path::new("/proc/thread-self/ns/net")).unwrap()
    })
    .unwrap();
    assert_eq!(inside, inode(ns.path()).unwrap());
    assert_ne!(inside, inode(Path::new("/proc/self/ns/net")).unwrap());
    // /sys still shows the host's view from a thread (sysfs is per mount), so only check it ran.
    assert!(links >= 1);

    t.netns.remove("sb1").unwrap();
    assert!(!ns.path().exists());
    t.netns.remove("sb1").unwrap();

    // A stale plain file is replaced by a fresh namespace.
    std::fs::write(t.netns.path_of("stale").unwrap(), b"").unwrap();
    let fresh = t.make_netns("stale");
    assert!(is_pinned(fresh.path()));
}
