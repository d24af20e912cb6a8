//! CDI devices (Container Device Interface: KEP-4381 DRA drivers and device plugins ask for them
//! through `ContainerConfig.CDI_devices` and `cdi.k8s.io/` annotations), injected as containerd
//! and CRI-O do with the CDI library: each fully-qualified device (`vendor.com/class=name`) is
//! looked up in the CDI spec files of the node's spec directories (`[cdi] spec_dirs`, default
//! `/etc/cdi` then `/var/run/cdi`), and the containerEdits of its file (once per file) and its
//! own are applied to the OCI spec.
//!
//! A device that is malformed, unknown, defined twice in one directory, or whose file cannot be
//! read, or that asks for an edit berth does not apply, refuses the container (INVALID_ARGUMENT
//! naming the device and the cause): a pod never starts without its GPU. Nothing asked for:
//! no file is read.
//!
//! [`resolve`] reads the host (spec files, device nodes, mount sources) and can fail; it is
//! called before the spec is built. [`Injection::apply`] then edits the built spec.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use cri_api::v1 as cri;

use super::SpecError;

mod edits;
mod format;
mod registry;
#[cfg(test)]
mod tests;
mod validate;

pub use edits::Injection;

/// The annotation key prefix a device plugin asks with; the value is a comma-separated list of
/// fully-qualified device names.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The CDI spec directories of containerd, CRI-O and the CDI library, in increasing priority.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// A requested device: `vendor/class=name`, and where it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    vendor: String,
    class: String,
    name: String,
    /// The annotation key, or None for `CDI_devices`.
    annotation: Option<String>,
}

impl Request {
    /// Parses a fully-qualified device name (the CDI parser's rules).
    fn parse(device: &str, annotation: Option<&str>) -> Result<Request, SpecError> {
        let from = annotation.map_or(String::new(), |k| format!(" (annotation {k})"));
        let bad = |why: String| SpecError::Invalid {
            field: "CDI_devices",
            reason: format!("CDI device {device:?}{from}: {why}"),
        };
        let (kind, name) = device
            .split_once('=')
            .ok_or_else(|| bad("not a fully-qualified name vendor.com/class=name".into()))?;
        let (vendor, class) = validate::split_kind(kind)
            .map_err(|_| bad("not a fully-qualified name vendor.com/class=name".into()))?;
        validate::vendor_or_class(vendor).map_err(|e| bad(format!("vendor {e}")))?;
        validate::vendor_or_class(class).map_err(|e| bad(format!("class {e}")))?;
        validate::device_name(name).map_err(|e| bad(format!("device name {e}")))?;
        Ok(Request {
            vendor: vendor.into(),
            class: class.into(),
            name: name.into(),
            annotation: annotation.map(String::from),
        })
    }

    /// `vendor/class`.
    fn kind(&self) -> String {
        format!("{}/{}", self.vendor, self.class)
    }

    /// `vendor/class=name`.
    fn qualified(&self) -> String {
        format!("{}/{}={}", self.vendor, self.class, self.name)
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CDI device {:?}", self.qualified())?;
        if let Some(key) = &self.annotation {
            write!(f, " (annotation {key})")?;
        }
        Ok(())
    }
}

/// The devices `config` asks for: `CDI_devices` in order, then the `cdi.k8s.io/` annotations'
/// by key, each device once.
pub fn requests(config: &cri::ContainerConfig) -> Result<Vec<Request>, SpecError> {
    let mut out: Vec<Request> = Vec::new();
    let mut seen = BTreeSet::new();
    for d in &config.cdi_devices {
        let r = Request::parse(&d.name, None)?;
        if seen.insert(r.qualified()) {
            out.push(r);
        }
    }
    let mut keys: Vec<&String> = config
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for key in keys {
        for device in config.annotations[key].split(',') {
            let r = Request::parse(device, Some(key))?;
            if seen.insert(r.qualified()) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// The edits of the devices `config` asks for, from the spec files in `dirs` (increasing
/// priority); None when it asks for none (and then nothing is read).
pub fn resolve(
    config: &cri::ContainerConfig,
    dirs: &[PathBuf],
) -> Result<Option<Injection>, SpecError> {
    let requests = requests(config)?;
    if requests.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: String| SpecError::Invalid {
        field: "CDI_devices",
        reason,
    };
    let registry = registry::Registry::load(dirs, &requests).map_err(invalid)?;
    let mut injection = Injection::default();
    let mut files_applied = BTreeSet::new();
    for r in &requests {
        let (source, device) = registry.lookup(r).map_err(invalid)?;
        let file = &registry.sources[source];
        if files_applied.insert(source) {
            injection
                .add(
                    &file.spec.container_edits,
                    &format!("{r}: CDI spec {}", file.path.display()),
                )
                .map_err(invalid)?;
        }
        injection
            .add(
                &device.container_edits,
                &format!("{r} (CDI spec {})", file.path.display()),
            )
            .map_err(invalid)?;
    }
    let names: Vec<String> = requests.iter().map(Request::qualified).collect();
    let files: Vec<String> = files_applied
        .iter()
        .map(|i| registry.sources[*i].path.display().to_string())
        .collect();
    tracing::info!(devices = ?names, specs = ?files, "CDI devices injected");
    Ok(Some(injection))
}
