//! The CDI spec files of the kinds a container asks for, read from the spec directories the way
//! the CDI library's cache reads them: every `*.json` and `*.yaml` (berth also takes `*.yml`)
//! directly in each directory, a missing directory skipped; a device defined in a later directory
//! replaces the same device of an earlier one, and two files of one directory defining the same
//! device make it a conflict that is refused, naming both.
//!
//! Stricter than the library where it would otherwise guess: a file of a kind a request needs
//! that cannot be read, parsed or validated refuses the request (the library leaves that file
//! out and may inject another file's device of the same name), and a directory that exists but
//! cannot be listed refuses it too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::format::{Device, SpecFile};
use super::Request;

/// A spec file of a kind a request needs, parsed and validated.
pub struct Source {
    pub path: PathBuf,
    pub spec: SpecFile,
}

/// Where a device is defined: index into `Registry::sources`, index into its devices.
#[derive(Clone, Copy)]
struct Entry {
    source: usize,
    device: usize,
    priority: usize,
}

/// The devices of the requested kinds.
pub struct Registry {
    pub sources: Vec<Source>,
    devices: BTreeMap<String, Entry>,
    /// Devices defined by two files of the same directory (the one of highest priority): the
    /// files.
    conflicts: BTreeMap<String, Vec<PathBuf>>,
    /// Files whose kind could not even be read: they might define a requested device.
    unreadable: Vec<(PathBuf, String)>,
    dirs: Vec<PathBuf>,
}

/// Whether `name` is a spec file by its extension; `Some(json)`.
fn spec_format(name: &Path) -> Option<bool> {
    match name.extension()?.to_str()? {
        "json" => Some(true),
        "yaml" | "yml" => Some(false),
        _ => None,
    }
}

impl Registry {
    /// Reads the spec files in `dirs` (increasing priority) of the kinds `requests` name; an
    /// error names the requests it concerns.
    pub fn load(dirs: &[PathBuf], requests: &[Request]) -> Result<Registry, String> {
        let kinds: BTreeSet<String> = requests.iter().map(Request::kind).collect();
        let concerned = |kind: &str| -> String {
            let names: Vec<String> = requests
                .iter()
                .filter(|r| r.kind() == kind)
                .map(Request::to_string)
                .collect();
            names.join(", ")
        };
        let mut reg = Registry {
            sources: Vec::new(),
            devices: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            unreadable: Vec::new(),
            dirs: dirs.to_vec(),
        };
        for (priority, dir) in dirs.iter().enumerate() {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let all: Vec<String> = requests.iter().map(Request::to_string).collect();
                    return Err(format!(
                        "{}: CDI spec directory {}: {e}",
                        all.join(", "),
                        dir.display()
                    ));
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| spec_format(p).is_some() && !p.is_dir())
                .collect();
            files.sort();
            for path in files {
                let json = spec_format(&path) == Some(true);
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        reg.unreadable.push((path, e.to_string()));
                        continue;
                    }
                };
                let spec = match SpecFile::parse(&text, json) {
                    Ok(spec) => spec,
                    Err(e) => match SpecFile::kind_of(&text, json) {
                        Some(kind) if kinds.contains(&kind) => {
                            return Err(format!(
                                "{}: CDI spec {} of {kind}: {e}",
                                concerned(&kind),
                                path.display()
                            ))
                        }
                        Some(kind) => {
                            tracing::debug!(spec = %path.display(), kind, error = %e,
                                "CDI spec not read: no request needs its kind");
                            continue;
                        }
                        None => {
                            reg.unreadable.push((path, e));
                            continue;
                        }
                    },
                };
                if !kinds.contains(&spec.kind) {
                    continue;
                }
                spec.validate().map_err(|e| {
                    format!(
                        "{}: CDI spec {} of {}: {e}",
                        concerned(&spec.kind),
                        path.display(),
                        spec.kind
                    )
                })?;
                reg.add(Source { path, spec }, priority);
            }
        }
        for (path, e) in &reg.unreadable {
            tracing::warn!(spec = %path.display(), error = %e,
                "CDI spec file not read: its devices, if any, cannot be injected");
        }
        Ok(reg)
    }

    fn add(&mut self, source: Source, priority: usize) {
        let index = self.sources.len();
        for (device, d) in source.spec.devices.iter().enumerate() {
            let name = format!("{}={}", source.spec.kind, d.name);
            let entry = Entry {
                source: index,
                device,
                priority,
            };
            match self.devices.get(&name) {
                Some(old) if old.priority == priority => {
                    let files = self
                        .conflicts
                        .entry(name)
                        .or_insert_with(|| vec![self.sources[old.source].path.clone()]);
                    files.push(source.path.clone());
                }
                _ => {
                    // A later directory overrides, conflicts of an earlier one included.
                    self.conflicts.remove(&name);
                    self.devices.insert(name, entry);
                }
            }
        }
        self.sources.push(source);
    }

    /// The file and the device `request` names; the error says why there is none.
    pub fn lookup(&self, request: &Request) -> Result<(usize, &Device), String> {
        let name = request.qualified();
        if let Some(files) = self.conflicts.get(&name) {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            return Err(format!(
                "{request}: defined by more than one CDI spec of the same directory: {}",
                files.join(", ")
            ));
        }
        if let Some(e) = self.devices.get(&name) {
            return Ok((e.source, &self.sources[e.source].spec.devices[e.device]));
        }
        let kind = request.kind();
        let of_kind: Vec<&Source> = self
            .sources
            .iter()
            .filter(|s| s.spec.kind == kind)
            .collect();
        let mut reason = if of_kind.is_empty() {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "{request}: unknown CDI device: no CDI spec of kind {kind} in {}",
                dirs.join(", ")
            )
        } else {
            let mut known: Vec<String> = of_kind
                .iter()
                .flat_map(|s| s.spec.devices.iter().map(|d| d.name.clone()))
                .collect();
            known.sort();
            known.dedup();
            let files: Vec<String> = of_kind
                .iter()
                .map(|s| s.path.display().to_string())
                .collect();
            format!(
                "{request}: unknown CDI device: the CDI specs of kind {kind} ({}) define {}",
                files.join(", "),
                known.join(", ")
            )
        };
        for (path, e) in &self.unreadable {
            reason.push_str(&format!(
                "; CDI spec {} could not be read: {e}",
                path.display()
            ));
        }
        Err(reason)
    }
}
