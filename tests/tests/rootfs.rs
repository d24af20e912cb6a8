//! The root filesystem: readonly root, --no-pivot, propagation kept private, bind mounts with
//! ro/nosuid/nodev/noexec, tmpfs options, the spec's mount types, masked and readonly paths,
//! default devices and /dev symlinks — what the container sees, compared with runc.

use std::os::unix::fs::PermissionsExt;

use berth_tests::compare::{run_both, run_both_same, same};
use berth_tests::runtime::Runtime;
use berth_tests::{json, require_root, Bundle};

/// One mount as mountinfo shows it, without IDs and devices: (mount point, fs type, per-mount
/// options, super options).
type MountLine = (String, String, String, String);

fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some((
                pre.get(4)?.to_string(),
                post.first()?.to_string(),
                pre.get(5)?.to_string(),
                post.get(2).unwrap_or(&"").to_string(),
            ))
        })
        .collect()
}

fn mount_at<'a>(mounts: &'a [MountLine], mp: &str) -> Option<&'a MountLine> {
    mounts.iter().rev().find(|m| m.0 == mp)
}

fn opts(m: &MountLine) -> Vec<&str> {
    m.2.split(',').collect()
}

/// / is read-only: writing fails, mountinfo says ro.
#[test]
fn readonly_rootfs() {
    require_root!();
    let mut b = Bundle::new();
    b.readonly(true);
    b.sh("touch /x 2>&1; echo rc=$?; grep -c . /proc/self/mountinfo >/dev/null; cat /proc/self/mountinfo");
    let (ob, or) = run_both("ro-root", &b);
    let (ob, or) = (ob.ok(), or.ok());
    same(
        "touch / output",
        ob.stdout.lines().take(2).collect::<Vec<_>>(),
        or.stdout.lines().take(2).collect::<Vec<_>>(),
    );
    assert!(ob.stdout.contains("Read-only file system"), "{ob:?}");
    let mb = parse_mountinfo(&ob.stdout);
    let mr = parse_mountinfo(&or.stdout);
    let root_b = mount_at(&mb, "/").expect("/ in mountinfo");
    let root_r = mount_at(&mr, "/").expect("/ in mountinfo");
    assert!(opts(root_b).contains(&"ro"), "{root_b:?}");
    same("options of /", opts(root_b), opts(root_r));
    assert!(!b.rootfs().join("x").exists());
}

/// The mounts of runc's default spec, each with its type and options, as runc makes them.
#[test]
fn default_mounts_types_and_options() {
    require_root!();
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/mountinfo"]);
    let (ob, or) = run_both("mounts", &b);
    let (mb, mr) = (
        parse_mountinfo(&ob.ok().stdout),
        parse_mountinfo(&or.ok().stdout),
    );
    for (mp, fstype) in [
        ("/", ""),
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ] {
        let x = mount_at(&mb, mp).unwrap_or_else(|| panic!("berth: no mount at {mp}: {mb:#?}"));
        let y = mount_at(&mr, mp).unwrap_or_else(|| panic!("runc: no mount at {mp}"));
        if !fstype.is_empty() {
            assert_eq!(x.1, fstype, "{mp}");
        }
        same(
            &format!("mount at {mp} (type, options)"),
            (&x.1, opts(x)),
            (&y.1, opts(y)),
        );
    }
    // /sys/fs/cgroup: a cgroup (v1: tmpfs with a cgroup per hierarchy) mount, read-only.
    let cg_b: Vec<_> = mb
        .iter()
        .filter(|m| m.0.starts_with("/sys/fs/cgroup"))
        .collect();
    let cg_r: Vec<_> = mr
        .iter()
        .filter(|m| m.0.starts_with("/sys/fs/cgroup"))
        .collect();
    assert!(!cg_b.is_empty(), "berth: no /sys/fs/cgroup mount");
    // runc 1.1 leaves out the host's cgroup2 mount of a hybrid layout
    // (/sys/fs/cgroup/unified); berth mounts it too. Every other one is the same.
    same(
        "cgroup mount points (besides unified)",
        cg_b.iter()
            .filter(|m| m.0 != "/sys/fs/cgroup/unified")
            .map(|m| (&m.0, &m.1))
            .collect::<Vec<_>>(),
        cg_r.iter().map(|m| (&m.0, &m.1)).collect::<Vec<_>>(),
    );
    for m in &cg_b {
        assert!(opts(m).contains(&"ro"), "cgroup mount not ro: {m:?}");
    }
}

