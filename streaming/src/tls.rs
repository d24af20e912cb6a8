//! HTTPS for the streaming server: a rustls server configuration from PEM files (a certificate
//! chain and its private key), with aws-lc-rs as the crypto provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("streaming TLS certificate {path}: {message}")]
    Certificate {
        /// the file
        path: PathBuf,
        /// why
        message: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("streaming TLS key {path}: {message}")]
    Key {
        /// the file
        path: PathBuf,
        /// why
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("streaming TLS certificate {cert} with key {key}: {source}")]
    Config {
        /// the certificate file
        cert: PathBuf,
        /// the key file
        key: PathBuf,
        /// why
        #[source]
        source: rustls::Error,
    },
}

/// A server configuration serving the chain in `cert` (leaf first) with the key in `key`.
pub fn server_config_from_pem(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |message: String| TlsError::Certificate {
        path: cert.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|source| TlsError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("berth-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = server_config_from_pem(&dir.join("nope.pem"), &empty).unwrap_err();
        assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = server_config_from_pem(&empty, &empty).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
