//! Reading and writing cgroupfs files: one value per write (as the kernel wants it), no file
//! creation (cgroupfs files exist or the controller is missing), and parsers for the few file
//! formats cgroups use (single value, flat keyed "key value" lines, nested keyed "8:0 k=v k=v").

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::CgroupError;

/// Writes `value` to `dir/file` with O_WRONLY|O_TRUNC, never creating the file.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    tracing::trace!(path = %path.display(), value, "cgroup write");
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| CgroupError::Write {
        path,
        value: value.to_owned(),
        source,
    })
}

/// True if `dir/file` exists.
pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads `dir/file`, `None` if it does not exist.
pub(crate) fn read_opt(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// Parses one unsigned value; "max" (v2) reads as `u64::MAX`.
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    let t = s.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse::<u64>().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        content: t.to_owned(),
        reason: "expected an unsigned integer or \"max\"",
    })
}

/// Reads `dir/file` as one unsigned value.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let path = dir.join(file);
    let s = read(&path)?;
    parse_u64(&path, &s)
}

/// Reads `dir/file` as one unsigned value, `None` if the file does not exist.
pub(crate) fn read_u64_opt(dir: &Path, file: &str) -> Result<Option<u64>, CgroupError> {
    let path = dir.join(file);
    match read_opt(dir, file)? {
        Some(s) => parse_u64(&path, &s).map(Some),
        None => Ok(None),
    }
}

/// A parsed flat keyed file ("key value" per line), e.g. memory.stat, cpu.stat, memory.events.
#[derive(Debug, Default, Clone)]
pub(crate) struct FlatKeyed(Vec<(String, u64)>);

impl FlatKeyed {
    /// Parses the content of `path`. Lines that are not "key number" are errors.
    pub(crate) fn parse(path: &Path, content: &str) -> Result<Self, CgroupError> {
        let mut entries = Vec::new();
        for line in content.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(k), Some(v), None) => entries.push((k.to_owned(), parse_u64(path, v)?)),
                _ => {
                    return Err(CgroupError::Parse {
                        path: path.to_owned(),
                        content: line.to_owned(),
                        reason: "expected \"key value\"",
                    })
                }
            }
        }
        Ok(Self(entries))
    }

    /// Reads and parses `dir/file`; an absent file gives an empty map.
    pub(crate) fn read(dir: &Path, file: &str) -> Result<Self, CgroupError> {
        match read_opt(dir, file)? {
            Some(s) => Self::parse(&dir.join(file), &s),
            None => Ok(Self::default()),
        }
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The value of `key`, 0 if absent.
    pub(crate) fn get_or_zero(&self, key: &str) -> u64 {
        self.get(key).unwrap_or(0)
    }
}

/// The pids in `dir`'s own cgroup.procs (not its children's), sorted; none if the file is
/// absent.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let mut out = match fs::read_to_string(&path) {
        Ok(content) => parse_procs(&path, &content)?,
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(CgroupError::Read { path, source }),
    };
    out.sort_unstable();
    Ok(out)
}

fn parse_procs(path: &Path, content: &str) -> Result<Vec<i32>, CgroupError> {
    content
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.trim().parse::<i32>().map_err(|_| CgroupError::Parse {
                path: path.to_owned(),
                content: line.to_owned(),
                reason: "expected a pid",
            })
        })
        .collect()
}

/// Lists the pids in `dir/cgroup.procs` of `dir` and of every cgroup below it.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let path = d.join("cgroup.procs");
        let content = match fs::read_to_string(&path) {
            Ok(s) => s,
            // A child cgroup can vanish while we walk.
            Err(e) if e.kind() == ErrorKind::NotFound && d != dir => continue,
            Err(source) => return Err(CgroupError::Read { path, source }),
        };
        out.extend(parse_procs(&path, &content)?);
        if let Ok(rd) = fs::read_dir(&d) {
            for entry in rd.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Removes `dir` and every cgroup directory below it (deepest first). cgroupfs directories are
/// removed with rmdir even though they "contain" files. A missing directory is fine. EBUSY (tasks
/// still exiting) is retried a bounded number of times.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    if let Ok(rd) = fs::read_dir(dir) {
        for entry in rd.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&entry.path())?;
            }
        }
    }
    const ATTEMPTS: u32 = 50;
    let mut delay = std::time::Duration::from_millis(5);
    for attempt in 1..=ATTEMPTS {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < ATTEMPTS => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(100));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Creates `dir` and its missing parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_parses_and_rejects() {
        let p = Path::new("/x/memory.stat");
        let f = FlatKeyed::parse(p, "cache 10\nrss 20\n\n").unwrap();
        assert_eq!(f.get("cache"), Some(10));
        assert_eq!(f.get_or_zero("nope"), 0);
        let err = FlatKeyed::parse(p, "cache ten\n").unwrap_err();
        assert!(err.to_string().contains("/x/memory.stat"), "{err}");
        assert!(FlatKeyed::parse(p, "a 1 2\n").is_err());
    }

    #[test]
    fn parse_max_and_numbers() {
        let p = Path::new("/x/pids.max");
        assert_eq!(parse_u64(p, "max\n").unwrap(), u64::MAX);
        assert_eq!(parse_u64(p, " 42\n").unwrap(), 42);
        assert!(parse_u64(p, "-1").is_err());
    }

    #[test]
    fn write_never_creates_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), "memory.max", "1").unwrap_err();
        assert!(err.is_not_found());
        assert!(!dir.path().join("memory.max").exists());
        fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        write(dir.path(), "memory.max", "1").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("memory.max")).unwrap(),
            "1"
        );
    }

    #[test]
    fn procs_recursive_walks_children() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.procs"), "3\n1\n").unwrap();
        fs::create_dir(dir.path().join("child")).unwrap();
        fs::write(dir.path().join("child/cgroup.procs"), "2\n3\n").unwrap();
        assert_eq!(procs_recursive(dir.path()).unwrap(), vec![1, 2, 3]);
    }
}
