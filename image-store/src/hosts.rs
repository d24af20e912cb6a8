//! Registry hosts in containerd's `hosts.toml` format: a `certs.d` directory holding one folder
//! per registry (`<config_path>/<host[:port]>/hosts.toml`, or `<host>_<port>_`, else
//! `_default`), each naming the `server` and the mirrors (`[host."https://…"]`) tried before it,
//! with their capabilities, TLS settings (`ca`, `client`, `skip_verify`), `header` and
//! `override_path`. Without a `hosts.toml`, the folder's `*.crt` (CAs) and `*.cert` + `*.key`
//! (client pairs) apply to the server, as containerd and docker read them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use toml::{Table, Value};
use tracing::debug;

/// Errors of reading a registry's hosts configuration.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A file or directory could not be read.
    #[error("registry hosts {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `hosts.toml` is not valid TOML.
    #[error("registry hosts {path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// A key has the wrong type or value.
    #[error("registry hosts {path}: {key}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key (`host."https://m".ca`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `*.cert` client certificate without its `*.key`.
    #[error("registry hosts {cert}: client certificate without key {key}")]
    MissingKey {
        /// The certificate.
        cert: PathBuf,
        /// The key file expected beside it.
        key: PathBuf,
    },
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// What a host may be used for (containerd's capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetching blobs and manifests by digest.
    pub pull: bool,
    /// Resolving a tag to a digest.
    pub resolve: bool,
    /// Pushing (unused by berth, kept for fidelity).
    pub push: bool,
}

impl Capabilities {
    /// Pull, resolve and push: the default of every host.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint to try for a registry: a mirror or the server itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// Plain HTTP or HTTPS.
    pub scheme: Scheme,
    /// `host[:port]` to connect to.
    pub host: String,
    /// The URL path (`""` for the default `/v2` API root).
    pub path: String,
    /// What this host may serve.
    pub capabilities: Capabilities,
    /// Accept any certificate.
    pub skip_verify: bool,
    /// Extra CA certificates (PEM files).
    pub ca: Vec<PathBuf>,
    /// Client certificates with their keys (a `None` key means the PEM holds both).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Extra request headers.
    pub header: Vec<(String, String)>,
    /// The path is the API root itself (no `/v2` appended).
    pub override_path: bool,
    /// A mirror (`[host."…"]`), not the registry's server.
    pub mirror: bool,
}

impl RegistryHost {
    /// The server of `registry` with default settings (`https://<registry>`, or `http://` when
    /// `plain_http`).
    pub fn default_server(registry: &str, plain_http: bool) -> Self {
        let host = if registry == "docker.io" {
            "registry-1.docker.io".to_owned()
        } else {
            registry.to_owned()
        };
        RegistryHost {
            scheme: if plain_http {
                Scheme::Http
            } else {
                Scheme::Https
            },
            host,
            path: String::new(),
            capabilities: Capabilities::ALL,
            skip_verify: false,
            ca: Vec::new(),
            client: Vec::new(),
            header: Vec::new(),
            override_path: false,
            mirror: false,
        }
    }

    /// The base URL (`https://host:port/path`).
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.host, self.path)
    }
}

/// The servers to try for `registry` when nothing configures it: its default server, except
/// for a registry on this machine (`localhost`, a loopback address) on a port other than 443
/// (or 80): HTTPS without certificate checks first, then plain HTTP, as containerd and docker
/// do for loopback registries (a local registry seldom has a certificate).
fn default_servers(registry: &str, plain_http: bool) -> Vec<RegistryHost> {
    let server = RegistryHost::default_server(registry, plain_http);
    if plain_http || !is_loopback(registry) {
        return vec![server];
    }
    match registry_port(registry) {
        None | Some("443") => vec![server],
        Some("80") => vec![RegistryHost::default_server(registry, true)],
        Some(_) => vec![
            RegistryHost {
                skip_verify: true,
                ..server
            },
            RegistryHost::default_server(registry, true),
        ],
    }
}