/// --no-pivot (MS_MOVE + chroot): the container still sees its rootfs and nothing else.
#[test]
fn no_pivot() {
    require_root!();
    let mut b = Bundle::new();
    b.sh("ls /; awk '$5 == \"/\"' /proc/self/mountinfo | wc -l");
    let mut outs = Vec::new();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let id = rt.new_id("nopivot");
        let o = rt.run(&id, &b, &["--no-pivot"]).ok();
        outs.push(o.out());
    }
    assert!(outs[0].contains("bin\n"), "{outs:?}");
    same("--no-pivot view", &outs[0], &outs[1]);
}

/// rootfsPropagation "unbindable" (runtime-tools' linux_rootfs_propagation): the container's
/// root ends up unbindable, and the rootfs and the spec's bind mounts are still set up (berth
/// made / unbindable first, so binding the rootfs onto itself failed with EINVAL, as runc 1.1
/// still does).
#[test]
fn rootfs_propagation_unbindable() {
    require_root!();
    for prop in ["unbindable", "runbindable"] {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "bound\n").unwrap();
        let mut b = Bundle::new();
        b.set("/linux/rootfsPropagation", json!(prop));
        b.mount(
            json!({"destination": "/mnt/src", "type": "bind", "source": src.path(),
                       "options": ["rbind", "ro"]}),
        );
        b.sh("cat /mnt/src/f; awk '$5 == \"/\"' /proc/self/mountinfo");
        let o = Runtime::berth().run_new("unbindable", &b).ok();
        let out = o.out();
        assert!(out.starts_with("bound\n"), "{prop}: {out}");
        assert!(
            out.contains(" unbindable "),
            "{prop}: / not unbindable: {out}"
        );
    }
}

