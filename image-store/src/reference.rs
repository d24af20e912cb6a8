//! Image references: `[registry/]path[:tag][@digest]`, normalised the way docker does.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry a name without a domain belongs to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// Why a reference string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty input.
    #[error("reference is empty")]
    Empty,
    /// A bad registry host part.
    #[error("reference {0:?}: invalid registry host")]
    BadRegistry(String),
    /// A bad repository path.
    #[error(
        "reference {0:?}: invalid repository name (lowercase letters, digits and . _ - separators)"
    )]
    BadRepository(String),
    /// A bad tag.
    #[error("reference {0:?}: invalid tag")]
    BadTag(String),
    /// The repository name is too long.
    #[error("reference {0:?}: repository name longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// A bad digest after `@`.
    #[error("reference {0:?}: {1}")]
    BadDigest(String, DigestError),
}

/// A fully qualified image reference.
///
/// Always has a registry and a repository, and a tag or a digest or both
/// (`busybox` parses as `docker.io/library/busybox:latest`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same name pinned to `digest` (the tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same name without its digest; a reference left with neither gets `latest`.
    pub fn without_digest(&self) -> Reference {
        Reference {
            tag: Some(self.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_owned())),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| ReferenceError::BadDigest(s.to_owned(), e))?,
                ),
            ),
            None => (s, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::BadTag(s.to_owned()));
            }
        }
        let (registry, repository) = split_registry(name);
        if !valid_registry(registry) {
            return Err(ReferenceError::BadRegistry(s.to_owned()));
        }
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        if !valid_repository(&repository) {
            return Err(ReferenceError::BadRepository(s.to_owned()));
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong(s.to_owned()));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }
}

/// Splits `host/path` when the first component looks like a host (has `.` or `:`, or is
/// `localhost`); otherwise the whole name is a Docker Hub path.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

fn valid_registry(host: &str) -> bool {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    // IPv6 literal in brackets.
    if let Some(inner) = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
fn valid_repository(path: &str) -> bool {
    path.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(r("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(
            r("busybox:1.36").to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(r("foo/bar").to_string(), "docker.io/foo/bar:latest");
        assert_eq!(
            r("index.docker.io/library/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            r("docker.io/busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        let b = r("busybox");
        assert_eq!(b.registry(), "docker.io");
        assert_eq!(b.repository(), "library/busybox");
        assert_eq!(b.name(), "docker.io/library/busybox");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let a = r("127.0.0.1:5000/app:1");
        assert_eq!(a.registry(), "127.0.0.1:5000");
        assert_eq!(a.repository(), "app");
        assert_eq!(a.tag(), Some("1"));
        let l = r("localhost/app");
        assert_eq!(l.registry(), "localhost");
        assert_eq!(l.to_string(), "localhost/app:latest");
        let p = r("localhost:5000/a/b/c");
        assert_eq!(p.registry(), "localhost:5000");
        assert_eq!(p.repository(), "a/b/c");
        let q = r("quay.io/coreos/etcd:v3.5");
        assert_eq!(q.registry(), "quay.io");
        assert_eq!(r("[::1]:5000/app").registry(), "[::1]:5000");
    }

    #[test]
    fn digests_and_tags() {
        let d = r(&format!("busybox@{D}"));
        assert_eq!(d.tag(), None);
        assert_eq!(d.digest().unwrap().to_string(), D);
        assert_eq!(d.to_string(), format!("docker.io/library/busybox@{D}"));
        let td = r(&format!("127.0.0.1:5000/app:1@{D}"));
        assert_eq!(td.tag(), Some("1"));
        assert!(td.digest().is_some());
        assert_eq!(td.to_string(), format!("127.0.0.1:5000/app:1@{D}"));
        assert_eq!(td.without_digest().to_string(), "127.0.0.1:5000/app:1");
        assert_eq!(
            d.without_digest().to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn round_trips() {
        for s in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/a/b:v1.2-rc_3",
            &format!("localhost/x@{D}"),
        ] {
            assert_eq!(r(s).to_string(), s);
            assert_eq!(r(&r(s).to_string()), r(s));
        }
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!("".parse::<Reference>(), Err(ReferenceError::Empty));
        for bad in [
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/../b",
            "foo_/bar",
            "foo/.bar",
            "busybox@sha256:abc",
            "busybox@md5:00",
            "host:port/app",
            "exa_mple.com/app",
            &format!("busybox:{}", "t".repeat(129)),
            &format!("a/{}", "b".repeat(300)),
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} accepted");
        }
        assert!(r("a__b/c-d--e/f.g_h").repository() == "a__b/c-d--e/f.g_h");
    }
}
