//! Registry access on `oci-client`: manifests by reference, blobs as byte streams.

use std::time::Duration;

use futures_util::stream::BoxStream;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::digest::Digest;
use crate::reference::Reference;

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
}

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry or the transport failed.
    #[error("{what}: {source}")]
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
}

impl RegistryError {
    /// Whether retrying may help (transport errors and 5xx answers).
    pub fn is_transient(&self) -> bool {
        match self {
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

const MAX_MANIFEST: usize = 4 << 20;

/// A byte stream of one blob.
pub type BlobStream = BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// A registry client for one pull (one auth).
pub struct RegistryClient {
    client: oci_client::Client,
    auth: RegistryAuth,
}

fn oci_ref(r: &Reference, digest: Option<&Digest>) -> oci_client::Reference {
    match (digest.or(r.digest()), r.tag()) {
        (Some(d), _) => oci_client::Reference::with_digest(
            r.registry().to_owned(),
            r.repository().to_owned(),
            d.to_string(),
        ),
        (None, tag) => oci_client::Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            tag.unwrap_or("latest").to_owned(),
        ),
    }
}

impl RegistryClient {
    /// A client with `config` and `credentials`.
    pub fn new(config: &RegistryConfig, credentials: &Credentials) -> Self {
        let mut cc = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure_hosts.clone()),
            platform_resolver: None,
            connect_timeout: Some(config.connect_timeout.unwrap_or(Duration::from_secs(30))),
            read_timeout: Some(config.read_timeout.unwrap_or(Duration::from_secs(60))),
            ..ClientConfig::default()
        };
        cc.user_agent = "berth/0.1";
        RegistryClient {
            client: oci_client::Client::new(cc),
            auth: credentials.to_auth(),
        }
    }

    /// Fetches the manifest or index `reference` points at (by `digest` when given), checks its
    /// digest, and returns its bytes and digest.
    pub async fn manifest(
        &self,
        reference: &Reference,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let r = oci_ref(reference, digest);
        let (bytes, _announced) = self
            .client
            .pull_manifest_raw(&r, &self.auth, crate::manifest::ACCEPTED)
            .await
            .map_err(|e| RegistryError::Client {
                what: format!("manifest {r}"),
                source: Box::new(e),
            })?;
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                size: bytes.len(),
                max: MAX_MANIFEST,
            });
        }
        let actual = Digest::sha256_of(&bytes);
        if let Some(expected) = digest.or(reference.digest()) {
            let check = if expected.algorithm() == actual.algorithm() {
                actual.clone()
            } else {
                let mut d = crate::digest::Digester::new(expected.algorithm());
                d.update(&bytes);
                d.finish()
            };
            if &check != expected {
                return Err(RegistryError::ManifestDigest {
                    expected: expected.clone(),
                    actual: check,
                });
            }
            return Ok((bytes.to_vec(), expected.clone()));
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Streams blob `digest` of `reference`'s repository from byte `offset`. Returns the stream,
    /// the offset it really starts at (0 when the registry ignored the range) and the length the
    /// registry announced.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(BlobStream, u64, Option<u64>), RegistryError> {
        let r = oci_ref(reference, Some(digest));
        let d = digest.to_string();
        let err = |e| RegistryError::Client {
            what: format!("blob {digest}"),
            source: Box::new(e),
        };
        // Blob requests reuse the token obtained for the manifest; make sure one is stored.
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth)
            .await;
        if offset == 0 {
            let s = self
                .client
                .pull_blob_stream(&r, d.as_str())
                .await
                .map_err(err)?;
            return Ok((s.stream, 0, s.content_length));
        }
        match self
            .client
            .pull_blob_stream_partial(&r, d.as_str(), offset, None)
            .await
            .map_err(err)?
        {
            BlobResponse::Full(s) => Ok((s.stream, 0, s.content_length)),
            BlobResponse::Partial(s) => Ok((s.stream, offset, s.content_length)),
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
