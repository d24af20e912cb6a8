//! A test certificate authority and certificates signed by it, made with `openssl` (installed
//! by scripts/install-deps): ECDSA P-256 keys, valid for two days, written as PEM files into a
//! directory of the caller's. For TLS registries, berthd's streaming server over TLS, and
//! mutual TLS (client certificates).
//!
//! ```no_run
//! let dir = tempfile::tempdir()?;
//! let ca = test_registry::tls::TestCa::new(dir.path())?;
//! let server = ca.server_cert("server", &["IP:127.0.0.1"])?;
//! let client = ca.client_cert("client")?;
//! println!("{} {} {}", ca.cert.display(), server.cert.display(), client.key.display());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cell::Cell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where scripts/install-deps installs openssl (for tests that skip when it is missing).
pub const OPENSSL: &str = "/usr/bin/openssl";

/// The key options of every key made here: a fresh unencrypted P-256 key.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A certificate and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed CA (`CN=berth test CA`, `basicConstraints=critical,CA:TRUE`) in `dir`
/// (`ca.pem`, `ca.key`); it signs the certificates [`TestCa::server_cert`] and
/// [`TestCa::client_cert`] make in the same dir.
#[derive(Debug)]
pub struct TestCa {
    pub dir: PathBuf,
    /// The CA certificate: what a client (or a server checking client certificates) trusts.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The serial number of the next certificate signed.
    next_serial: Cell<u32>,
}

impl TestCa {
    /// Makes a fresh CA in `dir` (which must exist).
    pub fn new(dir: &Path) -> io::Result<TestCa> {
        let ca = TestCa {
            dir: dir.to_owned(),
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
            next_serial: Cell::new(2),
        };
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2", "-subj", "/CN=berth test CA"])
                .args(EC_KEY)
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&ca.key)
                .arg("-out")
                .arg(&ca.cert),
        )?;
        Ok(ca)
    }

    /// A server certificate (`extendedKeyUsage=serverAuth`) for `subjectAltName`s `sans`
    /// (openssl's form: `IP:127.0.0.1`, `DNS:localhost`), with `CN` the first of them, written
    /// as `<name>.pem` and `<name>.key`.
    pub fn server_cert(&self, name: &str, sans: &[&str]) -> io::Result<CertKey> {
        let cn = sans
            .first()
            .map(|s| s.split_once(':').map_or(*s, |(_, v)| v))
            .unwrap_or(name);
        self.sign(
            name,
            cn,
            &format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
    }

    /// A client certificate (`CN=berth test client`, `extendedKeyUsage=clientAuth`) for mutual
    /// TLS, written as `<name>.pem` and `<name>.key`.
    pub fn client_cert(&self, name: &str) -> io::Result<CertKey> {
        self.sign(
            name,
            "berth test client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
    }

    /// A key and a CSR for `CN=cn`, signed by the CA with the extensions `ext` (an openssl
    /// extfile) and the next serial number.
    fn sign(&self, name: &str, cn: &str, ext: &str) -> io::Result<CertKey> {
        let p = |suffix: &str| self.dir.join(format!("{name}{suffix}"));
        let out = CertKey {
            cert: p(".pem"),
            key: p(".key"),
        };
        let (csr, ext_file) = (p(".csr"), p("-ext.cnf"));
        openssl(
            Command::new("openssl")
                .args(["req", "-subj", &format!("/CN={cn}")])
                .args(EC_KEY)
                .arg("-keyout")
                .arg(&out.key)
                .arg("-out")
                .arg(&csr),
        )?;
        fs::write(&ext_file, ext)?;
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial"])
                .arg(serial.to_string())
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&ext_file)
                .arg("-out")
                .arg(&out.cert),
        )?;
        Ok(out)
    }
}

/// Runs `cmd`; an error names the command and carries openssl's stderr.
fn openssl(cmd: &mut Command) -> io::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificates verify against the CA, with the purposes and names asked for.
    #[test]
    fn server_and_client_certs_verify_against_the_ca() {
        if !Path::new(OPENSSL).exists() {
            eprintln!("skipped: {OPENSSL} is not installed (scripts/install-deps)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path()).unwrap();
        let server = ca
            .server_cert("server", &["IP:127.0.0.1", "DNS:localhost"])
            .unwrap();
        let client = ca.client_cert("client").unwrap();
        let verify = |purpose: &str, cert: &Path| {
            Command::new("openssl")
                .args(["verify", "-purpose", purpose, "-CAfile"])
                .arg(&ca.cert)
                .arg(cert)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify("sslserver", &server.cert));
        assert!(verify("sslclient", &client.cert));
        assert!(!verify("sslserver", &client.cert));
        let text = |cert: &Path| {
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(cert)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let server_text = text(&server.cert);
        assert!(
            server_text.contains("IP Address:127.0.0.1, DNS:localhost"),
            "{server_text}"
        );
        assert!(
            server_text.contains("Subject: CN = 127.0.0.1"),
            "{server_text}"
        );
        // Serial numbers differ (2, 3): one CA signs many.
        assert!(server_text.contains("Serial Number: 2"), "{server_text}");
        assert!(text(&client.cert).contains("Serial Number: 3"));
        assert!(server.key.exists() && client.key.exists());
    }
}