/// The port of `host[:port]` (`[v6]:port` too).
fn registry_port(registry: &str) -> Option<&str> {
    match registry.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, port)| port),
        None => registry.rsplit_once(':').map(|(_, port)| port),
    }
}

/// Whether `host[:port]` names this machine: `localhost` or a loopback address.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The folder names containerd looks up for `registry`, in order.
fn host_dirs(root: &Path, registry: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some((h, port)) = registry.rsplit_once(':') {
        out.push(root.join(format!("{h}_{port}_")));
    }
    out.push(root.join(registry));
    out.push(root.join("_default"));
    out
}

/// The hosts to try for `registry`, mirrors first and the server last. `config_path` is the
/// `certs.d` directory (none → the default server only); `plain_http` makes the default
/// server HTTP (berth's `insecure_hosts`).
pub fn resolve_hosts(
    config_path: Option<&Path>,
    registry: &str,
    plain_http: bool,
) -> Result<Vec<RegistryHost>, HostsError> {
    let Some(root) = config_path else {
        return Ok(default_servers(registry, plain_http));
    };
    for dir in host_dirs(root, registry) {
        if !dir.is_dir() {
            continue;
        }
        let file = dir.join("hosts.toml");
        let hosts = match fs::read_to_string(&file) {
            Ok(text) if !text.trim().is_empty() => {
                parse_hosts_toml(registry, plain_http, &text, &dir, &file)?
            }
            Ok(_) => cert_files(registry, plain_http, &dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                cert_files(registry, plain_http, &dir)?
            }
            Err(source) => return Err(HostsError::Io { path: file, source }),
        };
        debug!(registry, dir = %dir.display(), hosts = hosts.len(), "registry hosts configured");
        return Ok(hosts);
    }
    Ok(default_servers(registry, plain_http))
}

/// The server with the `*.crt` and `*.cert`/`*.key` files of `dir`.
fn cert_files(
    registry: &str,
    plain_http: bool,
    dir: &Path,
) -> Result<Vec<RegistryHost>, HostsError> {
    let mut server = RegistryHost::default_server(registry, plain_http);
    let rd = fs::read_dir(dir).map_err(|source| HostsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => server.ca.push(p),
            Some("cert") => {
                let key = p.with_extension("key");
                if !key.exists() {
                    return Err(HostsError::MissingKey { cert: p, key });
                }
                server.client.push((p, Some(key)));
            }
            _ => {}
        }
    }
    Ok(vec![server])
}

/// Parses one `hosts.toml` of folder `dir` for `registry`. Relative paths are relative to `dir`.
pub fn parse_hosts_toml(
    registry: &str,
    plain_http: bool,
    text: &str,
    dir: &Path,
    file: &Path,
) -> Result<Vec<RegistryHost>, HostsError> {
    let table: Table = text.parse().map_err(|e| HostsError::Toml {
        path: file.to_owned(),
        source: Box::new(e),
    })?;
    let p = Parser { dir, file };
    let mut out = Vec::new();
    if let Some(hosts) = table.get("host") {
        let hosts = p.table("host", hosts)?;
        // In file order (toml's preserve_order): mirrors are tried as written.
        for (url, v) in hosts {
            let key = format!("host.\"{url}\"");
            let mut h = p.url(&key, url)?;
            h.mirror = true;
            p.apply(&key, &mut h, p.table(&key, v)?)?;
            out.push(h);
        }
    }
    let mut server = match table.get("server") {
        Some(v) => p.url("server", p.string("server", v)?)?,
        None => RegistryHost::default_server(registry, plain_http),
    };
    p.apply("", &mut server, &table)?;
    out.push(server);
    Ok(out)
}

struct Parser<'a> {
    dir: &'a Path,
    file: &'a Path,
}

