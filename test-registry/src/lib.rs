//! A private `docker-registry` (Debian's package of the CNCF distribution registry) for
//! berth's tests and benchmarks: it listens on a free 127.0.0.1 port, stores in a directory
//! of the caller's (or a temp dir it owns), optionally demands htpasswd basic auth, serves
//! TLS and checks client certificates; it is stopped, by PID, when dropped. [`tls`] makes a
//! test CA and the certificates it signs; [`containerd`] configures a containerd beside berthd.
//!
//! ```no_run
//! let registry = test_registry::RegistryConfig::temp().basic_auth("alice", "s3cret").start()?;
//! println!("push to {}/repo:tag", registry.host);
//! # Ok::<(), test_registry::RegistryError>(())
//! ```

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod containerd;
pub mod tls;

/// Where Debian's `docker-registry` package installs the binary.
pub const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";

/// How long the registry may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("docker-registry: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("docker-registry: no free port on 127.0.0.1: {0}")]
    Port(#[source] io::Error),
    #[error("docker-registry: hash the htpasswd password: {0}")]
    Htpasswd(#[from] bcrypt::BcryptError),
    #[error("docker-registry did not answer on {host} within {START_TIMEOUT:?} (its log: {log})")]
    NotUp { host: String, log: PathBuf },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RegistryError {
    let path = path.to_owned();
    move |source| RegistryError::Io { op, path, source }
}

/// TLS files of the registry (PEM).
#[derive(Debug, Clone)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// Clients must present a certificate signed by this CA (`http.tls.clientcas`).
    client_ca: Option<PathBuf>,
}

/// How to run the registry; [`RegistryConfig::start`] runs it.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    binary: PathBuf,
    /// None: a temp dir the registry owns.
    dir: Option<PathBuf>,
    auth: Option<(String, String)>,
    tls: Option<Tls>,
    delete: bool,
}

impl RegistryConfig {
    /// A registry storing in a temp dir of its own (removed when it is dropped).
    pub fn temp() -> Self {
        RegistryConfig {
            binary: PathBuf::from(DEFAULT_BINARY),
            dir: None,
            auth: None,
            tls: None,
            delete: false,
        }
    }

    /// A registry keeping its config, data and log in `dir` (left for the caller).
    pub fn in_dir(dir: &Path) -> Self {
        RegistryConfig {
            dir: Some(dir.to_owned()),
            ..Self::temp()
        }
    }

    /// The `docker-registry` binary to run.
    pub fn binary(mut self, binary: &Path) -> Self {
        self.binary = binary.to_owned();
        self
    }

    /// Demand HTTP basic auth (an htpasswd file with this one user).
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Serve HTTPS with this certificate and key.
    pub fn tls(mut self, cert: &Path, key: &Path) -> Self {
        self.tls = Some(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: None,
        });
        self
    }

    /// With [`RegistryConfig::tls`]: demand a client certificate signed by `ca` (mutual TLS).
    pub fn client_ca(mut self, ca: &Path) -> Self {
        if let Some(tls) = &mut self.tls {
            tls.client_ca = Some(ca.to_owned());
        }
        self
    }

    /// Allow DELETE of manifests and blobs (`storage.delete.enabled`).
    pub fn delete_enabled(mut self) -> Self {
        self.delete = true;
        self
    }

    /// The registry's config file for `host` and `dir`.
    fn yaml(&self, host: &str, dir: &Path) -> Result<String, RegistryError> {
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.join("data").display()
        );
        if self.delete {
            yaml.push_str("  delete:\n    enabled: true\n");
        }
        yaml.push_str(&format!("http:\n  addr: {host}\n"));
        if let Some(tls) = &self.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            ));
            if let Some(ca) = &tls.client_ca {
                yaml.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        if let Some((user, password)) = &self.auth {
            let htpasswd = dir.join("htpasswd");
            let hash = bcrypt::hash(password, 5)?;
            fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(io_err("write", &htpasswd))?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        Ok(yaml)
    }

    /// Starts the registry and waits until it answers.
    pub fn start(self) -> Result<Registry, RegistryError> {
        let temp = match &self.dir {
            Some(_) => None,
            None => Some(
                tempfile::tempdir()
                    .map_err(io_err("create a temp dir in", &std::env::temp_dir()))?,
            ),
        };
        let dir = match (&self.dir, &temp) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.path().to_owned(),
            (None, None) => unreachable!("a temp dir was made"),
        };
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let host = format!("127.0.0.1:{}", free_port().map_err(RegistryError::Port)?);
        let config = dir.join("registry.yml");
        fs::write(&config, self.yaml(&host, &dir)?).map_err(io_err("write", &config))?;
        let log = dir.join("registry.log");
        let log_file = fs::File::create(&log).map_err(io_err("create", &log))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io_err("run", &self.binary))?;
        let registry = Registry {
            child,
            host,
            _temp: temp,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers(&registry.host) {
            if Instant::now() >= deadline {
                return Err(RegistryError::NotUp {
                    host: registry.host.clone(),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

/// Whether an HTTP server answers on `host` (a TLS listener of Go's answers a plain request
/// with a 400, which counts: it is up).
fn answers(host: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 12];
    s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && buf.starts_with(b"HTTP/1.")
}

/// A running registry; killed (by its PID) and reaped on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
    _temp: Option<tempfile::TempDir>,
}

impl Registry {
    /// The registry process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 free at the time of the call.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_has_what_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let plain = RegistryConfig::temp()
            .yaml("127.0.0.1:5000", dir.path())
            .unwrap();
        assert!(plain.contains("addr: 127.0.0.1:5000"), "{plain}");
        assert!(!plain.contains("tls") && !plain.contains("auth") && !plain.contains("delete"));
        let full = RegistryConfig::temp()
            .basic_auth("alice", "s3cret")
            .tls(Path::new("/c.pem"), Path::new("/k.pem"))
            .client_ca(Path::new("/ca.pem"))
            .delete_enabled()
            .yaml("127.0.0.1:5000", dir.path())
            .unwrap();
        for want in [
            "certificate: /c.pem",
            "key: /k.pem",
            "- /ca.pem",
            "enabled: true",
            "htpasswd:",
        ] {
            assert!(full.contains(want), "{want} in {full}");
        }
        let htpasswd = fs::read_to_string(dir.path().join("htpasswd")).unwrap();
        let (user, hash) = htpasswd.trim().split_once(':').unwrap();
        assert_eq!(user, "alice");
        assert!(bcrypt::verify("s3cret", hash).unwrap());
    }

    /// Runs the real registry when it is installed: it comes up, answers /v2/, and is gone
    /// after drop.
    #[test]
    fn starts_answers_and_stops() {
        if !Path::new(DEFAULT_BINARY).exists() {
            eprintln!(
                "skipped: {DEFAULT_BINARY} is not installed (apt-get install docker-registry)"
            );
            return;
        }
        let registry = RegistryConfig::temp().start().unwrap();
        assert!(answers(&registry.host));
        let pid = registry.pid();
        drop(registry);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_missing_binary_is_named() {
        let err = RegistryConfig::temp()
            .binary(Path::new("/nonexistent/docker-registry"))
            .start()
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/docker-registry"),
            "{err}"
        );
    }
}
