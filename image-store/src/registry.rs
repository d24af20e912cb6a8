//! Registry access on `oci-client`: manifests by reference, blobs as byte streams.

use std::path::PathBuf;
use std::time::Duration;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::digest::Digest;
use crate::hosts::HostsError;

mod client;
mod direct;
mod trust_store;

pub(crate) use client::ClientCache;
pub use client::{BlobStream, RegistryClient};

/// Credentials for one pull.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (a bearer token challenge is still answered anonymously).
    #[default]
    Anonymous,
    /// Username and password: sent as Basic, or exchanged for a bearer token when the registry
    /// challenges with Bearer.
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// A registry token used as bearer directly.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Hosts (`host:port`) spoken to over plain HTTP; every other host uses HTTPS.
    pub insecure_hosts: Vec<String>,
    /// Connect timeout (default 30 s).
    pub connect_timeout: Option<Duration>,
    /// Longest wait for any read (default 60 s).
    pub read_timeout: Option<Duration>,
    /// The `certs.d` directory of per-registry `hosts.toml` files (containerd's format:
    /// mirrors, CAs, client certificates, `skip_verify`, headers, `override_path`, plain HTTP);
    /// none → every registry is its own server.
    pub config_path: Option<PathBuf>,
    /// docker's `config.json`, read for credentials when a pull carries none; none →
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Directories searched for docker credential helpers (`docker-credential-<name>`) that
    /// config.json names; none → `$PATH`.
    pub credential_helper_dirs: Option<Vec<PathBuf>>,
}

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry or the transport failed. The message carries the causes (a TLS
    /// certificate error, "connection refused") that the HTTP client's own message hides.
    #[error("{what}: {}", causes(&**source))]
    Client {
        /// What was fetched.
        what: String,
        /// oci-client's error.
        source: Box<OciDistributionError>,
    },
    /// A manifest whose bytes do not hash to the digest asked for or announced.
    #[error("manifest {expected}: digest mismatch (got {actual})")]
    ManifestDigest {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A manifest larger than the store accepts.
    #[error("manifest of {reference}: {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The reference.
        reference: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The registry's hosts configuration is unusable.
    #[error(transparent)]
    Hosts(#[from] HostsError),
    /// TLS with the host failed: its certificate is not trusted, or it refused ours. Not
    /// retried: the same certificates fail the same way.
    #[error("{what}: TLS with {host} failed: {cause}")]
    Tls {
        /// What was fetched.
        what: String,
        /// The host's URL.
        host: String,
        /// The TLS library's reason ("invalid peer certificate: UnknownIssuer").
        cause: String,
    },
    /// The transport of berth's own HTTP client failed (hosts with `client`, `header` or
    /// `override_path` settings).
    #[error("{what}: {}", causes(.source))]
    Http {
        /// What was fetched.
        what: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// The host answered with an error status (berth's own HTTP client).
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        /// What was fetched.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The first distribution-API error code (`MANIFEST_UNKNOWN`), if one was sent.
        code: Option<String>,
        /// The registry's message.
        message: String,
    },
    /// A host's settings cannot be used (an unreadable client certificate, a bad header).
    #[error("registry {host}: {reason}")]
    Setup {
        /// The host's URL.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// No configured host may serve the request (capabilities exclude them all).
    #[error("registry {registry}: no host in hosts.toml has the {capability:?} capability")]
    NoHost {
        /// The registry.
        registry: String,
        /// `resolve` or `pull`.
        capability: &'static str,
    },
}

/// An error's message followed by every cause it does not already quote.
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    // Bounded: error chains are short; stop at 16 links regardless.
    for _ in 0..16 {
        let Some(c) = cause else { break };
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

/// The TLS failure somewhere in `e`'s causes, if there is one: rustls' error, which the HTTP
/// stack wraps in (nested) `io::Error`s whose `source()` skips the wrapped error itself.
pub(crate) fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    tls_cause_bounded(e, 0)
}

fn tls_cause_bounded(e: &(dyn std::error::Error + 'static), depth: usize) -> Option<String> {
    // Bounded: error chains are short; stop at 16 links regardless.
    if depth > 16 {
        return None;
    }
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t.to_string());
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(t) = tls_cause_bounded(inner, depth + 1) {
            return Some(t);
        }
    }
    tls_cause_bounded(e.source()?, depth + 1)
}

impl RegistryError {
    /// An oci-client error for `what` from host `host`: a [`RegistryError::Tls`] when TLS
    /// failed, else [`RegistryError::Client`].
    pub(crate) fn from_oci(what: String, host: &str, source: OciDistributionError) -> Self {
        if let Some(cause) = tls_cause(&source) {
            return RegistryError::Tls {
                what,
                host: host.to_owned(),
                cause,
            };
        }
        RegistryError::Client {
            what,
            source: Box::new(source),
        }
    }

    /// Whether the host could not be reached at all (then it is not asked again this pull).
    pub fn is_connect(&self) -> bool {
        match self {
            RegistryError::Client { source, .. } => {
                matches!(source.as_ref(), OciDistributionError::RequestError(e) if e.is_connect())
            }
            RegistryError::Http { source, .. } => source.is_connect(),
            _ => false,
        }
    }

    /// Whether retrying may help (transport errors and 5xx answers; never TLS failures).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Http { source: e, .. } => {
                e.is_timeout() || e.is_connect() || e.is_body() || e.is_request()
            }
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            RegistryError::Client { source, .. } => match source.as_ref() {
                OciDistributionError::RequestError(e) => {
                    e.is_timeout()
                        || e.is_connect()
                        || e.is_body()
                        || e.status().is_some_and(|s| s.is_server_error())
                }
                OciDistributionError::ServerError { code, .. } => *code >= 500,
                OciDistributionError::IoError(_) => true,
                _ => false,
            },
            _ => false,
        }
    }
}