impl Parser<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> HostsError {
        HostsError::Invalid {
            path: self.file.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn table<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Table, HostsError> {
        v.as_table().ok_or_else(|| self.invalid(key, "not a table"))
    }

    fn string<'v>(&self, key: &str, v: &'v Value) -> Result<&'v str, HostsError> {
        v.as_str().ok_or_else(|| self.invalid(key, "not a string"))
    }

    fn strings<'v>(&self, key: &str, v: &'v Value) -> Result<Vec<&'v str>, HostsError> {
        match v {
            Value::String(s) => Ok(vec![s.as_str()]),
            Value::Array(a) => a.iter().map(|x| self.string(key, x)).collect(),
            _ => Err(self.invalid(key, "not a string or a list of strings")),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir.join(p)
        }
    }

    fn url(&self, key: &str, url: &str) -> Result<RegistryHost, HostsError> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("http", r)) => (Scheme::Http, r),
            Some(("https", r)) => (Scheme::Https, r),
            Some((s, _)) => return Err(self.invalid(key, format!("unsupported scheme {s:?}"))),
            None => return Err(self.invalid(key, format!("{url:?} is not an http(s) URL"))),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(self.invalid(key, format!("{url:?} has no host")));
        }
        let mut h = RegistryHost::default_server(host, scheme == Scheme::Http);
        h.host = host.to_owned();
        h.path = path.to_owned();
        Ok(h)
    }

    /// Applies the settings of `t` (a `[host."…"]` table, or the file's top level for the
    /// server) to `h`.
    fn apply(&self, prefix: &str, h: &mut RegistryHost, t: &Table) -> Result<(), HostsError> {
        let k = |name: &str| {
            if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            }
        };
        if let Some(v) = t.get("capabilities") {
            let mut caps = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for c in self.strings(&k("capabilities"), v)? {
                match c {
                    "pull" => caps.pull = true,
                    "resolve" => caps.resolve = true,
                    "push" => caps.push = true,
                    other => {
                        return Err(self.invalid(
                            &k("capabilities"),
                            format!("unknown capability {other:?} (pull, resolve, push)"),
                        ))
                    }
                }
            }
            h.capabilities = caps;
        }
        if let Some(v) = t.get("skip_verify") {
            h.skip_verify = v
                .as_bool()
                .ok_or_else(|| self.invalid(&k("skip_verify"), "not a boolean"))?;
        }
        if let Some(v) = t.get("override_path") {
            h.override_path = v
                .as_bool()
                .ok_or_else(|| self.invalid(&k("override_path"), "not a boolean"))?;
        }
        if let Some(v) = t.get("ca") {
            h.ca = self
                .strings(&k("ca"), v)?
                .into_iter()
                .map(|p| self.path(p))
                .collect();
        }
        if let Some(v) = t.get("client") {
            h.client = self.client(&k("client"), v)?;
        }
        if let Some(v) = t.get("header") {
            let key = k("header");
            for (name, value) in self.table(&key, v)? {
                for one in self.strings(&format!("{key}.{name}"), value)? {
                    h.header.push((name.clone(), one.to_owned()));
                }
            }
        }
        Ok(())
    }

    /// `client = "both.pem"`, `client = ["a.pem", "b.pem"]`, or
    /// `client = [["cert.pem", "key.pem"], …]`.
    fn client(&self, key: &str, v: &Value) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsError> {
        let one = |v: &Value| -> Result<(PathBuf, Option<PathBuf>), HostsError> {
            match v {
                Value::String(s) => Ok((self.path(s), None)),
                Value::Array(pair) if pair.len() == 2 => Ok((
                    self.path(self.string(key, &pair[0])?),
                    Some(self.path(self.string(key, &pair[1])?)),
                )),
                _ => Err(self.invalid(key, "expected a path or a [cert, key] pair")),
            }
        };
        match v {
            Value::String(_) => Ok(vec![one(v)?]),
            Value::Array(items) => items.iter().map(one).collect(),
            _ => Err(self.invalid(key, "expected a path or a list")),
        }
    }
}

#[cfg(test)]
mod tests;
