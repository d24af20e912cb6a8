//! Namespaces: new ones (each differs from the host's), joined by path (a netns the test holds,
//! the uts namespace of another container), user namespaces with uid/gid mappings, idmapped
//! mounts, hostname/domainname, sysctls — compared with runc where runc supports them.

use std::os::unix::fs::{chown, MetadataExt};
use std::time::Duration;

use berth_tests::compare::{run_both_same, same};
use berth_tests::host::{ns_link, HeldNamespace, NS_KINDS};
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle};

/// For each kind: does the container's /proc/self/ns/<kind> differ from the host's?
fn ns_differs(out: &str) -> Vec<(String, bool)> {
    out.lines()
        .filter_map(|l| {
            let (kind, link) = l.split_once('=')?;
            Some((kind.to_string(), link != ns_link("self", kind)))
        })
        .collect()
}

fn readlink_ns_script() -> String {
    NS_KINDS
        .iter()
        .map(|k| format!("echo {k}=$(readlink /proc/self/ns/{k})"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The default spec's namespaces (pid, net, ipc, uts, mount) plus cgroup: each one new.
#[test]
fn new_namespaces_differ_from_host() {
    require_root!();
    let mut b = Bundle::new();
    b.namespace("cgroup", None);
    b.sh(&readlink_ns_script());
    let (ob, or) = berth_tests::compare::run_both("ns-new", &b);
    let (db, dr) = (ns_differs(&ob.ok().stdout), ns_differs(&or.ok().stdout));
    same("which namespaces are new", &db, &dr);
    for (kind, differs) in &db {
        let want = matches!(
            kind.as_str(),
            "cgroup" | "ipc" | "mnt" | "net" | "pid" | "uts"
        );
        assert_eq!(*differs, want, "namespace {kind}: {db:?}");
    }
}

/// A time namespace (runc 1.1 has none: berth only).
#[test]
fn new_time_namespace() {
    require_root!();
    let mut b = Bundle::new();
    b.namespace("time", None);
    b.sh("readlink /proc/self/ns/time");
    let o = Runtime::berth().run_new("ns-time", &b).ok();
    assert_ne!(o.out(), ns_link("self", "time"), "time namespace not new");
    assert!(o.out().starts_with("time:["), "{o:?}");
}

/// Joining a network namespace by path: one the test holds with `unshare --net sleep`.
#[test]
fn join_netns_by_path() {
    require_root!();
    let held = HeldNamespace::new("net");
    let mut b = Bundle::new();
    b.namespace("network", Some(&held.path()));
    b.sh("readlink /proc/self/ns/net");
    let o = run_both_same("ns-join-net", &b);
    assert_eq!(o.out(), held.link());
}

/// Joining a mount and a UTS namespace by path (runtime-tools' linux_ns_path): the rootfs is
/// set up inside the joined mount namespace, and the config's hostname is set in the joined
/// UTS namespace, as runc does. berth refused both ('needs a new mount namespace', 'needs a
/// new UTS namespace').
#[test]
fn join_mount_and_uts_namespaces_by_path() {
    require_root!();
    let mut seen = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mnt = HeldNamespace::new("mnt");
        let uts = HeldNamespace::new("uts");
        let mut b = Bundle::new();
        b.set("/hostname", json!("joined-uts"));
        b.namespace("mount", Some(&mnt.path()));
        b.namespace("uts", Some(&uts.path()));
        b.sh("hostname; readlink /proc/self/ns/mnt; readlink /proc/self/ns/uts");
        let o = rt.run_new("ns-join-mnt", &b).ok();
        assert_eq!(
            o.out(),
            format!("joined-uts\n{}\n{}", mnt.link(), uts.link()),
            "{}",
            rt.name()
        );
        seen.push(o.out().lines().next().unwrap().to_string());
    }
    same("hostname in the joined namespace", &seen[0], &seen[1]);
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "joined-uts",
        "the host's hostname changed"
    );
}

/// A namespace path of the wrong kind (a uts namespace given as the network namespace) fails
/// create, naming the path and both kinds, and leaves nothing behind.
#[test]
fn join_namespace_of_the_wrong_kind_fails_clearly() {
    require_root!();
    let uts = HeldNamespace::new("uts");
    let mut b = Bundle::new();
    b.namespace("network", Some(&uts.path()));
    let mut errors = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("wrongns");
        let o = rt.create(&id, &b, &[]);
        assert!(!o.success(), "{}: {o:?}", rt.name());
        berth_tests::wait::until("no state", Duration::from_secs(5), || {
            rt.try_state(&id).is_none()
        });
        errors.push(o.stderr);
    }
    let want = format!("{} is a uts namespace, not a net namespace", uts.path());
    assert!(errors[0].contains(&want), "berth: {}", errors[0]);
}

