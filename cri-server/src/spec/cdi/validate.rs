//! The checks the CDI library makes when it loads a spec file: the version (and that the fields
//! used exist in it), the kind's and the devices' names, and each edit's shape; and the rules of
//! fully-qualified device names (the CDI parser's).

use std::collections::BTreeSet;

use super::format::{ContainerEdits, SpecFile, HOOK_NAMES, NO_PERMISSIONS};

/// The earliest CDI version berth reads (the first tagged one, as the CDI library).
const EARLIEST: (u64, u64) = (0, 3);

impl SpecFile {
    /// The checks the CDI library makes when it loads a file; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.check_version()?;
        let (vendor, class) = split_kind(&self.kind)?;
        vendor_or_class(vendor).map_err(|e| format!("kind {:?}: vendor {e}", self.kind))?;
        vendor_or_class(class).map_err(|e| format!("kind {:?}: class {e}", self.kind))?;
        self.container_edits.validate()?;
        if self.devices.is_empty() {
            return Err("no devices".into());
        }
        let mut names = BTreeSet::new();
        for d in &self.devices {
            device_name(&d.name).map_err(|e| format!("device {:?}: {e}", d.name))?;
            if !names.insert(d.name.as_str()) {
                return Err(format!("device {:?} defined twice", d.name));
            }
            if d.container_edits.is_empty() {
                return Err(format!("device {:?}: no container edits", d.name));
            }
            d.container_edits
                .validate()
                .map_err(|e| format!("device {:?}: {e}", d.name))?;
        }
        Ok(())
    }

    /// `cdiVersion`: 0.3.0 or later within major 0, or any 1.x (a 1.x file with fields berth
    /// does not know fails on them, naming them); and at least the version of each field used.
    fn check_version(&self) -> Result<(), String> {
        let v = parse_version(&self.cdi_version).ok_or_else(|| {
            format!(
                "cdiVersion {:?} is not a version (MAJOR.MINOR.PATCH)",
                self.cdi_version
            )
        })?;
        if v.0 > 1 {
            return Err(format!(
                "cdiVersion {:?}: unknown major version {} (berth reads CDI 0.3.0 to 1.x)",
                self.cdi_version, v.0
            ));
        }
        if v < EARLIEST {
            return Err(format!(
                "cdiVersion {:?} is older than 0.3.0, the earliest version berth reads",
                self.cdi_version
            ));
        }
        let (need, why) = self.required_version();
        if v < need {
            return Err(format!(
                "cdiVersion {:?}: {why} needs at least {}.{}.0",
                self.cdi_version, need.0, need.1
            ));
        }
        Ok(())
    }

    /// The earliest version that has every field this file uses, and the newest such field
    /// (the CDI library's `MinimumRequiredVersion`).
    fn required_version(&self) -> ((u64, u64), &'static str) {
        let all: Vec<&ContainerEdits> = std::iter::once(&self.container_edits)
            .chain(self.devices.iter().map(|d| &d.container_edits))
            .collect();
        let rdt = || all.iter().filter_map(|e| e.intel_rdt.as_ref());
        let class = self.kind.split_once('/').map_or("", |(_, c)| c);
        let checks: [(bool, (u64, u64), &'static str); 8] = [
            (
                all.iter().any(|e| !e.net_devices.is_empty())
                    || rdt().any(|r| r.schemata.is_some() || r.enable_monitoring),
                (1, 1),
                "netDevices or intelRdt schemata/enableMonitoring",
            ),
            (rdt().next().is_some(), (0, 7), "intelRdt"),
            (
                all.iter().any(|e| !e.additional_gids.is_empty()),
                (0, 7),
                "additionalGids",
            ),
            (
                !self.annotations.is_empty()
                    || self.devices.iter().any(|d| !d.annotations.is_empty()),
                (0, 6),
                "annotations",
            ),
            (class.contains('.'), (0, 6), "a dot in the kind's class"),
            (
                all.iter()
                    .any(|e| e.device_nodes.iter().any(|n| !n.host_path.is_empty())),
                (0, 5),
                "deviceNodes hostPath",
            ),
            (
                self.devices
                    .iter()
                    .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit())),
                (0, 5),
                "a device name starting with a digit",
            ),
            (
                all.iter()
                    .any(|e| e.mounts.iter().any(|m| !m.typ.is_empty())),
                (0, 4),
                "mounts type",
            ),
        ];
        checks
            .into_iter()
            .filter(|(used, _, _)| *used)
            .map(|(_, v, why)| (v, why))
            .max_by_key(|(v, _)| *v)
            .unwrap_or((EARLIEST, ""))
    }
}

