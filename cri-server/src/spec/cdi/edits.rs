//! CDI container edits as changes to the OCI spec, as the CDI library's `ContainerEdits.Apply`
//! makes them: env appended (a key already set is replaced), device nodes added to
//! `linux.devices` (type, numbers and mode read from the host node when the edit leaves them
//! out) and allowed in the device cgroup, mounts added (a mount on the same container path
//! replaced; then sorted so that parents come first), hooks appended to their OCI list, and
//! additional GIDs added to the process.
//!
//! Everything that reads the host is done in [`Injection::add`], which can fail; applying the
//! result to the spec cannot. Edits berth does not apply (`intelRdt`, `netDevices`) are refused.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

use oci_spec::runtime::{Hook, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Mount, Spec};

use super::format::{self, ContainerEdits, DeviceNode, NO_PERMISSIONS};
use crate::spec::process::merge_env;

/// The OCI pieces of the requested devices' edits, in the order they apply.
#[derive(Debug, Default)]
pub struct Injection {
    env: Vec<String>,
    devices: Vec<LinuxDevice>,
    rules: Vec<LinuxDeviceCgroup>,
    mounts: Vec<Mount>,
    hooks: Vec<(String, Hook)>,
    gids: Vec<u32>,
}

impl Injection {
    /// Adds `edits`; `who` names them in an error (the device, the spec file).
    pub fn add(&mut self, edits: &ContainerEdits, who: &str) -> Result<(), String> {
        if edits.intel_rdt.is_some() {
            return Err(format!(
                "{who}: intelRdt edits are not applied by berth (no resctrl support)"
            ));
        }
        if let Some(n) = edits.net_devices.first() {
            return Err(format!(
                "{who}: netDevices edits (host interface {:?}) are not applied by berth",
                n.host_interface_name
            ));
        }
        self.env.extend(edits.env.iter().cloned());
        for n in &edits.device_nodes {
            let dev = device(n).map_err(|e| format!("{who}: {e}"))?;
            self.rules.extend(rule(&dev, &n.permissions));
            self.devices.push(dev);
        }
        for m in &edits.mounts {
            self.mounts
                .push(mount(m).map_err(|e| format!("{who}: {e}"))?);
        }
        for h in &edits.hooks {
            let hook = hook(h).map_err(|e| format!("{who}: {e}"))?;
            self.hooks.push((h.hook_name.clone(), hook));
        }
        // A 0 is ignored, as the CDI library does.
        self.gids
            .extend(edits.additional_gids.iter().copied().filter(|g| *g != 0));
        Ok(())
    }

    /// The edits applied to `spec` (built with its process and user set).
    pub fn apply(&self, spec: &mut Spec) {
        let (uid, gid) = spec
            .process()
            .as_ref()
            .map_or((0, 0), |p| (p.user().uid(), p.user().gid()));
        if let Some(p) = spec.process_mut() {
            if !self.env.is_empty() {
                let env = merge_env(&[p.env().as_deref().unwrap_or_default(), &self.env]);
                p.set_env(Some(env));
            }
            if !self.gids.is_empty() {
                let user = p.user_mut();
                let mut gids = user.additional_gids().clone().unwrap_or_default();
                for g in &self.gids {
                    if !gids.contains(g) {
                        gids.push(*g);
                    }
                }
                user.set_additional_gids(Some(gids));
            }
        }
        if !self.mounts.is_empty() {
            self.apply_mounts(spec);
        }
        if !self.hooks.is_empty() {
            self.apply_hooks(spec);
        }
        if !self.devices.is_empty() {
            let linux = spec.linux_mut().get_or_insert_with(Default::default);
            let mut devices = linux.devices().clone().unwrap_or_default();
            for d in &self.devices {
                devices.retain(|old| old.path() != d.path());
                let mut d = d.clone();
                // The node belongs to the process's user unless the edit says (CDI's rule).
                if d.uid().is_none() && uid > 0 {
                    d.set_uid(Some(uid));
                }
                if d.gid().is_none() && gid > 0 {
                    d.set_gid(Some(gid));
                }
                devices.push(d);
            }
            linux.set_devices(Some(devices));
            let res = linux.resources_mut().get_or_insert_with(Default::default);
            let mut rules = res.devices().clone().unwrap_or_default();
            rules.extend(self.rules.iter().cloned());
            res.set_devices(Some(rules));
        }
    }

    /// Mounts on the same container path replaced; in a pod user namespace a bind is
    /// id-mapped with the pod's mappings (the CDI library adds `idmap`/`ridmap`), like the
    /// pod's own files; then all sorted by depth, stably.
    fn apply_mounts(&self, spec: &mut Spec) {
        let idmap = spec.linux().as_ref().and_then(|l| {
            let uids = l.uid_mappings().clone().filter(|m| !m.is_empty())?;
            let gids = l.gid_mappings().clone().filter(|m| !m.is_empty())?;
            Some((uids, gids))
        });
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for m in &self.mounts {
            mounts.retain(|old| !same_path(old.destination(), m.destination()));
            let mut m = m.clone();
            let idmapped = m
                .options()
                .iter()
                .flatten()
                .any(|o| o == "idmap" || o == "ridmap");
            if let Some((uids, gids)) = idmap.as_ref().filter(|_| is_bind(&m) && !idmapped) {
                m.set_uid_mappings(Some(uids.clone()));
                m.set_gid_mappings(Some(gids.clone()));
            }
            mounts.push(m);
        }
        mounts.sort_by_key(|m| depth(m.destination()));
        spec.set_mounts(Some(mounts));
    }