/// What kind of failure a [`RegistryError`] is, for callers that report it by category
/// (berthd maps it to gRPC codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryFailure {
    /// The repository, tag, manifest or blob does not exist.
    NotFound,
    /// The registry wants credentials (or other ones).
    Unauthorized,
    /// The credentials may not read this repository.
    Denied,
    /// Network failure, timeout, rate limit or a 5xx answer.
    Unavailable,
    /// Anything else: malformed answers, digest mismatches, oversized manifests.
    Other,
}

fn failure_of_status(code: u16) -> RegistryFailure {
    match code {
        404 => RegistryFailure::NotFound,
        401 => RegistryFailure::Unauthorized,
        403 => RegistryFailure::Denied,
        429 | 500..=599 => RegistryFailure::Unavailable,
        _ => RegistryFailure::Other,
    }
}

impl RegistryError {
    /// The category of this failure.
    pub fn failure(&self) -> RegistryFailure {
        use oci_client::errors::OciErrorCode as C;
        if let RegistryError::Status { status, code, .. } = self {
            return match code.as_deref() {
                Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "NOT_FOUND" | "BLOB_UNKNOWN") => {
                    RegistryFailure::NotFound
                }
                Some("UNAUTHORIZED") => RegistryFailure::Unauthorized,
                Some("DENIED") => RegistryFailure::Denied,
                Some("TOOMANYREQUESTS") => RegistryFailure::Unavailable,
                _ => failure_of_status(*status),
            };
        }
        if let RegistryError::Http { .. } = self {
            return if self.is_transient() {
                RegistryFailure::Unavailable
            } else {
                RegistryFailure::Other
            };
        }
        let RegistryError::Client { source, .. } = self else {
            return RegistryFailure::Other;
        };
        match source.as_ref() {
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryFailure::NotFound,
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryFailure::Unauthorized,
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .find_map(|e| match e.code {
                    C::ManifestUnknown | C::NameUnknown | C::NotFound | C::BlobUnknown => {
                        Some(RegistryFailure::NotFound)
                    }
                    C::Unauthorized => Some(RegistryFailure::Unauthorized),
                    C::Denied => Some(RegistryFailure::Denied),
                    C::Toomanyrequests => Some(RegistryFailure::Unavailable),
                    _ => None,
                })
                .unwrap_or(RegistryFailure::Other),
            OciDistributionError::ServerError { code, .. } => failure_of_status(*code),
            OciDistributionError::RequestError(e) if e.status().is_some() => {
                failure_of_status(e.status().map_or(0, |s| s.as_u16()))
            }
            _ if self.is_transient() => RegistryFailure::Unavailable,
            _ => RegistryFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_err(e: OciDistributionError) -> RegistryError {
        RegistryError::Client {
            what: "manifest x".into(),
            source: Box::new(e),
        }
    }

    fn envelope(code: &str) -> RegistryError {
        let envelope = serde_json::from_str(&format!(
            r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#
        ))
        .unwrap();
        client_err(OciDistributionError::RegistryError {
            envelope,
            url: "http://r/v2/x".into(),
        })
    }

    #[test]
    fn failures_are_categorised() {
        assert_eq!(
            envelope("MANIFEST_UNKNOWN").failure(),
            RegistryFailure::NotFound
        );
        assert_eq!(
            envelope("NAME_UNKNOWN").failure(),
            RegistryFailure::NotFound
        );
        assert_eq!(envelope("DENIED").failure(), RegistryFailure::Denied);
        assert_eq!(
            envelope("UNAUTHORIZED").failure(),
            RegistryFailure::Unauthorized
        );
        assert_eq!(
            envelope("TOOMANYREQUESTS").failure(),
            RegistryFailure::Unavailable
        );
        assert_eq!(envelope("SOMETHING").failure(), RegistryFailure::Other);
        let server = |code| {
            client_err(OciDistributionError::ServerError {
                code,
                url: "u".into(),
                message: String::new(),
            })
        };
        assert_eq!(server(404).failure(), RegistryFailure::NotFound);
        assert_eq!(server(403).failure(), RegistryFailure::Denied);
        assert_eq!(server(503).failure(), RegistryFailure::Unavailable);
        assert_eq!(server(418).failure(), RegistryFailure::Other);
        assert_eq!(
            client_err(OciDistributionError::UnauthorizedError { url: "u".into() }).failure(),
            RegistryFailure::Unauthorized
        );
    }
}