/// Mounts made for the container do not propagate to the host (rootfs propagation private).
#[test]
fn mounts_do_not_leak_to_host() {
    require_root!();
    for rt in [Runtime::berth(), Runtime::runc()] {
        let mut b = Bundle::new();
        b.tmpfs_tmp();
        let _id = rt.start_sleeper("noleak", &mut b);
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = b.rootfs();
        assert!(
            !host.contains(root.to_str().unwrap()),
            "{}: container mounts visible on the host:\n{}",
            rt.name(),
            host.lines()
                .filter(|l| l.contains(root.to_str().unwrap()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A bind mount with ro, nosuid, nodev, noexec: writes and exec fail, mountinfo agrees.
#[test]
fn bind_mount_flags() {
    require_root!();
    let src = tempfile::Builder::new()
        .prefix("berth-bind-src-")
        .tempdir()
        .unwrap();
    let script = src.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho executed\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = Bundle::new();
    b.mount(json!({
        "destination": "/mnt/ro",
        "type": "bind",
        "source": src.path(),
        "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
    }));
    b.mount(json!({
        "destination": "/mnt/rw",
        "type": "bind",
        "source": src.path(),
        "options": ["bind", "rw"],
    }));
    b.sh(
        "touch /mnt/ro/new 2>&1; echo touch-ro=$?; /mnt/ro/run.sh 2>&1; echo exec-ro=$?; \
         /mnt/rw/run.sh; echo exec-rw=$?; cat /proc/self/mountinfo",
    );
    let (ob, or) = run_both("bind", &b);
    let (ob, or) = (ob.ok(), or.ok());
    let head = |s: &str| {
        s.lines()
            .take_while(|l| !l.contains(" - "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    same("bind mount behaviour", head(&ob.stdout), head(&or.stdout));
    assert!(head(&ob.stdout).contains("touch-ro=1"), "{ob:?}");
    assert!(head(&ob.stdout).contains("exec-ro=126"), "{ob:?}");
    assert!(head(&ob.stdout).contains("executed\nexec-rw=0"), "{ob:?}");
    let (mb, mr) = (parse_mountinfo(&ob.stdout), parse_mountinfo(&or.stdout));
    let x = mount_at(&mb, "/mnt/ro").expect("/mnt/ro");
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(opts(x).contains(&o), "{o} missing: {x:?}");
    }
    same(
        "options of /mnt/ro",
        opts(x),
        opts(mount_at(&mr, "/mnt/ro").unwrap()),
    );
    same(
        "options of /mnt/rw",
        opts(mount_at(&mb, "/mnt/rw").unwrap()),
        opts(mount_at(&mr, "/mnt/rw").unwrap()),
    );
    assert!(!src.path().join("new").exists());
}

/// tmpfs with size, mode, uid options: the limit holds, owner and mode are as asked.
#[test]
fn tmpfs_with_options() {
    require_root!();
    let mut b = Bundle::new();
    b.mount(json!({
        "destination": "/scratch",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "noexec", "size=1m", "mode=710", "uid=1000", "gid=1000"],
    }));
    b.sh(
        "stat -c '%a %u %g' /scratch; dd if=/dev/zero of=/scratch/f bs=1024 count=2048 2>/dev/null; \
         echo dd=$?; grep ' /scratch ' /proc/self/mountinfo | sed 's/^[0-9]* [0-9]* [0-9:]* //'",
    );
    let (ob, or) = run_both("tmpfs", &b);
    let (ob, or) = (ob.ok(), or.ok());
    // runc 1.1 chmods a tmpfs root back to the mode of the directory it covers (755 here),
    // whatever mode= says; berth keeps mode=710 as asked. The rest is compared.
    let tail = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    same(
        "tmpfs limit and mountinfo",
        tail(&ob.stdout),
        tail(&or.stdout),
    );
    let out = ob.out();
    assert!(out.starts_with("710 1000 1000\ndd=1\n"), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    assert!(out.contains("noexec"), "{out}");
}

/// Masked paths read empty (files) or show an empty read-only tmpfs (dirs); readonly paths
/// refuse writes; mountinfo shows how.
#[test]
fn masked_and_readonly_paths() {
    require_root!();
    let mut b = Bundle::new();
    b.sh(
        "echo kcore=$(cat /proc/kcore | wc -c); echo firmware=$(ls /sys/firmware | wc -l); \
         echo timer_list=$(cat /proc/timer_list | wc -c); \
         echo 1 > /proc/sysrq-trigger 2>/dev/null; echo sysrq=$?; \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; echo procsys=$?; \
         cat /proc/self/mountinfo",
    );
    let (ob, or) = run_both("masked", &b);
    let (ob, or) = (ob.ok(), or.ok());
    let head = |s: &str| s.lines().take(5).collect::<Vec<_>>().join("\n");
    same(
        "masked/readonly behaviour",
        head(&ob.stdout),
        head(&or.stdout),
    );
    assert_eq!(
        head(&ob.stdout),
        "kcore=0\nfirmware=0\ntimer_list=0\nsysrq=1\nprocsys=1"
    );
    let (mb, mr) = (parse_mountinfo(&ob.stdout), parse_mountinfo(&or.stdout));
    let masked = b.get("/linux/maskedPaths").as_array().unwrap().clone();
    let readonly = b.get("/linux/readonlyPaths").as_array().unwrap().clone();
    for p in masked.iter().chain(readonly.iter()) {
        let p = p.as_str().unwrap();
        let x = mount_at(&mb, p).map(|m| (m.1.clone(), opts(m).contains(&"ro")));
        let y = mount_at(&mr, p).map(|m| (m.1.clone(), opts(m).contains(&"ro")));
        same(&format!("mount at {p} (type, ro)"), &x, &y);
    }
    for p in readonly {
        let p = p.as_str().unwrap();
        if let Some(m) = mount_at(&mb, p) {
            assert!(opts(m).contains(&"ro"), "readonly path {p} not ro: {m:?}");
        }
    }
}

/// `ls -la /dev` without the dates: default devices (null, zero, full, random, urandom, tty,
/// ptmx) and the /dev/fd, stdin/stdout/stderr, ptmx symlinks.
#[test]
fn default_devices_and_symlinks() {
    require_root!();
    let mut b = Bundle::new();
    b.args(&["ls", "-la", "/dev"]);
    let (ob, or) = run_both("dev", &b);
    let (xb, xr) = (normalize_ls(&ob.ok().stdout), normalize_ls(&or.ok().stdout));
    same("ls -la /dev (dates dropped)", &xb, &xr);
    for want in [
        "crw-rw-rw- 1 root root 1, 3 null",
        "crw-rw-rw- 1 root root 1, 5 zero",
        "crw-rw-rw- 1 root root 1, 7 full",
        "crw-rw-rw- 1 root root 1, 8 random",
        "crw-rw-rw- 1 root root 1, 9 urandom",
        "crw-rw-rw- 1 root root 5, 0 tty",
        "fd -> /proc/self/fd",
        "stdin -> /proc/self/fd/0",
        "stdout -> /proc/self/fd/1",
        "stderr -> /proc/self/fd/2",
        "ptmx -> pts/ptmx",
    ] {
        assert!(
            xb.iter().any(|l| l.ends_with(want)),
            "no `{want}` in /dev: {xb:#?}"
        );
    }
}

/// `ls -la` lines without link counts' neighbours that vary (sizes of dirs stay), dates and
/// the `total` line.
fn normalize_ls(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with("total"))
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let perms = *t.first()?;
            let is_dev = perms.starts_with('c') || perms.starts_with('b');
            let (size, rest) = if is_dev {
                (format!("{} {}", t.get(4)?, t.get(5)?), 6)
            } else {
                (String::new(), 5)
            };
            // rest..rest+3 are the date; the name (and `-> target`) follows.
            let name = t.get(rest + 3..)?.join(" ");
            let kind = if perms.starts_with('l') {
                format!("{perms} {name}")
            } else if is_dev {
                format!("{perms} {} {} {} {size} {name}", t[1], t[2], t[3])
            } else {
                format!("{perms} {} {} {name}", t[2], t[3])
            };
            Some(kind)
        })
        .collect();
    v.sort();
    v
}

/// A linux.devices node is usable only as the spec's device rules allow: read-only here, so
/// opening it for writing is refused by the devices cgroup (berth once appended an "rwm" rule
/// for every linux.devices entry; runc adds none). As runc.
#[test]
fn extra_device_only_as_the_rules_allow() {
    require_root!();
    let mut b = Bundle::new();
    b.push(
        "/linux/devices",
        json!({"path": "/dev/fuse-ro", "type": "c", "major": 10, "minor": 229,
               "fileMode": 438, "uid": 0, "gid": 0}),
    );
    b.push(
        "/linux/resources/devices",
        json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}),
    );
    b.args(&[
        "sh",
        "-c",
        "if (exec 3>/dev/fuse-ro) 2>/dev/null; then echo writable; else echo refused; fi",
    ]);
    let o = run_both_same("dev-extra-ro", &b);
    assert_eq!(o.out(), "refused");
}

/// Extra devices from linux.devices are created with their type, numbers, mode and owner.
#[test]
fn extra_device() {
    require_root!();
    let mut b = Bundle::new();
    b.push(
        "/linux/devices",
        json!({"path": "/dev/fuse-test", "type": "c", "major": 10, "minor": 229,
               "fileMode": 432, "uid": 0, "gid": 0}),
    );
    b.push(
        "/linux/resources/devices",
        json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}),
    );
    b.args(&["stat", "-c", "%n %F %a %t:%T %u:%g", "/dev/fuse-test"]);
    let o = run_both_same("dev-extra", &b);
    assert_eq!(
        o.out(),
        "/dev/fuse-test character special file 660 a:e5 0:0"
    );
}
