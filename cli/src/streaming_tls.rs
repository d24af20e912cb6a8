//! TLS to berthd's streaming server (when its `[streaming]` has `tls_cert_file`): the
//! system's CA roots, plus the operator's CA (`--streaming-ca FILE`, `BERTH_STREAMING_CA`) —
//! berthd's streaming certificate is usually the operator's own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The extra CA file, set once from the command line.
static EXTRA_CA: OnceLock<PathBuf> = OnceLock::new();

pub fn set_extra_ca(path: PathBuf) {
    let _ = EXTRA_CA.set(path);
}

/// The certificates of a PEM file.
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("streaming CA {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("streaming CA {}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("streaming CA {}: no certificate in it", path.display());
    }
    Ok(certs)
}

/// The client config for `wss://` streaming URLs.
pub fn client_config() -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    // Unreadable system roots are not fatal: the operator's CA may be all that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = EXTRA_CA.get() {
        for cert in pem_certs(path)? {
            roots
                .add(cert)
                .with_context(|| format!("streaming CA {}", path.display()))?;
        }
    }
    if roots.is_empty() {
        bail!(
            "no CA certificates to check berthd's streaming server with: pass its CA with \
             --streaming-ca FILE (or BERTH_STREAMING_CA)"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = pem_certs(&f).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        let e = pem_certs(&dir.path().join("missing.pem")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.pem"), "{e:#}");
    }
}