impl ContainerEdits {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.net_devices.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
    }

    /// Each edit's shape (what the CDI library's `Validate` checks, and the absolute paths
    /// SPEC.md asks for).
    fn validate(&self) -> Result<(), String> {
        env(&self.env)?;
        for n in &self.device_nodes {
            if n.path.is_empty() {
                return Err("a device node without path".into());
            }
            if !["", "b", "c", "u", "p"].contains(&n.typ.as_str()) {
                return Err(format!(
                    "device node {:?}: type {:?} is none of b, c, u, p",
                    n.path, n.typ
                ));
            }
            if n.permissions != NO_PERMISSIONS && n.permissions.chars().any(|c| !"rwm".contains(c))
            {
                return Err(format!(
                    "device node {:?}: permissions {:?} are neither a subset of rwm nor {NO_PERMISSIONS:?}",
                    n.path, n.permissions
                ));
            }
        }
        for h in &self.hooks {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(format!(
                    "hook name {:?} is none of {}",
                    h.hook_name,
                    HOOK_NAMES.join(", ")
                ));
            }
            if !h.path.starts_with('/') {
                return Err(format!(
                    "{} hook: path {:?} is not absolute",
                    h.hook_name, h.path
                ));
            }
            env(&h.env).map_err(|e| format!("{} hook {:?}: {e}", h.hook_name, h.path))?;
            if h.timeout.is_some_and(|t| t <= 0) {
                return Err(format!(
                    "{} hook {:?}: timeout must be greater than zero",
                    h.hook_name, h.path
                ));
            }
        }
        for m in &self.mounts {
            if m.host_path.is_empty() {
                return Err(format!("mount {:?}: empty hostPath", m.container_path));
            }
            if !m.container_path.starts_with('/') {
                return Err(format!(
                    "mount of {:?}: containerPath {:?} is not absolute",
                    m.host_path, m.container_path
                ));
            }
        }
        for n in &self.net_devices {
            if n.host_interface_name.is_empty() || n.name.is_empty() {
                return Err("a netDevice without hostInterfaceName or name".into());
            }
        }
        Ok(())
    }
}

/// `KEY=VALUE` entries, each with a non-empty key.
fn env(entries: &[String]) -> Result<(), String> {
    match entries.iter().find(|e| e.find('=').unwrap_or(0) == 0) {
        Some(bad) => Err(format!("env entry {bad:?} is not KEY=VALUE")),
        None => Ok(()),
    }
}

/// `vendor/class`.
pub fn split_kind(kind: &str) -> Result<(&str, &str), String> {
    match kind.split_once('/') {
        Some((v, c)) if !v.is_empty() && !c.is_empty() => Ok((v, c)),
        _ => Err(format!("kind {kind:?} is not vendor/class")),
    }
}

/// A vendor or class: a letter, then letters, digits, `_`, `-` and `.`, ending with a letter or
/// digit (the CDI parser's rule).
pub fn vendor_or_class(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("is empty".into());
    };
    if !first.is_ascii_alphabetic() {
        return Err(format!("{name:?} does not start with a letter"));
    }
    inner_and_last(name, "_-.")
}

/// A device name: a letter or digit, then letters, digits, `_`, `-`, `.` and `:`, ending with a
/// letter or digit.
pub fn device_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("is empty".into());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!("{name:?} does not start with a letter or digit"));
    }
    inner_and_last(name, "_-.:")
}

fn inner_and_last(name: &str, allowed: &str) -> Result<(), String> {
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !allowed.contains(*c))
    {
        return Err(format!("{name:?} has the character {c:?}"));
    }
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{name:?} does not end with a letter or digit"));
    }
    Ok(())
}

/// `MAJOR.MINOR.PATCH` (a leading `v`, and a pre-release or build suffix, allowed).
fn parse_version(v: &str) -> Option<(u64, u64)> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().is_none().then_some((major, minor))
}