    #[allow(deprecated)] // prestart: deprecated by the OCI spec, still a CDI hook name
    fn apply_hooks(&self, spec: &mut Spec) {
        let hooks = spec.hooks_mut().get_or_insert_with(Default::default);
        for (name, hook) in &self.hooks {
            let list = match name.as_str() {
                "prestart" => hooks.prestart_mut(),
                "createRuntime" => hooks.create_runtime_mut(),
                "createContainer" => hooks.create_container_mut(),
                "startContainer" => hooks.start_container_mut(),
                "poststart" => hooks.poststart_mut(),
                // Validated: poststop is the only name left.
                _ => hooks.poststop_mut(),
            };
            list.get_or_insert_with(Vec::new).push(hook.clone());
        }
    }
}

/// What the host node says: type, numbers, permission bits.
struct HostNode {
    typ: &'static str,
    major: i64,
    minor: i64,
    mode: u32,
}

/// The host node at `path`, not following a symlink (as the CDI library's `lstat`).
fn host_node(path: &Path) -> Result<HostNode, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let ft = meta.file_type();
    let typ = if ft.is_block_device() {
        "b"
    } else if ft.is_char_device() {
        "c"
    } else if ft.is_fifo() {
        "p"
    } else {
        return Err("not a device node".into());
    };
    let rdev = meta.rdev();
    Ok(HostNode {
        typ,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        mode: meta.mode() & 0o7777,
    })
}

/// A device node's OCI description (the CDI library's `fillMissingInfo`): a node that gives its
/// type and major number (a FIFO: its type) is taken as given, its mode filled from the host
/// node if that exists; any other is read from the host node, which must exist and be of the
/// given type.
fn device(n: &DeviceNode) -> Result<LinuxDevice, String> {
    let host = if n.host_path.is_empty() {
        &n.path
    } else {
        &n.host_path
    };
    let given = !n.typ.is_empty() && (n.major != 0 || n.typ == "p");
    let (mut typ, mut major, mut minor, mut mode) = (n.typ.as_str(), n.major, n.minor, n.file_mode);
    match host_node(Path::new(host)) {
        Err(e) if !given => {
            return Err(format!(
                "device node {:?}: host device {host:?}: {e}",
                n.path
            ))
        }
        Err(_) => {}
        Ok(node) => {
            mode = mode.or(Some(node.mode));
            if !given {
                if typ.is_empty() {
                    typ = node.typ;
                }
                if typ != node.typ {
                    return Err(format!(
                        "device node {:?}: type {typ:?}, but host device {host:?} is of type {:?}",
                        n.path, node.typ
                    ));
                }
                if typ != "p" && major == 0 {
                    (major, minor) = (node.major, node.minor);
                }
            }
        }
    }
    let mut d = LinuxDevice::default();
    d.set_path(n.path.clone().into());
    d.set_typ(match typ {
        "b" => LinuxDeviceType::B,
        "c" => LinuxDeviceType::C,
        "u" => LinuxDeviceType::U,
        _ => LinuxDeviceType::P,
    });
    d.set_major(major);
    d.set_minor(minor);
    d.set_file_mode(mode);
    d.set_uid(n.uid);
    d.set_gid(n.gid);
    Ok(d)
}

/// The device cgroup rule of a block or character node: `permissions` (empty: rwm; `none`:
/// none).
fn rule(dev: &LinuxDevice, permissions: &str) -> Option<LinuxDeviceCgroup> {
    if !matches!(dev.typ(), LinuxDeviceType::B | LinuxDeviceType::C)
        || permissions == NO_PERMISSIONS
    {
        return None;
    }
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true);
    rule.set_typ(Some(dev.typ()));
    rule.set_major(Some(dev.major()));
    rule.set_minor(Some(dev.minor()));
    rule.set_access(Some(
        if permissions.is_empty() {
            "rwm"
        } else {
            permissions
        }
        .to_string(),
    ));
    Some(rule)
}

/// A CDI mount: its options as given, type `bind` when it gives none (SPEC.md: for binds the
/// type is a dummy). A bind's host path must exist now (SPEC.md: a missing resource is an
/// error when the container is created), and is not created as CRI mounts' are.
fn mount(m: &format::Mount) -> Result<Mount, String> {
    let mut out = Mount::default();
    out.set_destination(m.container_path.clone().into());
    out.set_source(Some(m.host_path.clone().into()));
    out.set_typ(Some(if m.typ.is_empty() {
        "bind".to_string()
    } else {
        m.typ.clone()
    }));
    out.set_options(Some(m.options.clone()).filter(|o| !o.is_empty()));
    if is_bind(&out) {
        std::fs::metadata(&m.host_path)
            .map_err(|e| format!("mount of {:?} on {:?}: {e}", m.host_path, m.container_path))?;
    }
    Ok(out)
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// A hook as given; its program must exist on the host now.
fn hook(h: &format::Hook) -> Result<Hook, String> {
    std::fs::metadata(&h.path).map_err(|e| format!("{} hook {:?}: {e}", h.hook_name, h.path))?;
    let mut out = Hook::default();
    out.set_path(h.path.clone().into());
    out.set_args(Some(h.args.clone()).filter(|a| !a.is_empty()));
    out.set_env(Some(h.env.clone()).filter(|e| !e.is_empty()));
    out.set_timeout(h.timeout);
    Ok(out)
}

/// A container path cleaned lexically (Go's `filepath.Clean`): its names, `..` applied.
fn clean(path: &Path) -> Vec<&std::ffi::OsStr> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts
}

fn same_path(a: &Path, b: &Path) -> bool {
    clean(a) == clean(b)
}

/// The number of parts of a container path (/a/b/c: 3), the order mounts are sorted in.
fn depth(path: &Path) -> usize {
    clean(path).len()
}