/// Joining the uts and net namespaces of another (running) container, as pod containers do.
#[test]
fn join_namespaces_of_another_container() {
    require_root!();
    let mut results = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut sandbox = Bundle::new();
        sandbox.set("/hostname", json!("pod-sandbox"));
        let sid = rt.start_sleeper("sandbox", &mut sandbox);
        let spid = rt.pid(&sid);
        let mut b = Bundle::new();
        // As CRI does: no hostname of its own when joining the sandbox's UTS namespace.
        b.set("/hostname", json!(null));
        b.namespace("uts", Some(&format!("/proc/{spid}/ns/uts")));
        b.namespace("network", Some(&format!("/proc/{spid}/ns/net")));
        b.sh("hostname; readlink /proc/self/ns/net");
        let o = rt.run_new("joiner", &b).ok();
        assert_eq!(
            o.out(),
            format!("pod-sandbox\n{}", ns_link(&spid.to_string(), "net")),
            "{}",
            rt.name()
        );
        results.push(o.out().lines().next().unwrap().to_string());
    }
    same(
        "hostname seen by the joining container",
        &results[0],
        &results[1],
    );
}

fn userns_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.namespace("user", None);
    b.set(
        "/linux/uidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
    );
    b.set(
        "/linux/gidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
    );
    b
}

/// A user namespace with uid/gid mappings: root inside, 100000 outside.
#[test]
fn user_namespace_mappings() {
    require_root!();
    let mut b = userns_bundle();
    b.sh("id; cat /proc/self/uid_map /proc/self/gid_map; readlink /proc/self/ns/user");
    let (ob, or) = berth_tests::compare::run_both("userns", &b);
    let (ob, or) = (ob.ok(), or.ok());
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("user:"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    same(
        "id and maps in a user namespace",
        strip(&ob.stdout),
        strip(&or.stdout),
    );
    assert_eq!(
        strip(&ob.stdout),
        "uid=0(root) gid=0(root)\n0 100000 65536\n0 100000 65536"
    );
    assert_ne!(
        ob.out().lines().last(),
        Some(ns_link("self", "user").as_str())
    );
}

/// The init of a user-namespaced container runs as host uid 100000 (seen from the host).
#[test]
fn user_namespace_host_view() {
    require_root!();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = userns_bundle();
        let id = rt.start_sleeper("userns-host", &mut b);
        let pid = rt.pid(&id);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(
            uid_line.split_whitespace().nth(1),
            Some("100000"),
            "{}: {uid_line}",
            rt.name()
        );
    }
}

/// Prepares a host dir with files owned by 0 and by 1000, for idmapped mounts.
fn idmap_source() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("berth-idmap-src-")
        .tempdir()
        .unwrap();
    std::fs::write(d.path().join("owned-by-0"), "x").unwrap();
    std::fs::write(d.path().join("owned-by-1000"), "y").unwrap();
    chown(d.path().join("owned-by-1000"), Some(1000), Some(1000)).unwrap();
    d
}

/// An idmapped bind mount (mount uidMappings/gidMappings, no user namespace for the
/// container): host uid 0 shows as 1234 inside, unmapped ids show as the overflow id. Debian's
/// runc 1.1 cannot do this: berth only. The host's files keep their owners.
#[test]
fn idmapped_mount_without_userns() {
    require_root!();
    let src = idmap_source();
    let mut b = Bundle::new();
    b.mount(json!({
        "destination": "/data",
        "type": "bind",
        "source": src.path(),
        "options": ["bind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1234, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 1234, "size": 1}],
    }));
    b.sh("stat -c '%n %u %g' /data/owned-by-0 /data/owned-by-1000");
    let o = Runtime::berth().run_new("idmap", &b).ok();
    assert_eq!(
        o.out(),
        "/data/owned-by-0 1234 1234\n/data/owned-by-1000 65534 65534"
    );
    assert_eq!(
        std::fs::metadata(src.path().join("owned-by-0"))
            .unwrap()
            .uid(),
        0
    );
}

/// The Kubernetes user-namespaced pod case: a user namespace 0→100000 and an idmapped mount
/// with the same mapping, so host files owned by 0 are owned by root inside and a file
/// created inside is owned by 0 on the host.
#[test]
fn idmapped_mount_with_userns() {
    require_root!();
    let src = idmap_source();
    let mut b = userns_bundle();
    // Container root (host 100000) cannot create the mount point in a rootfs owned by host root.
    std::fs::create_dir(b.rootfs().join("data")).unwrap();
    b.mount(json!({
        "destination": "/data",
        "type": "bind",
        "source": src.path(),
        "options": ["rbind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    }));
    b.sh("stat -c '%n %u' /data/owned-by-0 /data/owned-by-1000; touch /data/made-inside && echo made");
    let o = Runtime::berth().run_new("idmap-userns", &b).ok();
    assert_eq!(
        o.out(),
        "/data/owned-by-0 0\n/data/owned-by-1000 1000\nmade"
    );
    let md = std::fs::metadata(src.path().join("made-inside")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (0, 0),
        "file made inside, seen from the host"
    );
}

#[test]
fn hostname_and_domainname() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/hostname", json!("berth-test-host"));
    b.sh("hostname; cat /proc/sys/kernel/domainname");
    let o = run_both_same("hostname", &b);
    assert_eq!(o.out(), "berth-test-host\n(none)");
    // domainname: runc 1.1 ignores it (added in runc 1.2), so berth only.
    b.set("/domainname", json!("berth.example"));
    let o = Runtime::berth().run_new("domainname", &b).ok();
    assert_eq!(o.out(), "berth-test-host\nberth.example");
    // The host's hostname is untouched.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "berth-test-host"
    );
}

/// sysctls in the container's own namespaces: net.* in a new netns, kernel.shm_rmid_forced in
/// a new ipc namespace; the host's values stay.
#[test]
fn sysctls_in_new_namespaces() {
    require_root!();
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shm = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let fwd = if host_fwd.trim() == "1" { "0" } else { "1" };
    let shm = if host_shm.trim() == "1" { "0" } else { "1" };
    let mut b = Bundle::new();
    b.set(
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": fwd, "kernel.shm_rmid_forced": shm}),
    );
    b.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced");
    let o = run_both_same("sysctl", &b);
    assert_eq!(o.out(), format!("{fwd}\n{shm}"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_fwd
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_shm
    );
}

/// Puts a host sysctl back as it was, also when the test fails.
struct RestoreSysctl(&'static str, String);

impl Drop for RestoreSysctl {
    fn drop(&mut self) {
        if std::fs::read_to_string(self.0).ok().as_deref() != Some(self.1.as_str()) {
            eprintln!("{} was changed on the host; restoring it", self.0);
            let _ = std::fs::write(self.0, &self.1);
        }
    }
}

/// A net.* sysctl without a new network namespace is refused (it would change the host), as
/// are sysctls that no namespace isolates.
#[test]
fn sysctl_refused_in_host_netns() {
    require_root!();
    let path = "/proc/sys/net/ipv4/ip_forward";
    let _restore = RestoreSysctl(path, std::fs::read_to_string(path).unwrap());
    let mut b = Bundle::new();
    b.remove_namespace("network");
    b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}));
    let (ob, or) = berth_tests::compare::run_both("sysctl-host", &b);
    same("refused", ob.success(), or.success());
    assert!(!ob.success());
    let mut b = Bundle::new();
    b.set("/linux/sysctl", json!({"vm.swappiness": "10"}));
    let (ob, or) = berth_tests::compare::run_both("sysctl-vm", &b);
    same("vm.* refused", ob.success(), or.success());
    assert!(!ob.success());
}

/// A joined namespace path that is not a namespace (or missing) fails create cleanly.
#[test]
fn join_bad_namespace_path_fails() {
    require_root!();
    let mut b = Bundle::new();
    b.namespace("network", Some("/proc/self/nonexistent-ns"));
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("badns");
        let o = rt.create(&id, &b, &[]);
        assert!(!o.success(), "{}: {o:?}", rt.name());
        // Nothing left behind.
        berth_tests::wait::until("no state", Duration::from_secs(5), || {
            rt.try_state(&id).is_none()
        });
    }
}

/// Lazily unmounts whatever the test left mounted at a path (on drop, also when it fails).
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let mounted = |p: &std::path::Path| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(' ').nth(4) == p.to_str())
        };
        for _ in 0..16 {
            if !mounted(&self.0) {
                break;
            }
            eprintln!("{} still mounted; detaching it", self.0.display());
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A config that lists no namespace at all (runtime-tools' linux_ns_itype): the container
/// inherits every namespace of the runtime, the mount namespace included, as the runtime spec
/// requires and runc does (berth refused: 'needs a new mount namespace'). Its rootfs is
/// entered by chroot, `exec` lands in it too, and `delete` leaves no mount behind on the host.
#[test]
fn no_namespaces_inherit_the_runtimes() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/linux/namespaces", json!([]));
    b.set("/hostname", json!(null));
    std::fs::write(b.rootfs().join("in-rootfs"), "").unwrap();
    b.sh(&format!(
        "ls /in-rootfs; {}; sleep 300",
        readlink_ns_script()
    ));
    let rt = Runtime::berth();
    let _unmount = UnmountOnDrop(b.rootfs());
    let id = rt.new_id("no-ns");
    rt.create(&id, &b, &[]).ok();
    rt.start(&id).ok();
    berth_tests::wait::until("init output", Duration::from_secs(10), || {
        rt.output(&id).0.contains("time=")
    });
    let out = rt.output(&id).0;
    assert!(out.starts_with("/in-rootfs\n"), "{out}");
    let differs = ns_differs(&out);
    assert!(!differs.is_empty(), "{out}");
    for (kind, differs) in &differs {
        assert!(!differs, "namespace {kind} is not the runtime's: {out}");
    }
    let exec = rt.exec(&id, &["ls", "/in-rootfs"]).ok();
    assert_eq!(
        exec.out(),
        "/in-rootfs",
        "exec is not in the container's root"
    );
    let rootfs = b.rootfs();
    let mounted_below = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| mp.starts_with(rootfs.to_str().unwrap()))
            })
            .count()
    };
    assert!(
        mounted_below() > 0,
        "the container's mounts are not in the host's namespace"
    );
    rt.kill(&id, "KILL").ok();
    rt.wait_stopped(&id);
    rt.delete(&id).ok();
    assert_eq!(mounted_below(), 0, "delete left mounts under the rootfs");
}

/// A create that fails half-way through the rootfs setup of a container without a mount
/// namespace of its own (a bind mount whose source is missing, after /proc and /dev are
/// mounted) leaves no mount behind in the host's mount namespace, nor a container.
#[test]
fn no_mount_namespace_failed_create_leaves_no_mount() {
    require_root!();
    let mut b = Bundle::new();
    b.set("/linux/namespaces", json!([]));
    b.set("/hostname", json!(null));
    b.mount(json!({"destination": "/mnt/missing", "type": "bind",
                   "source": "/nonexistent/berth-test-source", "options": ["rbind"]}));
    let rt = Runtime::berth();
    let _unmount = UnmountOnDrop(b.rootfs());
    let id = rt.new_id("no-ns-fail");
    let o = rt.create(&id, &b, &[]);
    assert!(!o.success(), "{o:?}");
    assert!(rt.try_state(&id).is_none(), "a container was left");
    let rootfs = b.rootfs();
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp.starts_with(rootfs.to_str().unwrap()))
        })
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "mounts left on the host: {left:?}");
}
